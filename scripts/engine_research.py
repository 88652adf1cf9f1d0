"""How the engine's MODNet skip and its quality modes were chosen, reproducibly (issue 17).

    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python scripts/engine_research.py [CACHE_DIR]

Caches per test photo the INT8 ISNet mask, ISNet's mask of the mirrored photo (mirrored back)
and MODNet's alpha, then reports for every photo: the share of ISNet's uncertain band (a
candidate skip statistic, which failed), the skip bound (:func:`cutout.engine.modes.modnet_bound`),
the MAE between the refined fused alpha and the refined ISNet alpha (what skipping MODNet
changes), and MAE / IoU of ISNet alone, the fusion, and the fusion of the ungated mirrored
average (best mode gates it by :func:`cutout.engine.modes.modnet_gain`; the threshold's
leave-one-out is printed last). Nothing here is imported by the
package.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from research import leave_one_out, truth_kind

from cutout.config import Settings
from cutout.engine import local_engine
from cutout.engine.fused import FusedEngine
from cutout.engine.modes import modnet_bound, modnet_gain
from cutout.imaging.decode import Limits, load_image
from cutout.imaging.fuse import fuse
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, mean_score, score

LIMITS = Limits(max_bytes=1 << 30, max_pixels=10**9)


def masks(engine: FusedEngine, testdata: Path, cache: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for image in sorted((testdata / "images").iterdir()):
        file = cache / f"{image.stem}.npz"
        if not file.exists():
            photo = load_image(image.read_bytes(), LIMITS)
            rgb = model_input(photo)
            main = engine.primary.predict_mask(rgb)
            flipped = engine.primary.predict_mask(ImageOps.mirror(rgb))[:, ::-1]
            soft = engine.secondary.predict_mask(rgb)
            np.savez(file, main=main, flipped=flipped, soft=soft)
        with np.load(file) as data:
            out[image.stem] = {k: data[k] for k in data.files}
    return out


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    cache = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.gettempdir()) / "engine"
    cache.mkdir(parents=True, exist_ok=True)
    engine = local_engine(Settings.from_env(dotenv_path=None))
    assert isinstance(engine, FusedEngine)
    found = masks(engine, testdata, cache)
    gains: dict[str, float] = {}
    errors: dict[str, tuple[Score, Score, str]] = {}
    print(f"{'photo':<40}{'band':>8}{'bound':>8}{'skipMAE':>9}  kind  alone / fused / mirrored")
    for stem, m in found.items():
        photo = load_image(
            (
                testdata
                / "images"
                / next(p.name for p in (testdata / "images").iterdir() if p.stem == stem)
            ).read_bytes(),
            LIMITS,
        )
        with Image.open(testdata / "masks" / f"{stem}.png") as t:
            truth = t.convert("L")
        averaged = (m["main"] + m["flipped"]) / 2
        alphas = {
            "fast": full_alpha(photo, m["main"]),
            "balanced": full_alpha(photo, fuse(m["main"], m["soft"])),
            "mirrored": full_alpha(photo, fuse(averaged, m["soft"])),
        }
        skip = (
            float(
                np.mean(
                    np.abs(
                        np.asarray(alphas["fast"], np.float32)
                        - np.asarray(alphas["balanced"], np.float32)
                    )
                )
            )
            / 255
        )
        band = float(np.mean((m["main"] > 0.02) & (m["main"] < 0.98)))
        bound = modnet_bound(m["main"])
        scores = {k: score(a, truth) for k, a in alphas.items()}
        kind = truth_kind(truth)
        print(
            f"{stem[:39]:<40}{band:>8.4f}{bound:>8.4f}{skip:>9.5f}  {kind:<7}"
            + " ".join(f"{s.mae:.4f}/{s.iou:.3f}" for s in scores.values())
        )
        gains[stem] = modnet_gain(m["main"], m["soft"])
        errors[stem] = (scores["balanced"], scores["mirrored"], kind)
    gate_leave_one_out(gains, errors)


def gate_leave_one_out(
    gains: dict[str, float], errors: dict[str, tuple[Score, Score, str]]
) -> None:
    """Best's gate (``TTA_FROM``): for each photo, the threshold with the lowest mean MAE on the
    other photos, applied to it; prints the picks and the held-out means per kind."""
    grid = [round(0.005 + 0.001 * i, 3) for i in range(46)]  # 0.005-0.05

    def chosen(stem: str, threshold: float) -> Score:
        balanced, mirrored, _ = errors[stem]
        return mirrored if gains[stem] >= threshold else balanced

    stems = list(gains)
    picks = leave_one_out(grid, lambda t: [chosen(s, t).mae for s in stems])
    held: dict[str, list[Score]] = {"binary": [], "soft": []}
    for stem, pick in zip(stems, picks, strict=True):
        held[errors[stem][2]].append(chosen(stem, pick))
    print(f"best's gate, leave-one-out picks: {dict(Counter(picks))}")
    for kind, items in held.items():
        mean = mean_score(items)
        print(f"  held-out {kind}: {mean.mae:.4f} / {mean.iou:.4f}")


if __name__ == "__main__":
    main()
