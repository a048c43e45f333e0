# The two set-up commands of the README. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= interp-results
STAMP  := $(VENV)/.installed

.PHONY: demo test docs lint clean

$(STAMP): pyproject.toml constraints.txt
	@# HDF5 command-line tools (h5ls, h5dump): used by a test that reads caches with them.
	@command -v h5ls >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hdf5-tools \
		>/dev/null; } || echo "note: hdf5-tools not installed; the h5ls test will be skipped"
	@# A Chrome for plotly's static export (PDF, SVG, PNG figures) and the browser tests
	@# (Playwright drives it through executable_path).
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "note: chromium not installed; PDF/SVG/PNG figures and their tests need it"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The demo: the study on the built-in organism with the fast settings (--full for the
# exhaustive one), then its figures as PDF and SVG through the staged plot command.
demo: $(STAMP)
	$(BIN)/interp run --out $(OUT) --overwrite
	$(BIN)/interp plot $(OUT)/probes.csv $(OUT)/pixel_reconstruction.csv $(OUT)/answers.csv \
		--out $(OUT)/figures \
		--formats pdf svg --overwrite

# The transformers 4.57 series (other module paths and output types), installed beside
# the venv's own transformers and put first on the path for a second run of the suite.
TF457     := $(VENV)/transformers-4.57
TF457_PKG := 'transformers==4.57.*' 'tokenizers>=0.22,<0.23' 'huggingface_hub>=0.34,<1.0' \
	requests urllib3 idna charset_normalizer certifi

$(TF457)/.installed: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --target $(TF457) $(TF457_PKG)
	touch $@

test: $(STAMP) $(TF457)/.installed docs
	$(BIN)/python -m pytest
	@PYTHONPATH=$(TF457) $(BIN)/python -c \
		"import transformers; print('again with transformers', transformers.__version__)"
	PYTHONPATH=$(TF457) $(BIN)/python -m pytest -q -m "not slow and not once"

# The documentation site, offline, into build/site (open build/site/index.html); --strict:
# a broken link or a reference to a name the code lacks fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(OUT)
