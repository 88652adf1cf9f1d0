"""The quality modes of the fused engine, and what decides how much of it runs.

* ``fast``: ISNet alone (MODNet is never run, nor loaded until another mode asks for it);
  the confidence is then the uncertainty share alone (no second model to disagree with).
* ``balanced`` (the default): ISNet fused with MODNet. MODNet is skipped only where it
  provably cannot change the mask (:func:`modnet_cannot_matter`): a photo with no subject, or
  one the subject fills. On none of the 29 real test photos does the proof hold.
* ``best``: ``balanced``, plus test-time augmentation where the subject is soft: when
  MODNet adds at least :data:`TTA_FROM` of the frame to ISNet's mask (hair, fur: where
  ISNet's own edge is unsure), ISNet also runs on the mirrored photo and the two masks are
  averaged before the fusion. On hard-edged objects averaging blurs correct edges (it lost
  0.034 MAE on the microwave photo), hence the gate.

Every number here was chosen on the 29 test photos, by leave-one-out where tuned
(``scripts/engine_research.py``; the figures are in docs/internals/quality-and-speed.md).
"""

from __future__ import annotations

import numpy as np

from cutout.config import QUALITIES
from cutout.imaging.fuse import FUSION, FusionParams, allowed_region, resize, supported

__all__ = [
    "DEFAULT_QUALITY",
    "QUALITIES",
    "TTA_FROM",
    "modnet_bound",
    "modnet_cannot_matter",
    "modnet_gain",
]

DEFAULT_QUALITY = "balanced"
#: Share of the frame (on the fusion's grid) MODNet must add before ``best`` runs the
#: mirrored ISNet pass: 0.012 won 28 of the 29 leave-one-out folds (0.009 the other), with
#: MODNet's INT8 build at its 288 input (``scripts/engine_research.py`` prints the folds).
TTA_FROM = 0.012
#: Skip MODNet when what it could add at most, as a mean over the frame at the mask's
#: resolution, is below this (the fused result then differs from ISNet's by less).
SKIP_BELOW = 0.0005


def modnet_cannot_matter(primary: np.ndarray, params: FusionParams = FUSION) -> bool:
    """True when no MODNet output could move the fused mask by :data:`SKIP_BELOW` MAE
    (:func:`modnet_bound`)."""
    return modnet_bound(primary, params) < SKIP_BELOW


def modnet_bound(primary: np.ndarray, params: FusionParams = FUSION) -> float:
    """The most any MODNet output could add to ISNet's mask *primary*, as a mean over the
    frame (on the fusion's grid).

    MODNet may only raise ISNet's alpha, only in regions touching ISNet's foreground, and
    only near it or where ISNet shows support (:func:`cutout.imaging.fuse.allowed_region`).
    The most it could add is therefore ``1 - alpha`` over that candidate region, whatever
    MODNet says. The bound is small for a photo where ISNet finds no subject at all, or one
    that fills the frame; on the 29 test photos (subjects with edges) it never is, and no
    cheaper statistic of ISNet's mask predicted MODNet's effect (the research script shows
    the band share and the faint share failing, and a low-resolution MODNet pass costs as
    much as the full one here: OpenVINO recompiles for the new shape).
    """
    grid = (params.grid, params.grid)
    main = resize(primary, grid)
    seeds = main > params.seed
    if not seeds.any():
        return 0.0  # nothing for MODNet's regions to connect to: allowed_region is empty
    return float(np.mean((1.0 - main) * supported(main, seeds, params)))


def modnet_gain(primary: np.ndarray, secondary: np.ndarray, params: FusionParams = FUSION) -> float:
    """How much MODNet adds to ISNet's mask: the mean rise over the fusion's grid."""
    grid = (params.grid, params.grid)
    main, soft = resize(primary, grid), resize(secondary, grid)
    added = soft * allowed_region(primary, secondary, params) - main
    return float(np.mean(np.maximum(added, 0.0)))
