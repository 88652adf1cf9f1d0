"""How the confidence score was chosen and how well it ranks errors, reproducibly (issue 17).

    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python -m scripts.confidence_study [CACHE_DIR]

(from the repository root: it imports ``tests.composites``, which makes the composites.)

1. Runs the configured engine (INT8 ISNet fused with MODNet) on the 29 test photos and on the
   composites (``tests/composites.py``: the 9 soft-matted subjects pasted onto 6 backdrops, 4
   placements each, and onto the 6 whole CC0 photos, once each: 270 photos with exact truth),
   and caches, per photo, both models' masks and the fused one on the scoring grid, and the
   refined cut-out's MAE against the truth (for the fused mask, and for ISNet's alone, as when
   MODNet is skipped) with the baseline (the share of the cut-out's alpha in (0.05, 0.95)).
   CACHE_DIR defaults to a folder under the system's temp dir; the first run takes minutes,
   later ones under a minute.
2. On the 29 photos, leave-one-out: for every photo, the rule (disagreement weight, which
   structural signals cap the score, the cap) is chosen on the other 28 (best Spearman), then
   the held-out photo is scored with it; the Spearman of those held-out scores with the MAE is
   the figure reported. The same for the review threshold: chosen on the other 28 (the highest
   that flags at most 2 of their better half), applied to the held-out photo. The ablation
   (each signal never used) is leave-one-out too.
3. On the composites, nothing is tuned: the shipped score and threshold, as they are, with the
   baseline flagging as many photos beside them.
4. Everything again with MODNet absent (the engine may skip it): the score from ISNet's mask
   alone, against the error of ISNet's mask alone.

Nothing here is imported by the package; the chosen values live in cutout/imaging/confidence.py.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr
from tests.composites import composites
from tests.photos import default_folder

from cutout.config import Settings
from cutout.engine import local_engine
from cutout.engine.fused import FusedEngine
from cutout.imaging.confidence import (
    REVIEW_BELOW,
    SCORING,
    ConfidenceParams,
    Signals,
    measure,
    score_signals,
)
from cutout.imaging.decode import Limits, Photo, load_image
from cutout.imaging.fuse import resize
from cutout.pipeline import full_alpha, model_input
from cutout.quality import score

LIMITS = Limits(max_bytes=1 << 30, max_pixels=10**9)
#: Composites per (subject, background) pair and family: 9 x 6 x 4 = 216 on backdrops (empty
#: crops: the errors are the edges' and the shape's), 9 x 6 x 1 = 54 on whole scenes (their
#: own subject competes with the pasted one).
PER_PAIR = {"backdrop": 4, "scene": 1}


@dataclass(frozen=True)
class Case:
    """One photo through the engine: masks on the scoring grid, errors and baselines."""

    name: str
    main: np.ndarray
    soft: np.ndarray
    fused: np.ndarray
    mae: float  # the product's cut-out (fused, refined)
    share: float  # baseline: share of that cut-out's alpha in (0.05, 0.95)
    mae_alone: float  # ISNet's mask alone, refined (what a skipped MODNet gives)
    share_alone: float


def run(
    engine: FusedEngine, name: str, photo: Callable[[], Photo], truth: Image.Image, cache: Path
) -> Case:
    """The case of the photo *photo()* makes (only called when *name* is not cached yet)."""
    path = cache / f"{name.replace('/', '_')}.npz"
    if not path.exists():
        decoded = photo()
        parts = engine.parts(model_input(decoded))
        grid = (SCORING.grid, SCORING.grid)
        found: dict[str, float | np.ndarray] = {
            role: resize(mask, grid)
            for role, mask in (("main", parts.main), ("soft", parts.soft), ("fused", parts.fused))
        }
        for suffix, mask in (("", parts.fused), ("_alone", parts.main)):
            alpha = full_alpha(decoded, mask)
            a = np.asarray(alpha, np.float32) / 255.0
            found["mae" + suffix] = score(alpha, truth).mae
            found["share" + suffix] = float(np.mean((a > 0.05) & (a < 0.95)))
        np.savez_compressed(path, **found)  # type: ignore[arg-type]
    with np.load(path) as saved:
        return Case(
            name,
            saved["main"],
            saved["soft"],
            saved["fused"],
            float(saved["mae"]),
            float(saved["share"]),
            float(saved["mae_alone"]),
            float(saved["share_alone"]),
        )


def test_set(engine: FusedEngine, testdata: Path, cache: Path) -> list[Case]:
    cases = []
    for image in sorted((testdata / "images").iterdir()):
        with Image.open(testdata / "masks" / f"{image.stem}.png") as opened:
            truth = opened.convert("L")
        decode = functools.partial(load_image, image.read_bytes(), LIMITS)
        cases.append(run(engine, image.stem, decode, truth, cache))
    return cases


def composite_set(engine: FusedEngine, testdata: Path, cache: Path, family: str) -> list[Case]:
    cases = []
    made = composites(testdata, default_folder(), family=family, per_pair=PER_PAIR[family])
    for one in made:
        decode = functools.partial(png, one.image)
        cases.append(run(engine, f"{family}:{one.name}", decode, one.truth, cache))
    return cases


def png(image: Image.Image) -> Photo:
    """*image* as the service would see it uploaded: a PNG, decoded."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return load_image(buffer.getvalue(), LIMITS)


def signals_of(cases: Iterable[Case], *, alone: bool = False) -> list[Signals]:
    if alone:
        return [measure(c.main, None, c.main) for c in cases]
    return [measure(c.main, c.soft, c.fused) for c in cases]


def errors_of(cases: list[Case], *, alone: bool = False) -> np.ndarray:
    return np.asarray([c.mae_alone if alone else c.mae for c in cases])


def rho(scores: Iterable[float], errors: np.ndarray) -> float:
    return float(spearmanr(list(scores), errors).statistic)


def groups(errors: np.ndarray) -> tuple[set[int], set[int]]:
    """Indices of the worst tenth (at least one) and of the better half, by error."""
    order = np.argsort(-errors)
    worst = set(order[: max(1, round(len(errors) / 10))].tolist())
    better = set(order[len(errors) - len(errors) // 2 :].tolist())
    return worst, better


def flag_rates(flags: np.ndarray, errors: np.ndarray) -> tuple[int, int, int, int, int]:
    """(caught, worst, false flags in the better half, better half, flagged)."""
    worst, better = groups(errors)
    flagged = set(np.flatnonzero(flags).tolist())
    return len(flagged & worst), len(worst), len(flagged & better), len(better), len(flagged)


def rates_text(rates: tuple[int, int, int, int, int]) -> str:
    caught, worst, false, better, flagged = rates
    return (
        f"catches {caught}/{worst} of the worst tenth ({caught / worst:.0%}), flags "
        f"{false}/{better} of the better half ({false / better:.0%}); {flagged} flagged"
    )


def subsets(names: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every subset of *names*, the smaller first (so that ties go to the simpler rule)."""
    found = [
        tuple(n for i, n in enumerate(names) if mask >> i & 1) for mask in range(1 << len(names))
    ]
    return sorted(found, key=len)


#: The rules leave-one-out chooses from: disagreement weight x which structural signals cap the
#: score x the cap. The simplest come first: they win ties.
CANDIDATES = [
    dataclasses.replace(SCORING, disagreement_weight=weight, use=use, cap=cap)
    for use in subsets(Signals.STRUCTURAL)
    for cap in ((1.0,) if not use else (0.5, 0.25, 0.75))
    for weight in (0.0, 0.1, 0.25, 0.5)
]


def loo_spearman(
    signals: list[Signals], errors: np.ndarray, without: str | None = None
) -> tuple[float, list[float], list[ConfidenceParams]]:
    """Leave-one-out Spearman, the held-out scores, and the rule each fold chose (among the
    candidates that do not use *without*)."""
    rules = [r for r in CANDIDATES if without not in r.use]
    everyone = [[score_signals(s, rule) for s in signals] for rule in rules]
    held, chosen = [], []
    for i in range(len(signals)):
        rest = [j for j in range(len(signals)) if j != i]
        fits = [rho([scores[j] for j in rest], errors[rest]) for scores in everyone]
        best = int(np.argmin(fits))  # the first of the most negative: a low score, a large error
        held.append(everyone[best][i])
        chosen.append(rules[best])
    return rho(held, errors), held, chosen


def describe(rule: ConfidenceParams) -> str:
    used = "+".join(rule.use) or "no structural signal"
    return f"weight {rule.disagreement_weight}, {used}" + (f" cap {rule.cap}" if rule.use else "")


def threshold_for(scores: np.ndarray, errors: np.ndarray, allowed_false: int = 2) -> float:
    """The highest threshold (between two scores) flagging at most *allowed_false* of the better
    half of these photos."""
    _, better = groups(errors)
    ranked = np.sort(np.unique(scores))
    best = float(ranked[0])  # flags nothing below the lowest score
    for low, high in itertools.pairwise(ranked):
        cut = float((low + high) / 2)
        if sum(scores[j] < cut for j in better) <= allowed_false:
            best = cut
    return best


def loo_flags(scores: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, list[float]]:
    flags, cuts = np.zeros(len(scores), bool), []
    for i in range(len(scores)):
        rest = np.array([j for j in range(len(scores)) if j != i])
        cut = threshold_for(scores[rest], errors[rest])
        flags[i] = scores[i] < cut
        cuts.append(cut)
    return flags, cuts


def report_set(cases: list[Case], *, alone: bool) -> None:
    label = "ISNet alone (MODNet absent)" if alone else "fused (the product)"
    errors = errors_of(cases, alone=alone)
    signals = signals_of(cases, alone=alone)
    base = rho([-(c.share_alone if alone else c.share) for c in cases], errors)
    shipped = [score_signals(s) for s in signals]
    print(f"\n== the {len(cases)} test photos, {label} ==")
    print(f"baseline 1 - share in (0.05, 0.95): Spearman with MAE {base:+.3f}")
    loo, held, chosen = loo_spearman(signals, errors)
    print(f"score, leave-one-out over {len(CANDIDATES)} rules: {loo:+.3f}")
    for rule in sorted(set(chosen), key=chosen.count, reverse=True):
        print(f"  chosen by {chosen.count(rule)} folds: {describe(rule)}")
    print(f"score as shipped (for reference, not a validation): {rho(shipped, errors):+.3f}")
    for name in Signals.STRUCTURAL:
        print(
            f"  never using {name:13s} leave-one-out {loo_spearman(signals, errors, name)[0]:+.3f}"
        )
    flags, cuts = loo_flags(np.asarray(held), errors)
    print(f"flag, threshold chosen leave-one-out (median {np.median(cuts):.3f}): "
          f"{rates_text(flag_rates(flags, errors))}")  # fmt: skip
    shipped_flags = np.asarray(shipped) < REVIEW_BELOW
    print(
        f"flag as shipped (below {REVIEW_BELOW}): {rates_text(flag_rates(shipped_flags, errors))}"
    )
    print_fired(signals, np.asarray(shipped), errors)
    everyone = threshold_for(np.asarray(shipped), errors)
    print(f"the same threshold rule on all 29: below {everyone:.3f}")
    if not alone:
        worst, _ = groups(errors)
        for i in np.argsort(shipped):
            mark = "  (worst tenth)" if i in worst else ""
            print(f"  {shipped[i]:.3f}  MAE {errors[i]:.4f}  {cases[i].name}"
                  f"  {','.join(signals[i].fired(ALL))}{mark}")  # fmt: skip


#: Every structural signal on (to count how often each fires)
ALL = dataclasses.replace(SCORING, use=Signals.STRUCTURAL)


def print_fired(signals: list[Signals], scores: np.ndarray, errors: np.ndarray) -> None:
    """How often each structural signal fires, on which photos, and what it adds to the flag."""
    worst, better = groups(errors)
    edges = np.asarray([score_signals(s, dataclasses.replace(SCORING, use=())) for s in signals])
    print(f"structural signals (used: {', '.join(SCORING.use)}):")
    for name in Signals.STRUCTURAL:
        on = {i for i, s in enumerate(signals) if name in s.fired(ALL)}
        new = {i for i in on if edges[i] >= REVIEW_BELOW}
        print(f"  {name:13s} fires on {len(on):3d}: {len(on & worst)} in the worst tenth, "
              f"{len(on & better)} in the better half; {len(new)} not flagged by the edges alone "
              f"({len(new & worst)} worst, {len(new & better)} better half)")  # fmt: skip


def report_composites(family: str, cases: list[Case], *, alone: bool) -> None:
    label = "ISNet alone (MODNet absent)" if alone else "fused (the product)"
    errors = errors_of(cases, alone=alone)
    signals = signals_of(cases, alone=alone)
    scores = np.asarray([score_signals(s) for s in signals])
    share = np.asarray([c.share_alone if alone else c.share for c in cases])
    print(f"\n== {len(cases)} composites ({family}), {label}: nothing tuned on them ==")
    print(
        f"Spearman with MAE: baseline {rho(-share, errors):+.3f}, score {rho(scores, errors):+.3f}"
    )
    edges = dataclasses.replace(SCORING, use=())
    plain = rho([score_signals(s, edges) for s in signals], errors)
    print(f"  edges alone (no structural cap) {plain:+.3f}")
    for name in Signals.STRUCTURAL:
        rule = dataclasses.replace(SCORING, use=tuple(sorted({*SCORING.use} ^ {name})))
        change = "without" if name in SCORING.use else "with"
        print(
            f"  {change} {name:13s} {rho([score_signals(s, rule) for s in signals], errors):+.3f}"
        )
    flagged = scores < REVIEW_BELOW
    print(f"flag (below {REVIEW_BELOW}): {rates_text(flag_rates(flagged, errors))}")
    many = int(flagged.sum())
    if many:
        cut = np.sort(share)[-many]
        print(f"baseline flagging as many (share >= {cut:.3f}): "
              f"{rates_text(flag_rates(share >= cut, errors))}")  # fmt: skip
    print_fired(signals, scores, errors)
    for cut in THRESHOLDS:
        print(f"  flag below {cut}: {rates_text(flag_rates(scores < cut, errors))}")


#: Other review thresholds the study reports (on the composites, for information)
THRESHOLDS = (0.8, 0.85, 0.9)


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    default = Path(tempfile.gettempdir()) / "cutout-confidence-study"
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    cache.mkdir(parents=True, exist_ok=True)
    engine = local_engine(Settings.from_env(dotenv_path=None))
    if not isinstance(engine, FusedEngine):
        sys.exit("set CUTOUT_FUSION=modnet (the default) for this study")
    print(f"ISNet on {engine.primary.runtime}, MODNet on {engine.secondary.runtime}; {SCORING}")
    cases = test_set(engine, testdata, cache)
    backdrops = composite_set(engine, testdata, cache, "backdrop")
    scenes = composite_set(engine, testdata, cache, "scene")
    for alone in (False, True):
        report_set(cases, alone=alone)
        report_composites("backdrops", backdrops, alone=alone)
        report_composites("scenes", scenes, alone=alone)
        report_composites("all", backdrops + scenes, alone=alone)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    main()
