"""``interp view``: the patch explorer of a run as one self-contained HTML page; and
:func:`explore`, the same view as a notebook widget."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyses.commands.command import Command, StepResult
from analyses.commands.inputs import cache_images
from analyses.commands.options import _Conditions, _Model, _Run, _Sites
from analyses.outputs import check_output_folder, check_writable, write_atomic
from interp.errors import ConfigError
from interp.options import option
from interp.organism import ORGANISM_NAME
from interp.sources import ImageSet

__all__ = ["VIEW_FILE", "ViewConfig", "explore", "find_saes", "view_data", "view_step"]

VIEW_FILE = "view.html"
# A page larger than this is slow to open and to share: said, with what makes it smaller.
LARGE_PAGE = 200 * 2**20


@dataclass
class ViewConfig(_Model, _Run, _Sites, _Conditions):
    """``interp view``: the patch explorer of ``run`` (a run folder, a folder holding
    ``cache.h5`` or a cache file; in Python also an :class:`~interp.sources.ImageSet`) as
    ``OUT/view.html``. The model, images, prompt, sites and conditions are the cache's
    unless given; the numbers are computed with the model (attention is in no cache)."""

    run: str | ImageSet = option(
        "a run folder (interp run's), a folder holding cache.h5, or a cache file",
        default="",
        positional=True,
    )
    model: str | None = option(
        "built-in name, local save_pretrained folder, or hub id (default: the cache's model)",
        default=None,
    )
    images: list[int] | None = option(
        "indices of the images to show (default: the first --n-images)", default=None, minimum=0
    )
    n_images: int = option("how many images to show, from the first", default=16, minimum=1)
    saes: list[str] | None = option(
        "SAE folders in SAELens's format (or folders holding them, as interp sae train "
        "writes): each token's top features at each SAE's site",
        default=None,
    )
    probe: str = option(
        "the categorical attribute of the token probes (5 folds by image): 'auto' (the first "
        "with per-object labels) or 'none'",
        default="auto",
    )
    top_words: int = option("the logit lens's top words per token", default=5, minimum=1)
    top_features: int = option("top sparse features per token", default=5, minimum=1)
    batch_size: int = option("images per forward pass", default=8, minimum=1)
    out: str | None = option("output folder (default: the run's folder)", default=None)

    def check(self) -> None:
        super().check()
        if isinstance(self.run, str) and not self.run.strip():
            raise ConfigError("run must name a run folder or a cache file, got an empty string")


def _cache_of(run: str) -> Path:
    """The cache file of a run folder, a folder holding one, or the cache itself."""
    import h5py

    path = Path(run).expanduser()
    if not path.exists():
        raise ConfigError(
            f"run {run!r} does not exist; pass a run folder (interp run writes one), a folder "
            f"holding cache.h5, or a cache file"
        )
    cache = path / "cache.h5" if path.is_dir() else path
    if not cache.is_file():
        raise ConfigError(
            f"{run!r} holds no cache.h5; pass a run folder (interp run --out FOLDER) or a "
            f"cache file (interp extract --out FOLDER writes FOLDER/cache.h5)"
        )
    if not h5py.is_hdf5(cache):
        raise ConfigError(f"{str(cache)!r} is not an HDF5 cache; pass the cache interp wrote")
    return cache


def find_saes(folders: list[str]) -> dict[str, Any]:
    """Site -> SAE, from folders in SAELens's format or folders holding them (the site is
    the SAE's ``hook_name``, as ``interp sae train`` records it); of several SAEs of one
    site, the first in path order (said in a warning)."""
    from interp.models.sae import SAE_CONFIG, load_sae

    found: dict[str, Any] = {}
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise ConfigError(f"saes: {folder!r} is no folder; pass SAE folders (cfg.json)")
        configs = sorted(root.rglob(SAE_CONFIG))
        if not configs:
            raise ConfigError(
                f"saes: {folder!r} holds no SAE ({SAE_CONFIG} with sae_weights.safetensors); "
                f"interp sae train --out FOLDER writes them"
            )
        for config in configs:
            sae = load_sae(config.parent)
            site = sae.metadata.get("hook_name") or json.loads(config.read_text()).get("hook_name")
            if not site:
                raise ConfigError(
                    f"the SAE in {str(config.parent)!r} does not say which site it reads "
                    f'(hook_name in {SAE_CONFIG}); name it there, e.g. "hook_name": '
                    f'"lm.3"'
                )
            if site in found:
                warnings.warn(
                    f"several SAEs of {site}: the view shows the first, "
                    f"{found[site].metadata.get('folder')}",
                    stacklevel=2,
                )
                continue
            sae.metadata["folder"] = str(config.parent)
            found[site] = sae
    return found


def view_data(config: ViewConfig, *, loaded: Any | None = None) -> Any:
    """The explorer's data (:class:`analyses.explorer.ViewData`) of ``config``: the
    cache's model, images, prompt, sites and conditions unless given (``run`` an
    :class:`~interp.sources.ImageSet`: ``model``, default the organism, and its
    defaults); ``loaded``: the model, loaded already (with eager attention, for the
    attention columns)."""
    from analyses.commands.inputs import load_step_model
    from analyses.explorer.build import build_view
    from caches import CacheReader

    saes = find_saes(config.saes) if config.saes else None  # before the model loads
    prompt = None
    sites, conditions = config.sites, config.conditions
    if isinstance(config.run, ImageSet):
        data, model = config.run, config.model or ORGANISM_NAME
    else:
        cache = _cache_of(config.run)
        with CacheReader(cache) as reader:
            attrs = reader.attrs
            n_cached = reader.n_written
            sites = sites or reader.sites
            conditions = conditions or reader.conditions
        data = cache_images(attrs, cache)
        if len(data) != int(attrs["n_images"]):
            raise ConfigError(
                f"the images of {str(cache)!r} are no longer as they were: it holds "
                f"{attrs['n_images']} images, its data now has {len(data)}"
            )
        model, prompt = config.model or str(attrs["model"]), str(attrs["prompt"])
        if config.images is None and n_cached < config.n_images:
            config = dataclasses.replace(config, images=list(range(n_cached)))
    if loaded is None:
        named = dataclasses.replace(config, model=model)
        loaded = load_step_model(named, attn_implementation="eager")
    images = config.images if config.images is not None else range(min(config.n_images, len(data)))
    return build_view(
        loaded,
        data,
        images=list(images),
        sites=sites,
        conditions=conditions,
        prompt=prompt,
        saes=saes,
        probe=None if config.probe == "none" else config.probe,
        n_words=config.top_words,
        n_features=config.top_features,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=config.progress,
    )


def view_step(config: ViewConfig) -> StepResult:
    """The explorer page of ``config`` (``OUT/view.html``, one self-contained file that
    opens offline); its tidy table of numbers is the step's table ``view``."""
    from analyses.explorer.page import view_page

    if config.out is not None:
        folder = Path(config.out)
    elif isinstance(config.run, ImageSet):
        raise ConfigError("out must name a folder when run is an ImageSet")
    else:
        folder = _cache_of(config.run).parent
    check_output_folder(folder)
    path = folder / VIEW_FILE
    check_writable([path], config.overwrite)
    view = view_data(config)
    title = f"vlm-interp explorer: {view.data['model']} ({view.data['family']})"
    page = view_page(view.data, title=title)
    write_atomic(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    n = len(view.data["images"])
    size = path.stat().st_size
    if size > LARGE_PAGE:
        warnings.warn(
            f"the page is {size / 2**20:.0f} MiB ({n} images, {len(view.data['sites'])} "
            f"sites, {len(view.data['conditions'])} conditions): slow to open and to share; "
            f"choose sites (e.g. the projector and a few LM layers), conditions or fewer "
            f"images",
            stacklevel=2,
        )
    return StepResult(
        summary=f"the explorer of {n} images under {len(view.data['conditions'])} conditions "
        f"at {len(view.data['sites'])} sites ({size / 2**20:.1f} MiB, built "
        f"in {view.timings['total']:.1f} s)",
        paths={"view": path},
        tables={"view": view.table()},
        extras={"data": view.data, "timings": view.timings},
    )


def explore(run: str | Path | ImageSet, *, loaded: Any | None = None, **settings: Any) -> Any:
    """The patch explorer as a notebook widget (JupyterLab, Jupyter Notebook, VS Code):
    ``run`` a run folder, a cache or an :class:`~interp.sources.ImageSet`; ``settings``
    those of :class:`ViewConfig` (``images=[0, 3]``, ``conditions=[...]``,
    ``saes=[...]``, ...); ``loaded`` a model loaded already. The widget's ``data`` trait
    holds every number it shows, its ``selection`` the user's last choice."""
    from analyses.explorer.widget import explorer_widget

    config = ViewConfig(run=run if isinstance(run, ImageSet) else str(run), **settings)
    return explorer_widget(view_data(config, loaded=loaded).data)


COMMAND = Command(
    name="view",
    help="the patch explorer of a run: one self-contained HTML page",
    description="Writes OUT/view.html (default OUT: the run's folder): each image's patches, "
    "and for the patch clicked, at every depth, the object under it, the logit lens's top "
    "words and its class word's rank, the attention from the answer position, its top SAE "
    "features and a token probe's prediction, under each condition.",
    config=ViewConfig,
    step=view_step,
)
