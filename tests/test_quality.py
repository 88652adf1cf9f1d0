"""Cut-out quality on real photos with ground truth, with the real models.

Scores, on the 20 binary masks and the 9 soft mattes separately, three things computed from the
same forward passes of the product's engine (INT8 ISNet fused with MODNet):

* bare: the main model's mask, bilinear in and out, nothing else;
* today: the main model alone through the refinement (the pipeline before issue 7);
* ours: the product, MODNet fused in, then the refinement.

Thresholds sit just past what the pipeline reached when they were set (README "Quality"), so
a regression fails.
"""

from __future__ import annotations

import pytest
from PIL import Image

from cutout.engine.fused import FusedEngine
from cutout.imaging.decode import Photo
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, mean_score, score
from tests.conftest import Evaluated, precision

pytestmark = pytest.mark.model

# (max MAE, min IoU) per kind of ground truth. Measured when set (INT8 ISNet, calibrated at
# fetch time, + MODNet at its 288 input, OpenVINO, Intel Xeon with AMX): ours binary 0.0287 /
# 0.9074, soft 0.0230 / 0.9641 (MODNet at 512, issue 17's baseline: 0.0295 / 0.9052 and
# 0.0263 / 0.9544; with MODNet's INT8 build, stop 23: 0.0285 / 0.9084 and 0.0231 / 0.9639; stop 26,
# ISNet's last upsampling rewired: 0.0285 / 0.9082 and 0.0231 / 0.9640); today's
# pipeline (INT8 ISNet alone) binary 0.0310 / 0.9041, soft 0.0438 / 0.9275; bare INT8 ISNet
# 0.0341 / 0.9040 and 0.0469 / 0.9190.
# Where the float layers run in f32 (an AVX2-only Zen 3, stop 29; tests/conftest.py,
# precision()), the models built there: ours binary 0.0289 / 0.9072, soft 0.0230 / 0.9641;
# today's 0.0318 / 0.9035 and 0.0432 / 0.9278; bare 0.0348 / 0.9031 and 0.0463 / 0.9270.
THRESHOLDS = {
    "bf16": {"binary": (0.0291, 0.9067), "alpha": (0.0235, 0.9634)},
    "f32": {"binary": (0.0293, 0.9065), "alpha": (0.0234, 0.9636)},
}


@pytest.fixture(scope="module")
def scores(evaluated: list[Evaluated]) -> dict[str, dict[str, Score]]:
    """For each kind: the mean score of ours, of today's pipeline and of the bare model."""
    result: dict[str, dict[str, Score]] = {}
    for kind in ("binary", "alpha"):
        items = [e for e in evaluated if e.sample.kind == kind]
        assert len(items) == (20 if kind == "binary" else 9)
        result[kind] = {
            "ours": mean_score(e.fused for e in items),
            "today": mean_score(e.today for e in items),
            "bare": mean_score(e.bare for e in items),
        }
        print(kind, {name: f"{s.mae:.4f}/{s.iou:.4f}" for name, s in result[kind].items()})
    return result


@pytest.mark.parametrize("kind", ["binary", "alpha"])
def test_quality_meets_thresholds(scores: dict[str, dict[str, Score]], kind: str) -> None:
    max_mae, min_iou = THRESHOLDS[precision()][kind]
    ours = scores[kind]["ours"]
    assert ours.mae <= max_mae, f"{kind} MAE {ours.mae:.4f} > {max_mae}"
    assert ours.iou >= min_iou, f"{kind} IoU {ours.iou:.4f} < {min_iou}"


@pytest.mark.parametrize("kind", ["binary", "alpha"])
def test_pipeline_beats_the_bare_model(scores: dict[str, dict[str, Score]], kind: str) -> None:
    ours, bare = scores[kind]["ours"], scores[kind]["bare"]
    assert ours.mae < bare.mae and ours.iou > bare.iou, f"{kind}: ours {ours} vs bare {bare}"


@pytest.mark.parametrize("kind", ["binary", "alpha"])
def test_fusion_beats_todays_pipeline(scores: dict[str, dict[str, Score]], kind: str) -> None:
    """MODNet earns its keep on both kinds: better MAE and IoU than ISNet alone, refined."""
    ours, today = scores[kind]["ours"], scores[kind]["today"]
    assert ours.mae < today.mae and ours.iou > today.iou, f"{kind}: ours {ours} vs {today}"


def test_fusion_brings_back_what_isnet_missed(evaluated: list[Evaluated]) -> None:
    """The flowers of GT01: ISNet leaves most of one out; MODNet's region brings it back."""
    gt01 = next(e for e in evaluated if e.sample.name == "alphamatting_GT01")
    assert gt01.today.mae > 0.1 and gt01.fused.mae < 0.02, gt01


#: Two soft mattes and two binary masks, enlarged (photo bicubic, truth bilinear) to 2 MP. The
#: whole set, and 12 MP, run in `make bench` (quality with size), which takes minutes.
HIGH_RES = ("alphamatting_GT03", "alphamatting_GT07", "coco_dog08_000000292330", "berkeley_271035")


def test_quality_does_not_fall_at_2_megapixels(
    real_engine: FusedEngine, evaluated: list[Evaluated]
) -> None:
    """Real uploads are 2-24 MP, the test photos under 0.6 MP; the refinement works at full
    resolution, so check it there. Measured when set: MAE within 0.001, IoU within 0.002."""
    native, enlarged = [], []
    for e in (e for e in evaluated if e.sample.name in HIGH_RES):
        with Image.open(e.sample.image) as opened, Image.open(e.sample.mask) as truth_file:
            rgb, truth = opened.convert("RGB"), truth_file.convert("L")
        scale = (2e6 / (rgb.width * rgb.height)) ** 0.5
        size = (round(rgb.width * scale), round(rgb.height * scale))
        photo = Photo(rgb=rgb.resize(size, Image.Resampling.BICUBIC), alpha=None, format="PNG")
        alpha = full_alpha(photo, real_engine.predict(model_input(photo)).mask)
        enlarged.append(score(alpha, truth.resize(size, Image.Resampling.BILINEAR)))
        native.append(e.fused)
    assert len(native) == len(HIGH_RES)
    small, big = mean_score(native), mean_score(enlarged)
    print(f"native {small}, 2 MP {big}")
    assert big.mae <= small.mae + 0.002 and big.iou >= small.iou - 0.004, (small, big)
