"""The confidence score against the ground truth: the 29 test photos, composites made from them on
the fly, and each structural signal on a constructed case (issue 17).

The baseline to beat is the simplest signal there is: the share of the cut-out's alpha that is
neither clearly foreground nor clearly background (between 0.05 and 0.95). The figures that
validate the score are leave-one-out and on composites nothing was tuned on; they come from
``scripts/confidence_study.py`` (docs/internals/quality-and-speed.md, "Confidence"). The tests
here keep the shipped score where it was measured (MODNet's INT8 build at its 288 input): on the
29 photos Spearman with MAE -0.714 as shipped, -0.691 leave-one-out (28 folds choose the shipped
rule), against the baseline's -0.661 (with the float MODNet: -0.733 in every fold, baseline
-0.658); the flag (below REVIEW_BELOW) catches the 3 worst while flagging 1 of the better half;
on 24 composites (2 subjects, each backdrop and scene once) -0.641 against the baseline's -0.620
(float MODNet: -0.665 against -0.647; at 512: -0.692 against -0.696, a tie, which the test
allows: TIE).
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import spearmanr

from cutout.engine.fused import FusedEngine
from cutout.imaging.confidence import (
    REVIEW_BELOW,
    SCORING,
    Signals,
    confidence,
    measure,
    needs_review,
)
from cutout.imaging.decode import Limits, load_image
from cutout.pipeline import full_alpha, model_input
from cutout.quality import score
from tests.composites import composites
from tests.conftest import Evaluated, Photos, precision

#: The composites this test makes on the fly: the first SUBJECTS soft subjects on each of the
#: six backdrops (empty crops of the CC0 photos) and the six scenes (whole photos), PER_PAIR
#: placements each: 24, about 30 s.
SUBJECTS, PER_PAIR = 2, 1
#: What counts as a tie between two Spearman coefficients on 24 photos: swapping two photos k
#: ranks apart moves rho by 12 k^2 / (n (n^2 - 1)), 0.0009 for neighbours and 0.008 for k = 3,
#: so 0.02 is two or three such swaps.
TIE = 0.02


@pytest.mark.model
def test_score_ranks_errors_better_than_the_share_of_uncertain_alpha(
    evaluated: list[Evaluated],
) -> None:
    errors = [e.fused.mae for e in evaluated]
    ours = spearmanr([e.confidence for e in evaluated], errors).statistic
    baseline = spearmanr([1.0 - e.uncertain_share for e in evaluated], errors).statistic
    print(f"Spearman with MAE: score {ours:+.3f}, baseline {baseline:+.3f}")
    assert ours < baseline, (ours, baseline)  # more negative: a low score means a large error
    # Measured -0.714 where the float layers run in bf16, -0.692 in f32 (a Zen 3, stop 29;
    # baseline -0.655 there).
    assert ours < {"bf16": -0.70, "f32": -0.68}[precision()]


@pytest.mark.model
def test_review_flag_catches_the_worst_and_spares_the_good(evaluated: list[Evaluated]) -> None:
    ranked = sorted(evaluated, key=lambda e: -e.fused.mae)
    worst = {e.sample.name for e in ranked[: round(len(ranked) / 10)]}
    better = {e.sample.name for e in ranked[len(ranked) - len(ranked) // 2 :]}
    flagged = {e.sample.name for e in evaluated if e.confidence < REVIEW_BELOW}
    print(f"flagged {sorted(flagged)}; worst {sorted(worst)}")
    assert len(flagged & worst) >= 2, flagged  # most of the worst tenth (3 when set)
    assert len(flagged & better) <= 2, flagged  # few of the better half


@pytest.mark.model
def test_scores_are_fractions(evaluated: list[Evaluated]) -> None:
    scores = np.array([e.confidence for e in evaluated])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.max() > 0.9 and scores.min() < 0.5  # it does spread the photos out


# -- The structural signals, each on a constructed case from a real mask ---------------------
# The mask is the CC0 horse silhouette (tests/photos.py): a real outline, always available.

EVERY = dataclasses.replace(SCORING, use=Signals.STRUCTURAL)  # border too


@pytest.fixture(scope="module")
def horse(photos: Photos) -> np.ndarray:
    """The horse silhouette as a 0/1 mask, centred on a canvas with room around it."""
    with Image.open(photos.named("horse")) as opened:
        silhouette = np.asarray(opened.convert("L"), np.float32) < 128
    canvas = np.zeros((520, 520), np.float32)
    canvas[96 : 96 + silhouette.shape[0], 60 : 60 + silhouette.shape[1]] = silhouette
    return canvas


def test_a_whole_subject_fires_nothing(horse: np.ndarray) -> None:
    signals = measure(horse, horse, horse)
    assert signals.fired(EVERY) == (), signals
    assert needs_review(confidence(horse, horse, horse)) is False


def test_other_object_fires_when_the_models_pick_different_subjects(horse: np.ndarray) -> None:
    # MODNet sees the horse and a second one beside it, which ISNet does not
    one = np.hstack([horse, np.zeros_like(horse)])
    two = np.hstack([horse, horse])
    assert "other_object" in measure(one, two, one).fired()
    # ... and ISNet's second object that MODNet does not touch counts too
    assert "other_object" in measure(two, one, two).fired()
    assert "other_object" not in measure(two, two, two).fired()
    # MODNet seeing nothing at all is its blindness to non-people, not another subject
    assert "other_object" not in measure(one, np.zeros_like(one), one).fired()


def test_border_fires_when_the_photo_cuts_the_subject(horse: np.ndarray) -> None:
    rows, cols = np.nonzero(horse)
    cut = horse[rows.min() + 80 :, cols.min() + 60 :]  # the photo's edge through the horse
    cut = np.pad(cut, ((0, 0), (0, 40)))
    # measured and reported, but it does not lower the score: it did not predict the error
    assert "border" in measure(cut, cut, cut).fired(EVERY)
    assert "border" not in measure(horse, horse, horse).fired(EVERY)
    assert "border" not in SCORING.use and needs_review(confidence(cut, cut, cut)) is False


def test_pieces_fires_on_a_mask_in_many_pieces(horse: np.ndarray) -> None:
    split = horse.copy()
    cols = np.nonzero(horse)[1]
    for x in np.linspace(cols.min(), cols.max(), 6)[1:-1].astype(int):
        split[:, x - 6 : x + 6] = 0  # four vertical cuts: five pieces
    signals = measure(split, split, split)
    assert signals.pieces >= 4 and "pieces" in signals.fired(), signals


def test_area_fires_on_a_speck_and_on_everything(horse: np.ndarray) -> None:
    speck = np.zeros((2048, 2048), np.float32)
    speck[1000 : 1000 + 60, 1000 : 1000 + 60] = horse[96 + 80 : 96 + 140, 60 + 100 : 60 + 160]
    assert "area" in measure(speck, speck, speck).fired()
    everything = np.ones_like(horse)
    everything[:40, :40] = 0
    assert "area" in measure(everything, everything, everything).fired()


def test_without_modnet_the_score_still_judges_structure(horse: np.ndarray) -> None:
    """The engine may skip MODNet: the score then reads ISNet's mask alone."""
    assert confidence(horse, None, horse) == confidence(horse, horse, horse)
    split = horse.copy()
    split[:, 150:162] = split[:, 250:262] = split[:, 350:362] = 0
    alone = confidence(split, None, split)
    assert alone < confidence(horse, None, horse) and needs_review(alone) is True


# -- Composites: the subjects of the set on the CC0 photos, exact truth, tuned on nothing ------


@pytest.mark.model
def test_score_ranks_composite_errors_at_least_as_well_as_the_baseline(
    real_engine: FusedEngine, testdata: Path, photos: Photos
) -> None:
    """A small, fixed subset of what scripts/confidence_study.py runs by the hundred. (On the
    backdrops alone the baseline ranks better: -0.943 against -0.922 on 216; see the docs.)"""
    limits = Limits(max_bytes=50 * 2**20, max_pixels=50_000_000)
    errors, scores, shares = [], [], []
    made_here = [
        made
        for family in ("backdrop", "scene")
        for made in composites(
            testdata, photos.folder, family=family, per_pair=PER_PAIR, subjects=SUBJECTS
        )
    ]
    for made in made_here:
        buffer = io.BytesIO()
        made.image.save(buffer, "PNG")
        photo = load_image(buffer.getvalue(), limits)
        parts = real_engine.parts(model_input(photo))
        alpha = full_alpha(photo, parts.fused)
        a = np.asarray(alpha, np.float32) / 255.0
        errors.append(score(alpha, made.truth).mae)
        scores.append(parts.confidence)
        shares.append(float(np.mean((a > 0.05) & (a < 0.95))))
    ours = spearmanr(scores, errors).statistic
    baseline = spearmanr([-s for s in shares], errors).statistic
    print(
        f"{len(errors)} composites, Spearman with MAE: score {ours:+.3f}, baseline {baseline:+.3f}"
    )
    # The score ties the baseline on composites (270: -0.885 against -0.882), so on 24 the two
    # may swap a pair or two (-0.692 against -0.696 here): "at least as well" within that.
    assert ours <= baseline + TIE, (ours, baseline)
    assert ours < -0.6, ours  # and it does rank them
