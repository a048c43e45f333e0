"""``interp mof``: Mixture-of-Features probes of two encoders' caches of the same images (MMVP)."""

from __future__ import annotations

from dataclasses import dataclass

from analyses.commands.command import Command, StepResult
from analyses.commands.options import _Formats, check_named
from analyses.files import (
    MOF_FILES,
)
from analyses.outputs import (
    check_output_folder,
    check_writable,
    write_figures,
    write_table,
)
from caches import CacheReader
from interp.errors import ConfigError
from interp.options import option


@dataclass
class MofConfig(_Formats):
    """``interp mof``: Mixture-of-Features probes of two encoders' caches of the same
    images (additive for each alpha, and interleaved), into the folder ``out``."""

    caches: list[str] | None = option(
        "two caches of the same images: encoder A's, then encoder B's",
        default=None,
        positional=True,
    )
    site_a: str | None = option("encoder A's site (default: its last)", default=None)
    site_b: str | None = option("encoder B's site (default: its last)", default=None)
    attributes: list[str] | None = option(
        "categorical labels probed (default: every one)", default=None
    )
    selections: list[str] | None = option(
        "samples: each image's tokens pooled within each encoder's own tokens (mean, "
        "on_object, off_object), or token (A's tokens over the first object, each beside "
        "B's nearest token: B's grid resampled onto A's) (default: mean)",
        default=None,
    )
    alphas: list[float] | None = option(
        "weights of encoder A in the additive mixture (default: 0 0.25 0.5 0.75 1)",
        default=None,
        minimum=0,
        maximum=1,
    )
    n_splits: int = option("outer folds (grouped by image)", default=5, minimum=2)
    n_boot: int = option(
        "bootstrap resamples of the images for the intervals", default=1000, minimum=1
    )
    seed: int = option("seed of the folds and the bootstrap", default=0, minimum=0)
    out: str = option("output folder", default="mof")
    overwrite: bool = option("replace existing outputs", default=False)

    def __post_init__(self) -> None:
        given = [self.caches] if isinstance(self.caches, str) else list(self.caches or ())
        if len(given) == 2 and given[0] == given[1]:  # before the names are made distinct
            raise ConfigError(
                f"caches names {given[0]!r} twice; give two caches of the same images: "
                f"encoder A's, then encoder B's"
            )
        super().__post_init__()

    def check(self) -> None:
        super().check()
        check_named(self.out, "out", "an output folder")
        if not self.caches or len(self.caches) != 2:
            raise ConfigError(
                f"caches must name two caches of the same images (encoder A's, then B's), "
                f"got {self.caches}"
            )
        self.selections = self.selections or ["mean"]
        self.alphas = [float(a) for a in (self.alphas or (0.0, 0.25, 0.5, 0.75, 1.0))]
        self.formats = self.formats or ["html"]


def mof_step(config: MofConfig) -> StepResult:
    """Mixture-of-Features probes of the two caches (``mof.csv``) and their figure
    (``mixture_of_features.<format>``), in the folder ``config.out``."""
    from analyses.mixture_figures import mixture_curve
    from probes.mixture import mixture_sweep

    folder = check_output_folder(config.out)
    paths = {key: folder / name for key, name in MOF_FILES.items()}
    paths.update({f"mof.{f}": folder / f"mixture_of_features.{f}" for f in config.formats})
    check_writable(paths.values(), config.overwrite)
    path_a, path_b = config.caches
    with CacheReader(path_a) as cache_a, CacheReader(path_b) as cache_b:
        site_a = config.site_a or cache_a.sites[-1]
        site_b = config.site_b or cache_b.sites[-1]
        table = mixture_sweep(
            cache_a,
            cache_b,
            site_a,
            site_b,
            attributes=config.attributes,
            selections=config.selections,
            alphas=config.alphas,
            n_splits=config.n_splits,
            n_boot=config.n_boot,
            seed=config.seed,
        )
    write_table(table, paths["mof"])
    write_figures(mixture_curve(table), paths, "mof")
    named = table.assign(alpha=[("" if a != a else f"{a:g}") for a in table["alpha"]])
    shown = named.pivot_table(
        index=["selection", "mode", "alpha"], columns="attribute", values="value", sort=False
    )
    return StepResult(
        summary=f"Mixture-of-Features probes of {site_a} and {site_b}:",
        paths=paths,
        tables={"mof": table},
        shown=shown.to_string(float_format=lambda v: f"{v:.2f}"),
    )


COMMAND = Command(
    name="mof",
    help="Mixture-of-Features probes of two encoders' caches of the same images (MMVP)",
    description="Probes each attribute on the additive mixture alpha*A + (1-alpha)*B for each "
    "alpha and on the interleaved one (both side by side); writes OUT/mof.csv and "
    "OUT/mixture_of_features.html.",
    config=MofConfig,
    step=mof_step,
)
