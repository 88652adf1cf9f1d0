"""How MODNet's input size was chosen (issue 17): quality of the fusion and forward time.

    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python scripts/modnet_size_research.py

For every test photo: the product's INT8 ISNet mask once, then MODNet with its short side at
each candidate size, each fused, refined at full resolution and scored against the truth.
Prints each size's mean MAE / IoU per kind of truth, on how many photos its MAE is better or
worse than MODNet's own 512 (by more than 0.0005) and the worst change, its median forward
time, and a leave-one-out choice: for each photo, the size with the lowest mean MAE on the
other 28, scored on that photo. Nothing here is imported by the package.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from research import leave_one_out, truth_kind

from cutout.config import Settings
from cutout.engine import local_engine, model_engine
from cutout.engine.fused import FusedEngine
from cutout.imaging.decode import Limits, load_image
from cutout.imaging.fuse import fuse
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, mean_score, score

LIMITS = Limits(max_bytes=1 << 30, max_pixels=10**9)
SIZES = (512, 448, 384, 352, 320, 288, 256)
REFERENCE = 512  # MODNet's own recipe


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    settings = Settings.from_env(dotenv_path=None)
    engine = local_engine(settings)
    assert isinstance(engine, FusedEngine)
    spec = engine.secondary.spec
    # one compiled MODNet (model_engine shares it), seen through specs of other input sizes
    variants = {
        size: model_engine(dataclasses.replace(spec, input_size=size), settings) for size in SIZES
    }
    scores: dict[tuple[str, int], list[Score]] = {}
    seconds: dict[int, list[float]] = {size: [] for size in SIZES}
    for path in sorted((testdata / "images").iterdir()):
        photo = load_image(path.read_bytes(), LIMITS)
        rgb = model_input(photo)
        main = engine.primary.predict_mask(rgb)
        with Image.open(testdata / "masks" / f"{path.stem}.png") as truth:
            kind = truth_kind(truth)
            for size, variant in variants.items():
                variant.predict_mask(rgb)  # a new shape compiles on its first run: time the next
                started = time.perf_counter()
                soft = variant.predict_mask(rgb)
                seconds[size].append(time.perf_counter() - started)
                alpha = full_alpha(photo, fuse(main, soft))
                scores.setdefault((kind, size), []).append(score(alpha, truth))
    print(f"{'kind':<8}{'size':>5}{'MAE / IoU':>18}{'better':>8}{'worse':>7}{'worst':>9}{'fwd':>8}")
    for (kind, size), items in sorted(scores.items()):
        delta = [a.mae - b.mae for a, b in zip(items, scores[(kind, REFERENCE)], strict=True)]
        mean = mean_score(items)
        print(
            f"{kind:<8}{size:>5}{mean.mae:>11.4f} / {mean.iou:.4f}"
            f"{sum(d < -0.0005 for d in delta):>8}{sum(d > 0.0005 for d in delta):>7}"
            f"{max(delta):>+9.4f}{statistics.median(seconds[size]):>7.3f}s"
        )
    errors = {s: [x.mae for kind in ("binary", "soft") for x in scores[(kind, s)]] for s in SIZES}
    picks = leave_one_out(SIZES, lambda s: errors[s])
    held_out = [errors[pick][i] - errors[REFERENCE][i] for i, pick in enumerate(picks)]
    print(f"leave-one-out picks {dict(Counter(picks))}; held-out MAE change against {REFERENCE}:")
    print(f"  mean {np.mean(held_out):+.4f}, worst photo {max(held_out):+.4f}")


if __name__ == "__main__":
    main()
