"""Touch-up replay speed at 12 MP: a studio session, and the bound a save may cost.

Run by ``make bench``. Sessions are hand-like strokes (smooth random walks sampled as a pointer
reports them), replayed on a 4000x3000 alpha; the previous replay (one numpy pass per segment
over the segment's box) runs the same sessions in the same run, when ``--previous`` points at
a copy of it. CPU time is reported (numpy is single-threaded here), with the CPU's name.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cutout.imaging.brush import MAX_EDGE_WORK, MAX_PAIRS, Stroke, apply_strokes, plan

SIZE = (4000, 3000)


def session(
    strokes: int, points: int, radii: tuple[float, ...], softness: tuple[float, ...], seed: int = 0
) -> list[Stroke]:
    """*strokes* strokes of *points* points, 16 px apart at full size (a pointer's pace)."""
    rng = np.random.default_rng(seed)
    made = []
    for i in range(strokes):
        x, y, heading = *rng.uniform(0.1, 0.9, 2), rng.uniform(0, 2 * math.pi)
        walk = []
        for _ in range(points):
            heading += rng.normal(0, 0.3)
            x += 0.004 * math.cos(heading)
            y += 0.004 * math.sin(heading) * SIZE[0] / SIZE[1]
            walk.append((float(x), float(y)))
        made.append(
            Stroke(
                "erase" if i % 3 else "restore",
                float(rng.choice(radii)),
                float(rng.choice(softness)),
                tuple(walk),
            )
        )
    return made


SESSIONS = {
    # The page's defaults at the fit zoom of a 12 MP photo: a 40 px brush is 0.022 of the
    # width, soft edge 30 %.
    "300 strokes, page defaults": session(300, 40, (0.022,), (0.3,)),
    "300 strokes, every brush (0.002-0.08, soft 0-0.8)": session(
        300, 40, (0.002, 0.005, 0.01, 0.02, 0.04, 0.08), (0.0, 0.3, 0.8)
    ),
    "100 strokes, hard small brush": session(100, 40, (0.005,), (0.0,)),
}


def whole_saves(counts: tuple[int, ...]) -> list[tuple[int, float]]:
    """Wall seconds of whole saves through the studio (SQLite, a 12 MP record): load the
    original and the cut-out, replay, compose, encode, store, thumbnails."""
    from cutout.engine.base import Admission
    from cutout.imaging.compose import OutputOptions
    from cutout.imaging.decode import Limits
    from cutout.service import ImageService
    from cutout.storage import NewImage, NewRecord, SQLiteStore
    from cutout.studio import Studio
    from cutout.urlfetch import FetchPolicy

    photo = Image.effect_mandelbrot(SIZE, (-2.0, -1.2, 1.0, 1.2), 60).convert("RGB")
    alpha = Image.new("L", SIZE, 0)
    alpha.paste(255, (800, 600, 3200, 2400))
    original, cutout = io.BytesIO(), io.BytesIO()
    photo.save(original, "JPEG", quality=90)
    Image.merge("RGBA", (*photo.split(), alpha)).save(cutout, "PNG", compress_level=1)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        store = SQLiteStore(Path(folder))
        record = store.add(
            NewRecord(
                "bench",
                "photo",
                NewImage(original.getvalue(), "image/jpeg", *SIZE),
                NewImage(cutout.getvalue(), "image/png", *SIZE),
                "local",
                "isnet",
            ),
            limit=10,
        )
        images = ImageService(
            store=store,
            engine=lambda: None,  # type: ignore[arg-type,return-value]  # a save needs none
            admission=Admission(slots=2, max_waiting=2, timeout=60),
            limits=Limits(max_bytes=2**30, max_pixels=10**9),
            user_limit=10,
            output=OutputOptions(),
        )
        studio = Studio(images=images, fetch_policy=FetchPolicy(max_bytes=1))
        for count in counts:
            strokes = session(count, 40, (0.022,), (0.3,), seed=count)
            started = time.perf_counter()
            studio.edit("bench", record.id, strokes)
            results.append((count, time.perf_counter() - started))
    return results


def cpu_seconds(apply: Any, strokes: list[Stroke]) -> float:
    alpha = Image.new("L", SIZE, 200)
    started = time.process_time()
    apply(alpha, strokes)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--previous", type=Path, help="a copy of the previous brush.py")
    args = parser.parse_args()
    previous = _load(args.previous) if args.previous else None
    print(f"Touch-up replay at {SIZE[0]}x{SIZE[1]}, CPU seconds ({_cpu()})")
    for name, strokes in SESSIONS.items():
        plans = plan(strokes, *SIZE)
        work = sum(p.edge_work for p in plans) / MAX_EDGE_WORK
        line = f"  {name}: {cpu_seconds(apply_strokes, strokes):.2f} s ({work:.0%} of the bound)"
        if previous is not None:
            old = [previous.Stroke(s.mode, s.radius, s.softness, s.points) for s in strokes]
            line += f"; previous replay {cpu_seconds(previous.apply_strokes, old):.1f} s"
        print(line)
    print(f"  bounds: {MAX_PAIRS / 1e6:.0f} M segment-tile pairs, {MAX_EDGE_WORK / 1e6:.0f} M edge")
    print("Whole saves through the studio at 12 MP, page defaults, wall seconds:")
    for count, seconds in whole_saves((1, 100, 200, 300)):
        print(f"  {count} strokes: {seconds:.2f} s")


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("previous_brush", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
