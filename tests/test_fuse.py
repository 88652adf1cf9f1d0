"""The fusion rule and the confidence score on small synthetic masks (the real-photo checks are
in test_quality.py and test_confidence.py)."""

from __future__ import annotations

import numpy as np

from cutout.imaging.confidence import REVIEW_BELOW, confidence, needs_review
from cutout.imaging.fuse import fuse

SIZE = 256


def disc(cx: float, cy: float, r: float, value: float = 1.0, size: int = SIZE) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return np.where((x - cx) ** 2 + (y - cy) ** 2 <= r * r, value, 0.0).astype(np.float32)


def test_where_isnet_is_confident_isnet_decides() -> None:
    isnet = disc(128, 128, 60)
    modnet = np.zeros_like(isnet)  # MODNet sees nothing (a portrait model, a microwave)
    assert np.array_equal(fuse(isnet, modnet), isnet)


def test_modnet_adds_a_region_isnet_was_unsure_about() -> None:
    """Fur ISNet marks grey (0.2) and MODNet sees, attached to the subject, comes back."""
    isnet = disc(100, 128, 50) + disc(170, 128, 30, value=0.2) * (disc(100, 128, 50) == 0)
    modnet = np.maximum(disc(100, 128, 50), disc(170, 128, 30, value=0.9))
    fused = fuse(isnet, modnet)
    assert fused[128, 180] > 0.85 and fused[128, 100] == 1.0


def test_bystanders_and_unsupported_regions_stay_out() -> None:
    """A separate person MODNet mattes, and background ISNet firmly rejects, do not come back."""
    isnet = disc(80, 128, 40)
    bystander = disc(210, 60, 25, value=0.95)  # not connected to ISNet's subject
    attached = disc(140, 128, 40, value=0.95)  # connected, but ISNet says 0 there
    fused = fuse(isnet, np.maximum(np.maximum(isnet, bystander), attached))
    assert fused[60, 210] == 0.0
    assert fused[128, 170] == 0.0  # beyond the reach of a few pixels from ISNet's edge
    assert fused[128, 121] > 0.9  # just at the edge: fine strands live there


def test_fusion_works_across_resolutions() -> None:
    """ISNet's 1024 square and MODNet's aspect-kept 512x384 are both brought to ISNet's grid."""
    isnet = disc(512, 512, 200, size=1024)
    modnet = np.zeros((384, 512), np.float32)
    assert fuse(isnet, modnet).shape == (1024, 1024)


def test_confidence_is_high_when_the_models_agree_on_a_crisp_mask() -> None:
    mask = disc(128, 128, 60)
    score = confidence(mask, mask, mask)
    assert 0.9 < score <= 1.0 and needs_review(score) is False


def test_confidence_drops_with_uncertain_alpha_and_disagreement() -> None:
    isnet = disc(128, 128, 60) * 0.5  # all unsure
    modnet = disc(128, 128, 90)
    fused = fuse(isnet, modnet)
    score = confidence(isnet, modnet, fused)
    assert 0.0 <= score < REVIEW_BELOW and needs_review(score) is True
    assert needs_review(None) is None
