"""Fuse the main model's mask with MODNet's soft alpha, and score how far to trust the result.

ISNet alone loses whole strands and fluffy regions of hair, fur and plants; MODNet, a portrait
matting model, sees them, but it also mattes people and things that are not the subject. So
MODNet may only *add* to ISNet's mask, and only where both hold:

* connected: the MODNet region (alpha > ``threshold``, on a ``grid``-square low-resolution
  grid) touches ISNet's own foreground (> ``seed``), so bystanders and background objects
  do not come back;
* supported: ISNet itself shows some evidence there (> ``support``: where it is unsure it is
  grey, not black), or the pixel lies within ``reach`` (px at 1024) of ISNet's foreground,
  where the fine strands it misses are.

Where ISNet is confident, it decides (the rule is a maximum). The result goes on to the usual
full-resolution refinement (:mod:`cutout.imaging.refine`). Every parameter was chosen by
leave-one-out on the 29 test photos (``scripts/fusion_research.py``; README "Quality").

:mod:`cutout.imaging.confidence` scores how far to trust the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cutout.imaging.regions import dilate, touching

Array = np.ndarray


@dataclass(frozen=True)
class FusionParams:
    threshold: float = 0.5  # MODNet alpha that makes a region, at low resolution
    seed: float = 0.5  # ISNet alpha that counts as its foreground
    support: float = 0.02  # ISNet alpha that counts as evidence
    #: px at 1024 (at least one grid step): how close to ISNet's foreground MODNet may add
    #: without ISNet's support
    reach: int = 4
    grid: int = 256  # side of the low-resolution grid of the connectivity check


FUSION = FusionParams()


def fuse(primary: Array, secondary: Array, params: FusionParams = FUSION) -> Array:
    """The fused mask at *primary*'s resolution; both inputs are alphas in [0, 1]."""
    size = primary.shape[::-1]
    allowed = resize(allowed_region(primary, secondary, params).astype(np.float32), size)
    added = resize(secondary, size)
    added *= allowed
    fused: Array = np.maximum(primary, added).astype(np.float32, copy=False)
    return fused


def allowed_region(primary: Array, secondary: Array, params: FusionParams = FUSION) -> Array:
    """Boolean grid: where *secondary* may add to *primary* (connected and supported)."""
    grid = (params.grid, params.grid)
    main = resize(primary, grid)
    seeds = main > params.seed
    connected = touching(resize(secondary, grid) > params.threshold, seeds)
    result: Array = connected & supported(main, seeds, params)
    return result


def supported(main: Array, seeds: Array, params: FusionParams = FUSION) -> Array:
    """Boolean grid: where ISNet's grid mask *main* (with its foreground *seeds*) lets MODNet
    add, whatever MODNet says: within ``reach`` of the foreground, or where ISNet shows
    support. :func:`cutout.engine.modes.modnet_bound` bounds MODNet's effect over it."""
    steps = max(1, round(params.reach * params.grid / 1024))
    result: Array = dilate(seeds, steps) | (main > params.support)
    return result


def resize(a: Array, size: tuple[int, int]) -> Array:
    """Bilinear resize of a 2-D float array to *size* (width, height)."""
    a = np.asarray(a, np.float32)
    if a.shape[::-1] == size:
        return a.copy()
    image = Image.fromarray(a, "F").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, np.float32).copy()
