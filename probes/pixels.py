"""Pixel-value prediction (PVP): how much of the image can be read back from each site?

One ridge probe per site maps every visual token to the RGB values of the pixels of its
own patch; it is fitted with cross-validation grouped by image, so each image is
reconstructed from its tokens by a probe that never saw it. The fit works on sufficient
statistics gathered a chunk of images at a time (:class:`probes.solver.Moments`), so the
only large array is the site's own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from einops import rearrange, reduce
from PIL import Image
from tqdm.auto import tqdm

from caches import BASELINE, CacheReader, SiteTokens
from interp.errors import ConfigError
from interp.layout import image_hw
from interp.names import as_names
from interp.sites import sort_sites
from probes.crossval import group_folds
from probes.solver import Moments, default_device, solve_ridge
from probes.stats import bootstrap_ci
from probes.sweep import TABLE_COLUMNS

__all__ = [
    "PIXEL_INNER_FOLDS",
    "PixelReconstruction",
    "Tiling",
    "assemble",
    "patch_pixels",
    "pixel_sweep",
    "reconstruct_pixels",
    "site_tilings",
]

_CHUNK = 64  # images per pass over a site
RESAMPLED_PATCH = 8  # the largest patch side (px) predicted for images resampled by area
PIXEL_INNER_FOLDS = 3  # folds that choose each outer fold's ridge penalty


def patch_pixels(images: np.ndarray, grid: np.ndarray, patch_grid: Sequence[int]) -> np.ndarray:
    """``(n, tokens, ph * pw * 3)`` float32: the pixels of each token's patch.

    ``images`` ``(n, H, W, 3)`` uint8; ``grid`` ``(tokens, 2)`` (row, col) of each token
    in a ``patch_grid = (rows, cols)`` grid that tiles the image exactly.
    """
    n, height, width, _ = images.shape
    rows, cols = patch_grid
    if height % rows or width % cols:
        raise ConfigError(
            f"images of {height}x{width} px do not tile a {rows}x{cols} patch grid; use an "
            f"image size that is a multiple of {rows}"
        )
    blocks = rearrange(images, "n (r ph) (c pw) ch -> n r c (ph pw ch)", r=rows, c=cols)
    return blocks[:, grid[:, 0], grid[:, 1]].astype(np.float32)  # (n, tokens, pixels)


def assemble(
    patches: np.ndarray,
    grid: np.ndarray,
    patch_grid: Sequence[int],
    image_size: int | Sequence[int],
) -> np.ndarray:
    """Inverse of :func:`patch_pixels`: ``(n, tokens, pixels)`` -> ``(n, H, W, 3)`` for
    images of ``image_size`` (a side or ``(height, width)``)."""
    rows, cols = patch_grid
    height, width = image_hw(image_size)
    ph, pw = height // rows, width // cols
    out = np.zeros((len(patches), rows, cols, ph * pw * 3), dtype=np.float32)
    out[:, grid[:, 0], grid[:, 1]] = patches  # (n, rows, cols, pixels)
    return rearrange(out, "n r c (ph pw ch) -> n (r ph) (c pw) ch", ph=ph, pw=pw, ch=3)


@dataclass(frozen=True)
class Tiling:
    """Which tokens of an image tile it, and where: ``index`` ``(t,)`` positions among
    the image's tokens, ``cells`` ``(t, 2)`` (row, col) of each in a ``shape = (rows,
    cols)`` grid of equal patches over ``region`` ``(y0, x0, y1, x1)`` of the image's
    pixels (None: the whole image; patches may be fractional pixels, and a region may
    leave part of the image out, as a centre crop does)."""

    index: np.ndarray
    cells: np.ndarray
    shape: tuple[int, int]
    region: tuple[float, float, float, float] | None = None

    @classmethod
    def of(cls, cells: np.ndarray, shape: Sequence[int]) -> Tiling:
        """Every token, in order, at ``cells``."""
        return cls(np.arange(len(cells)), np.asarray(cells), (int(shape[0]), int(shape[1])))

    def area(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The region in an image of ``size`` (height, width)."""
        return self.region or (0.0, 0.0, float(size[0]), float(size[1]))


@dataclass
class PixelReconstruction:
    """Held-out reconstructions of every image from one site, and their errors.

    ``images`` ``(n, H, W, 3)`` float32 in 0..255 (clipped; images of mixed sizes in the
    top-left of the padded array, zeros around); ``abs_error`` and ``sq_error`` ``(n,)``
    per-image sums over its pixels and channels; ``baseline_*`` the same for the
    training mean of each patch pixel (the no-information reconstruction); ``values``
    ``(n,)`` pixel values scored per image (those a tiling's region covers);
    ``alphas`` ``(folds,)`` the penalty chosen by each outer fold; ``patch`` the
    (height, width) in pixels at which patches were predicted.
    Images of mixed sizes sit in the top-left of ``images``, zeros around.
    """

    images: np.ndarray
    abs_error: np.ndarray
    sq_error: np.ndarray
    baseline_abs_error: np.ndarray
    baseline_sq_error: np.ndarray
    values: np.ndarray
    alphas: np.ndarray
    patch: tuple[int, int]

    @property
    def mae(self) -> float:
        """Mean absolute error on the 0-255 scale."""
        return float(self.abs_error.sum() / self.values.sum())

    @property
    def psnr(self) -> float:
        """Peak signal-to-noise ratio in dB over all held-out pixels (peak 255)."""
        return _psnr(self.sq_error.sum() / self.values.sum())


def _image_blocks(n: int):
    for start in range(0, n, _CHUNK):
        yield slice(start, min(n, start + _CHUNK))


class _PatchRows:
    """The probe's rows, a chunk of images at a time: each tiling token's features and
    its patch's pixels, and back from predicted rows to images.

    Where every image size is tiled by whole-pixel patches, patches are block-averaged to
    one size shared by every image size (the greatest common divisor of their patch
    sizes: the patches themselves when all images share a size). Otherwise (a processor
    that resized or cropped the image: fractional patches, or a region short of the
    image) each image's region is resampled by area to ``(rows x q, cols x q)`` pixels,
    ``q`` the smallest patch side (at most :data:`RESAMPLED_PATCH`), and predictions are
    painted back over the region's own pixels; pixels outside every region are not
    scored."""

    def __init__(
        self,
        tokens: SiteTokens,
        images: np.ndarray,
        sizes: np.ndarray,
        tilings: dict[tuple[int, int], Tiling],
    ) -> None:
        self.tokens, self.images, self.tilings = tokens, images, tilings
        self.sizes = [(int(h), int(w)) for h, w in sizes]  # (height, width) per image
        patches, boxes = {}, {}
        for size in dict.fromkeys(self.sizes):
            tiling = tilings[size]
            (rows, cols), (height, width) = tiling.shape, size
            y0, x0, y1, x1 = tiling.area(size)
            boxes[size] = ((y1 - y0) / rows, (x1 - x0) / cols)
            if tiling.region is None and (height % rows or width % cols):
                raise ConfigError(
                    f"images of {height}x{width} px (height x width) do not tile a "
                    f"{rows}x{cols} patch grid; use an image size that is a multiple of it"
                )
            whole = (y0, x0, y1, x1) == (0.0, 0.0, float(height), float(width))
            if whole and not (height % rows or width % cols):
                patches[size] = (height // rows, width // cols)
        self.resampled = len(patches) < len(boxes)
        if self.resampled:
            self.patch = tuple(
                max(1, min(RESAMPLED_PATCH, math.floor(min(b[k] for b in boxes.values()))))
                for k in (0, 1)
            )
        else:
            self.patch = (
                math.gcd(*(ph for ph, _ in patches.values())),
                math.gcd(*(pw for _, pw in patches.values())),
            )
        self.patches = patches

    def groups(self, block: slice):
        """``((height, width), images of the block of that size)``, in order of sizes."""
        local = self.sizes[block]
        for size in sorted(set(local)):
            yield size, block.start + np.flatnonzero([hw == size for hw in local])

    def covered(self, size: tuple[int, int]) -> np.ndarray:
        """``(height, width)`` bool: the pixels whose centre lies in the tiling's region."""
        y0, x0, y1, x1 = self.tilings[size].area(size)
        ys, xs = np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5
        return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]

    def rows(self, block: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``x (m, d)`` float32, ``y (m, ph * pw * 3)`` float32 and the image of each row."""
        xs, ys, owners = [], [], []
        for (height, width), members in self.groups(block):
            tiling = self.tilings[(height, width)]
            index = (self.tokens.offsets[members][:, None] + tiling.index[None, :]).ravel()
            xs.append(self.tokens.values[index])
            images = self.images[members, :height, :width]  # (group, height, width, 3)
            if self.resampled:
                targets = np.stack([self._resample(image, tiling) for image in images])
                pixels = patch_pixels(targets, tiling.cells, tiling.shape)
            else:
                pixels = patch_pixels(images, tiling.cells, tiling.shape)
                pixels = self._down(pixels, (height, width))
            ys.append(pixels.reshape(len(index), -1))
            owners.append(np.repeat(members, len(tiling.index)))
        return np.concatenate(xs), np.concatenate(ys), np.concatenate(owners)

    def _resample(self, image: np.ndarray, tiling: Tiling) -> np.ndarray:
        """The tiling's region of ``image`` averaged by area to ``q`` px a patch:
        ``(rows x qh, cols x qw, 3)`` uint8."""
        (rows, cols), (qh, qw) = tiling.shape, self.patch
        y0, x0, y1, x1 = tiling.area(image.shape[:2])
        picture = Image.fromarray(image)
        size = (cols * qw, rows * qh)  # PIL: (width, height)
        return np.asarray(picture.resize(size, Image.Resampling.BOX, box=(x0, y0, x1, y1)))

    def _down(self, pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(m, t, ph * pw * 3)`` -> the shared patch size, by block averages."""
        (ph, pw), (qh, qw) = self.patches[size], self.patch
        if (ph, pw) == (qh, qw):
            return pixels
        pattern = "m t (qh fh qw fw ch) -> m t (qh qw ch)"  # each q x q block's mean
        return reduce(pixels, pattern, "mean", qh=qh, fh=ph // qh, qw=qw, fw=pw // qw, ch=3)

    def images_of(self, predicted: np.ndarray, block: slice) -> dict[int, np.ndarray]:
        """Rows of :meth:`rows` -> ``image index -> (height, width, 3)``, each patch's
        prediction over its pixels (zeros outside the tiling's region)."""
        out, start = {}, 0
        (qh, qw) = self.patch
        for size, members in self.groups(block):
            tiling = self.tilings[size]
            t = len(tiling.index)
            part = predicted[start : start + len(members) * t].reshape(len(members), t, qh, qw, 3)
            start += len(members) * t
            if self.resampled:
                (rows, cols), (height, width) = tiling.shape, size
                grid = assemble(
                    part.reshape(len(members), t, -1), tiling.cells, tiling.shape,
                    (rows * qh, cols * qw),
                )  # fmt: skip
                y0, x0, y1, x1 = tiling.area(size)
                covered = self.covered(size)
                r = np.floor((np.arange(height) + 0.5 - y0) / (y1 - y0) * rows * qh)
                c = np.floor((np.arange(width) + 0.5 - x0) / (x1 - x0) * cols * qw)
                r = np.clip(r, 0, rows * qh - 1).astype(np.int64)
                c = np.clip(c, 0, cols * qw - 1).astype(np.int64)
                whole = grid[:, r][:, :, c] * covered[None, :, :, None]
            else:
                ph, pw = self.patches[size]
                part = part.repeat(ph // qh, axis=2).repeat(pw // qw, axis=3)
                flat = part.reshape(len(members), t, -1)
                whole = assemble(flat, tiling.cells, tiling.shape, size)
            out.update(zip(members.tolist(), whole, strict=True))
        return out


def reconstruct_pixels(
    acts: np.ndarray | SiteTokens,
    images: np.ndarray,
    tilings: Tiling | dict[tuple[int, int], Tiling],
    *,
    sizes: np.ndarray | None = None,
    n_splits: int = 5,
    n_inner: int = PIXEL_INNER_FOLDS,
    alphas: Sequence[float] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0),
    seed: int = 0,
    device: str | torch.device | None = None,
) -> PixelReconstruction:
    """Fit the PVP probe on one site's tokens and reconstruct every image.

    ``acts`` ``(n, tokens, d)`` or :class:`caches.SiteTokens` (ragged: images of mixed
    sizes); ``images`` ``(n, H, W, 3)`` uint8, image ``i`` its top-left ``sizes[i]`` =
    (height, width) (``(n, 2)``, or ``(n,)`` sides of squares; default: all of it);
    ``tilings`` the :class:`Tiling` of every image, or one per image size. Features are
    standardised over all tokens of the site (no labels involved); the ridge penalty of
    each outer fold is chosen by ``n_inner``-fold cross-validation on its training images
    (mean squared error).
    """
    device = torch.device(device) if device else default_device()
    tokens = acts if isinstance(acts, SiteTokens) else SiteTokens.from_dense(acts)
    n = tokens.n_images
    sizes = np.tile(images.shape[1:3], (n, 1)) if sizes is None else np.asarray(sizes)
    if sizes.ndim == 1:
        sizes = np.stack([sizes, sizes], axis=1)  # (n, 2) sides of squares
    if isinstance(tilings, Tiling):
        tilings = {(int(h), int(w)): tilings for h, w in np.unique(sizes, axis=0)}
    patch_rows = _PatchRows(tokens, images, sizes, tilings)
    # Images fall into n_splits x n_inner blocks; outer fold f is the blocks b with
    # b // n_inner == f, and inner fold i of its complement the blocks with b % n_inner == i,
    # so every training and held-out set is a union of blocks.
    n_blocks = n_splits * n_inner
    block_of = group_folds(np.arange(n), n_blocks, seed)
    fold_of = block_of // n_inner

    def rows(block: slice) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        x, y, owner = patch_rows.rows(block)
        return (
            torch.as_tensor(x, device=device).double(),
            torch.as_tensor(y, device=device).double(),
            owner,
        )

    # Pass 1: moments per block.
    moments: list[Moments | None] = [None] * n_blocks
    for block in _image_blocks(n):
        x, y, owner = rows(block)
        for b in np.unique(block_of[owner]):
            mask = torch.as_tensor(block_of[owner] == b, device=device)
            m = Moments.of(x[mask], y[mask])
            moments[b] = m if moments[b] is None else moments[b] + m
    total = _sum(moments, list(range(n_blocks)))
    mean = total.sum_x / total.n
    scale = (torch.diagonal(total.xx) / total.n - mean**2).clamp(min=0).sqrt()
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    moments = [m.standardized(mean, scale) for m in moments]
    grid_alphas = torch.tensor(sorted(alphas), dtype=torch.float64, device=device)

    coefs, intercepts, chosen, mean_patch = [], [], [], []
    for f in range(n_splits):
        train = [b for b in range(n_blocks) if b // n_inner != f]
        train_total = _sum(moments, train)
        mean_patch.append(train_total.sum_y / train_total.n)  # the no-information answer
        errors = torch.zeros(len(grid_alphas), dtype=torch.float64, device=device)
        for i in range(n_inner):
            fit_blocks = [b for b in train if b % n_inner != i]
            held = [b for b in train if b % n_inner == i]
            coef, intercept = solve_ridge(_sum(moments, fit_blocks), grid_alphas)
            errors += sum(_squared_error(moments[b], coef, intercept) for b in held)
        best = int(errors.argmin())
        coef, intercept = solve_ridge(train_total, grid_alphas[best : best + 1])
        coefs.append(coef[0])
        intercepts.append(intercept[0])
        chosen.append(float(grid_alphas[best]))

    # Pass 2: predict every image with its held-out fold's probe, compare at full size.
    out = np.zeros(images.shape, dtype=np.float32)
    abs_error, sq_error = np.empty(n), np.empty(n)
    base_abs, base_sq, values = np.empty(n), np.empty(n), np.empty(n)
    for block in _image_blocks(n):
        x, _, owner = rows(block)
        x = (x - mean) / scale
        folds = fold_of[owner]
        predicted = torch.empty(len(x), len(mean_patch[0]), dtype=torch.float64, device=device)
        baseline = torch.empty_like(predicted)
        for f in np.unique(folds):
            mask = torch.as_tensor(folds == f, device=device)
            predicted[mask] = x[mask] @ coefs[f] + intercepts[f]
            baseline[mask] = mean_patch[f][None, :]
        predicted = patch_rows.images_of(predicted.clamp(0, 255).cpu().numpy(), block)
        baseline = patch_rows.images_of(baseline.cpu().numpy(), block)
        for i, image in predicted.items():
            height, width = (int(v) for v in sizes[i])
            covered = patch_rows.covered((height, width))  # (height, width) scored pixels
            truth = images[i, :height, :width].astype(np.float64)[covered]  # (pixels, 3)
            abs_error[i] = np.abs(image[covered] - truth).sum()
            sq_error[i] = np.square(image[covered] - truth).sum()
            base_abs[i] = np.abs(baseline[i][covered] - truth).sum()
            base_sq[i] = np.square(baseline[i][covered] - truth).sum()
            values[i] = covered.sum() * 3
            out[i, :height, :width] = image
    return PixelReconstruction(
        images=out,
        abs_error=abs_error,
        sq_error=sq_error,
        baseline_abs_error=base_abs,
        baseline_sq_error=base_sq,
        values=values,
        alphas=np.asarray(chosen),
        patch=patch_rows.patch,
    )


def _sum(moments: list[Moments], blocks: list[int]) -> Moments:
    total = moments[blocks[0]]
    for b in blocks[1:]:
        total = total + moments[b]
    return total


def _squared_error(m: Moments, coef: torch.Tensor, intercept: torch.Tensor) -> torch.Tensor:
    """``(A,)`` summed squared error on the rows behind ``m`` (targets' own squares are
    left out: the same for every penalty, they do not change which is best)."""
    # sum ||y - xW - b||^2 = const - 2 tr(W^T X^T Y) - 2 b.sum_y + tr(W^T X^T X W)
    #                        + 2 b^T W^T sum_x + n ||b||^2
    cross = torch.einsum("adt,dt->a", coef, m.xy)
    quad = torch.einsum("adt,de,aet->a", coef, m.xx, coef)
    lin = torch.einsum("at,adt,d->a", intercept, coef, m.sum_x)
    return -2 * cross - 2 * intercept @ m.sum_y + quad + 2 * lin + m.n * intercept.pow(2).sum(1)


def pixel_sweep(
    reader: CacheReader,
    *,
    sites: Sequence[str] | None = None,
    conditions: Sequence[str] = (BASELINE,),
    n_splits: int = 5,
    seed: int = 0,
    n_show: int = 6,
    n_boot: int = 1000,
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The PVP probe at every site: a tidy table and a few reconstructions.

    Table rows have the probe table's columns with ``attribute = "pixels"``,
    ``selection = "token"``, ``metric`` ``mae`` (0-255 scale) or ``psnr`` (dB), a
    bootstrap interval over images, ``chance`` = the same metric for the training mean of
    each patch pixel, and no control. The second value maps ``site`` (and ``"original"``)
    to the first ``n_show`` images' held-out reconstructions ``(n_show, H, W, 3)`` uint8,
    under the first condition.
    """
    all_sites = sort_sites(reader.sites)
    sites = as_names(sites, "sites")
    conditions = as_names(conditions, "conditions") or [BASELINE]
    sites = sort_sites(sites) if sites else all_sites
    n = reader.n_written
    images = reader.images[:n]  # (n, H, W, 3) uint8
    shown = {"original": images[:n_show]}
    rows = []
    sizes = reader.image_sizes[:n]
    tilings = {site: site_tilings(reader, site, sizes) for site in sites}
    untiled = [site for site, tiling in tilings.items() if tiling is None]
    if untiled:
        warnings.warn(
            f"no pixel probe at {untiled}: no set of their tokens tiles the image",
            stacklevel=2,
        )
    jobs = [(c, s) for c in conditions for s in sites if tilings[s] is not None]
    for condition, site in tqdm(jobs, desc="pixel probes", unit="site", disable=not progress):
        tokens = reader.site_tokens(site, condition).check_finite(  # flat, per-image offsets
            f"site {site!r} under {condition!r} of {reader.path}"
        )
        result = reconstruct_pixels(
            tokens, images, tilings[site], sizes=sizes, n_splits=n_splits, seed=seed
        )
        if condition == conditions[0]:
            shown[site] = result.images[:n_show].round().astype(np.uint8)
        ones = result.values  # pixel values per image
        for metric, error, baseline in (
            ("mae", result.abs_error, result.baseline_abs_error),
            ("psnr", result.sq_error, result.baseline_sq_error),
        ):
            low, high = bootstrap_ci(error, ones, n_boot=n_boot, seed=seed)
            value, chance = error.sum() / ones.sum(), baseline.sum() / ones.sum()
            if metric == "psnr":  # from mean squared error; a larger error is a lower PSNR
                value, chance = _psnr(value), _psnr(chance)
                low, high = _psnr(high), _psnr(low)
            rows.append(
                {
                    "site": site,
                    "depth": all_sites.index(site),
                    "attribute": "pixels",
                    "selection": "token",
                    "condition": condition,
                    "metric": metric,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "chance": chance,
                    "control": np.nan,
                    "selectivity": np.nan,
                    "n": n,
                }
            )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS), shown


def site_tilings(
    reader: CacheReader, site: str, sizes: np.ndarray
) -> dict[tuple[int, int], Tiling] | None:
    """The :class:`Tiling` of ``site`` for every image size in ``sizes`` ``(n, 2)``
    (height, width), from the cache's layouts (a ragged site's images of one size share
    one): the grid of same-sized token boxes that covers most of the image (a centre crop
    covers less than all of it; a resize makes boxes of fractional pixels). None if the
    tokens of some size make no such grid (e.g. a pooled site whose boxes overlap)."""
    out = {}
    counts = np.diff(reader.offsets(site))
    shapes = [(int(h), int(w)) for h, w in np.asarray(sizes).reshape(-1, 2)]
    for size in dict.fromkeys(shapes):
        members = [i for i, hw in enumerate(shapes) if hw == size]
        if len(set(counts[members].tolist())) != 1:
            return None  # images of one size with different layouts: no shared probe rows
        found = reader.layout(site, image=members[0]).cover(size)
        if found is None:
            return None
        index, cells, shape, region = found
        whole = region == (0.0, 0.0, float(size[0]), float(size[1]))
        out[size] = Tiling(index, cells, shape, None if whole else region)
    return out


def _psnr(mse: float) -> float:
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))
