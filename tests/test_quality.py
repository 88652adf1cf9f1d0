"""Cut-out quality on real photos with ground truth, with the real model.

Scores the product's own path (decode -> model -> refinement) on the 20 binary masks and the
9 soft mattes separately, against the bare model (bilinear in, bilinear out, no refinement)
computed from the same masks. Thresholds sit just above what the pipeline achieved when they
were set (README "Quality"), so a regression fails.
"""

from __future__ import annotations

import pytest
from PIL import Image

from cutout.engine.local import LocalEngine
from cutout.imaging.decode import Limits, load_image
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, bare_alpha, mean_score, score
from tests.conftest import Sample

pytestmark = pytest.mark.model

# (max MAE, min IoU) per kind of ground truth. Measured when set (OpenVINO bf16): binary
# 0.0319 / 0.9034, soft 0.0451 / 0.9230; bare model: binary 0.0354 / 0.9031, soft 0.0483 / 0.9203.
THRESHOLDS = {"binary": (0.0325, 0.9028), "alpha": (0.0457, 0.9224)}
LIMITS = Limits(max_bytes=50 * 2**20, max_pixels=50_000_000)


@pytest.fixture(scope="module")
def scores(real_engine: LocalEngine, samples: list[Sample]) -> dict[str, dict[str, Score]]:
    """For each kind: the mean score of our pipeline ('ours') and of the bare model ('bare')."""
    ours: dict[str, list[Score]] = {"binary": [], "alpha": []}
    bare: dict[str, list[Score]] = {"binary": [], "alpha": []}
    for sample in samples:
        photo = load_image(sample.image.read_bytes(), LIMITS)
        mask = real_engine.predict_mask(model_input(photo))
        with Image.open(sample.mask) as truth:
            ours[sample.kind].append(score(full_alpha(photo, mask), truth))
            bare[sample.kind].append(score(bare_alpha(mask, photo.size), truth))
    assert len(ours["binary"]) == 20 and len(ours["alpha"]) == 9
    result = {
        kind: {"ours": mean_score(ours[kind]), "bare": mean_score(bare[kind])} for kind in ours
    }
    for kind, pair in result.items():
        print(f"{kind}: ours {pair['ours']} bare {pair['bare']}")
    return result


@pytest.mark.parametrize("kind", ["binary", "alpha"])
def test_quality_meets_thresholds(scores: dict[str, dict[str, Score]], kind: str) -> None:
    max_mae, min_iou = THRESHOLDS[kind]
    ours = scores[kind]["ours"]
    assert ours.mae <= max_mae, f"{kind} MAE {ours.mae:.4f} > {max_mae}"
    assert ours.iou >= min_iou, f"{kind} IoU {ours.iou:.4f} < {min_iou}"


@pytest.mark.parametrize("kind", ["binary", "alpha"])
def test_refinement_beats_the_bare_model(scores: dict[str, dict[str, Score]], kind: str) -> None:
    ours, bare = scores[kind]["ours"], scores[kind]["bare"]
    assert ours.mae < bare.mae and ours.iou > bare.iou, f"{kind}: ours {ours} vs bare {bare}"
