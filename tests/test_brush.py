"""Touch-up strokes on a full-size alpha: geometry, edges, order, resolution, validation."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cutout.errors import InvalidInput
from cutout.imaging.brush import (
    MAX_POINTS,
    MAX_RADIUS,
    MAX_STROKES,
    Stroke,
    TouchUpTooCostly,
    apply_strokes,
    parse_strokes,
    plan,
)

OPAQUE = Image.new("L", (400, 200), 255)


def dab(mode: str, x: float, y: float, radius: float, softness: float = 0.0) -> Stroke:
    return Stroke(mode, radius, softness, ((x, y),))  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int32)


def test_a_hard_dab_erases_a_disc_of_the_radius() -> None:
    """radius 0.1 of a 400 px width = 40 px, around (200, 100)."""
    out = pixels(apply_strokes(OPAQUE, [dab("erase", 0.5, 0.5, 0.1)]))

    y, x = np.mgrid[0:200, 0:400] + 0.5
    distance = np.hypot(x - 200, y - 100)
    assert (out[distance <= 39] == 0).all()
    assert (out[distance >= 40] == 255).all()
    erased = (out < 128).sum()
    assert abs(erased - math.pi * 39.5**2) / (math.pi * 39.5**2) < 0.02


def test_restore_brings_back_what_erase_took() -> None:
    erased = apply_strokes(OPAQUE, [dab("erase", 0.5, 0.5, 0.1)])
    restored = apply_strokes(erased, [dab("restore", 0.5, 0.5, 0.12)])

    assert (pixels(restored) == 255).all()


def test_restore_reaches_full_opacity_from_anything() -> None:
    half = Image.new("L", (100, 100), 77)

    out = pixels(apply_strokes(half, [dab("restore", 0.5, 0.5, 0.2)]))

    assert out[50, 50] == 255 and out[5, 5] == 77


def test_a_soft_edge_fades_from_the_inner_radius_out() -> None:
    """softness 0.5, radius 40 px: fully erased within 20 px, untouched from 40 px."""
    out = pixels(apply_strokes(OPAQUE, [dab("erase", 0.5, 0.5, 0.1, softness=0.5)]))

    row = out[100, 200:250]  # from the centre to the right
    assert (row[:19] == 0).all() and (row[40:] == 255).all()
    assert (np.diff(row) >= 0).all() and 0 < row[30] < 255  # a ramp, not a step
    assert abs(int(row[30]) - 255 * (30.5 - 20) / 20) <= 2


def test_a_line_erases_a_band_with_round_ends() -> None:
    stroke = Stroke("erase", 0.025, 0.0, ((0.25, 0.5), (0.75, 0.5)))  # 10 px radius

    out = pixels(apply_strokes(OPAQUE, [stroke]))

    assert (out[92:108, 100:300] == 0).all()
    assert (out[:88] == 255).all() and (out[112:] == 255).all()
    assert out[100, 93] == 0 and out[100, 88] == 255  # the round cap, 10 px beyond the end


def test_a_stroke_crossing_itself_does_not_erase_twice() -> None:
    """Coverage is the maximum over a stroke's segments, as in the page's preview."""
    soft = 0.8
    once = Stroke("erase", 0.05, soft, ((0.3, 0.5), (0.7, 0.5)))
    back_and_forth = Stroke("erase", 0.05, soft, ((0.3, 0.5), (0.7, 0.5), (0.3, 0.5)))
    twice = [once, once]

    single = pixels(apply_strokes(OPAQUE, [once]))
    crossing = pixels(apply_strokes(OPAQUE, [back_and_forth]))
    separate = pixels(apply_strokes(OPAQUE, twice))

    assert np.array_equal(single, crossing)
    assert (separate <= single).all() and (separate < single).any()  # two strokes do add up


def test_strokes_apply_in_order() -> None:
    erase, restore = dab("erase", 0.5, 0.5, 0.1), dab("restore", 0.5, 0.5, 0.1)

    assert pixels(apply_strokes(OPAQUE, [erase, restore]))[100, 200] == 255
    assert pixels(apply_strokes(OPAQUE, [restore, erase]))[100, 200] == 0


def test_strokes_outside_the_image_change_nothing_and_edges_clip() -> None:
    outside = [dab("erase", -0.5, -0.5, 0.1), Stroke("erase", 0.1, 0, ((1.5, 1.5), (1.9, 1.2)))]
    assert np.array_equal(pixels(apply_strokes(OPAQUE, outside)), pixels(OPAQUE))

    corner = pixels(apply_strokes(OPAQUE, [dab("erase", 0.0, 0.0, 0.1)]))
    assert corner[0, 0] == 0 and corner[0, 60] == 255


def test_the_same_strokes_fit_any_resolution() -> None:
    """The page draws on a small preview; the server replays on the full size."""
    strokes = [
        Stroke("erase", 0.04, 0.3, ((0.1, 0.2), (0.5, 0.6), (0.9, 0.3))),
        Stroke("restore", 0.02, 0.0, ((0.5, 0.6),)),
    ]
    small = apply_strokes(Image.new("L", (200, 100), 255), strokes)
    large = apply_strokes(Image.new("L", (1600, 800), 255), strokes)

    reduced = large.resize(small.size, Image.Resampling.BOX)
    assert np.abs(pixels(reduced) - pixels(small)).mean() < 3


def test_the_alpha_keeps_its_size_and_mode() -> None:
    out = apply_strokes(Image.new("L", (37, 91), 200), [dab("erase", 0.5, 0.5, 0.3, 1.0)])

    assert out.mode == "L" and out.size == (37, 91)


def valid(**change: Any) -> dict[str, Any]:
    stroke: dict[str, Any] = {"mode": "erase", "radius": 0.05, "softness": 0.3,
                              "points": [[0.1, 0.2], [0.3, 0.4]]}  # fmt: skip
    stroke.update(change)
    return {"strokes": [stroke]}


def test_the_page_json_parses() -> None:
    assert parse_strokes(valid()) == [Stroke("erase", 0.05, 0.3, ((0.1, 0.2), (0.3, 0.4)))]
    assert parse_strokes(valid(mode="restore", softness=0))[0].mode == "restore"
    assert parse_strokes({"strokes": [{"mode": "erase", "radius": 1 / 3, "points": [[0, 1]]}]})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "Send the strokes as JSON"),
        ([], "Send the strokes as JSON"),
        ({"strokes": []}, "Send the strokes as JSON"),
        ({"strokes": "x"}, "Send the strokes as JSON"),
        ({"strokes": [7]}, "Stroke 1 is not an object"),
        (valid(mode="paint"), "mode must be erase or restore"),
        (valid(radius=0), "radius must be above 0"),
        (valid(radius=0.9), "radius must be above 0 and at most 0.5"),
        (valid(radius="big"), "radius must be a number"),
        (valid(radius=True), "radius must be a number"),
        (valid(radius=float("nan")), "radius must be a number"),
        (valid(softness=2), "softness must be between 0 and 1"),
        (valid(points=[]), "points must be a non-empty list"),
        (valid(points=[[1, 2, 3]]), "each point must be [x, y]"),
        (valid(points=[["a", 1]]), "a coordinate must be a number"),
        (valid(points=[[5, 0.5]]), "far outside the image"),
        ({"strokes": [valid()["strokes"][0]] * (MAX_STROKES + 1)}, "Too many strokes"),
        (valid(points=[[0.5, 0.5]] * (MAX_POINTS + 1)), "Too many points"),
    ],
)
def test_bad_strokes_are_refused_saying_what_is_wrong(payload: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_strokes(payload)


# -- the replay's exactness and its cost bound ----------------------------------------------


def reference(alpha: Image.Image, strokes: list[Stroke]) -> np.ndarray:
    """The definition, written plainly: every pixel against every segment (small images)."""
    a = np.asarray(alpha, np.float64).copy()
    height, width = a.shape
    py, px = np.mgrid[0:height, 0:width] + 0.5
    for stroke in strokes:
        radius = stroke.radius * width
        edge = max(stroke.softness * radius, 1.0)
        points = [(x * width, y * height) for x, y in stroke.points]
        pairs = list(itertools.pairwise(points)) or [(points[0], points[0])]
        distance = np.full(a.shape, np.inf)
        for (x0, y0), (x1, y1) in pairs:
            dx, dy = x1 - x0, y1 - y0
            length2 = dx * dx + dy * dy
            t = np.clip(((px - x0) * dx + (py - y0) * dy) / length2, 0, 1) if length2 else 0.0
            distance = np.minimum(distance, np.hypot(px - x0 - t * dx, py - y0 - t * dy))
        cover = np.clip((radius - distance) / edge, 0, 1)
        a = a * (1 - cover) if stroke.mode == "erase" else a + (255 - a) * cover
    return np.clip(np.rint(a), 0, 255).astype(np.int32)


def hand_strokes(count: int, seed: int, softness: float) -> list[Stroke]:
    """Strokes as a hand draws them: smooth random walks, brushes of several sizes."""
    rng = np.random.default_rng(seed)
    strokes = []
    for i in range(count):
        x, y, heading = *rng.uniform(0.1, 0.9, 2), rng.uniform(0, 2 * math.pi)
        points = []
        for _ in range(int(rng.integers(1, 40))):
            heading += rng.normal(0, 0.3)
            x, y = x + 0.01 * math.cos(heading), y + 0.01 * math.sin(heading)
            points.append((float(x), float(y)))
        radius = float(rng.choice([0.005, 0.02, 0.06, 0.15]))
        strokes.append(Stroke("erase" if i % 3 else "restore", radius, softness, tuple(points)))
    return strokes


@pytest.mark.parametrize("softness", [0.0, 0.3, 1.0])
def test_the_replay_matches_the_definition(softness: float) -> None:
    """Tiles on the strokes' edges are measured exactly (hard brushes: to the rounding); wide
    soft ramps are measured on every other pixel and interpolated, within a few levels."""
    rng = np.random.default_rng(7)
    alpha = Image.fromarray(rng.integers(0, 256, (240, 360)).astype(np.uint8), "L")
    strokes = hand_strokes(12, seed=int(softness * 10), softness=softness)

    got, want = pixels(apply_strokes(alpha, strokes)), reference(alpha, strokes)

    error = np.abs(got - want)
    assert error.max() <= (1 if softness == 0 else 10)
    assert error.mean() < 0.05


def test_a_touch_up_too_costly_is_refused_before_any_work() -> None:
    """One stroke of 50,000 points with a brush half the photo wide took 196 s on a 0.3 MP
    record: it is refused at once, saying what to do."""
    rng = np.random.default_rng(1)
    points = tuple((float(x), float(y)) for x, y in rng.uniform(0, 1, (MAX_POINTS, 2)))
    attack = [Stroke("erase", MAX_RADIUS, 0.0, points)]

    with pytest.raises(TouchUpTooCostly, match="too much to apply at once"):
        plan(attack, 640, 480)
    with pytest.raises(TouchUpTooCostly):
        apply_strokes(Image.new("L", (640, 480), 255), attack)


def test_the_cost_bound_counts_the_records_resolution() -> None:
    """The same strokes cost more on a bigger photo: accepted on a small one, refused on a
    huge one, so the bound follows what the replay would really do."""
    strokes = [Stroke("erase", 0.3, 0.5, tuple((i / 2000, 0.5) for i in range(2000)))]

    plan(strokes, 400, 300)
    with pytest.raises(TouchUpTooCostly):
        plan(strokes, 40_000, 30_000)
