"""Touch-up strokes on a full-resolution alpha: erase or restore, with a hard or soft edge.

The page draws strokes on a screen-sized preview and sends them resolution-free: points as
fractions of the image's width and height, the brush radius as a fraction of its width. Here
they are replayed on the full-size alpha, in order, with the same arithmetic the page's
``brush.js`` uses for its preview, so what was drawn is what is saved:

* a stroke covers each pixel by ``c = clip((radius - d) / edge, 0, 1)``, where ``d`` is the
  distance from the pixel's centre to the stroke's polyline and ``edge = max(softness * radius,
  1 px)`` (a hard brush still gets one pixel of anti-aliasing);
* within one stroke the coverage is the maximum over its segments (a stroke that crosses itself
  does not erase twice as hard), and strokes apply one after another;
* erase: ``a * (1 - c)``; restore: ``a + (255 - a) * c`` (back to fully opaque, which is what
  "bring back what the model cut away" means).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from cutout.errors import InvalidInput

Mode = Literal["erase", "restore"]
MODES: tuple[Mode, ...] = ("erase", "restore")
#: Bounds on one request: far beyond a real touch-up session, well short of a denial of service.
MAX_STROKES = 500
MAX_POINTS = 50_000
MAX_RADIUS = 0.5  # of the image width


@dataclass(frozen=True)
class Stroke:
    mode: Mode
    radius: float  # fraction of the image width
    softness: float  # 0 = hard edge ... 1 = fades all the way from the centre
    points: tuple[tuple[float, float], ...]  # (x, y) as fractions of width and height


def parse_strokes(payload: Any) -> list[Stroke]:
    """Validate the page's JSON (``{"strokes": [{"mode", "radius", "softness", "points"}]}``).

    :raises InvalidInput: saying which stroke or field is wrong.
    """
    strokes = payload.get("strokes") if isinstance(payload, dict) else None
    if not isinstance(strokes, list) or not strokes:
        raise InvalidInput('Send the strokes as JSON: {"strokes": [{"mode": "erase", ...}]}.')
    if len(strokes) > MAX_STROKES:
        raise InvalidInput(f"Too many strokes in one save (at most {MAX_STROKES}).")
    parsed = [_stroke(raw, i) for i, raw in enumerate(strokes, 1)]
    if sum(len(s.points) for s in parsed) > MAX_POINTS:
        raise InvalidInput(f"Too many points in one save (at most {MAX_POINTS}).")
    return parsed


def _stroke(raw: Any, number: int) -> Stroke:
    where = f"Stroke {number}"
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} is not an object.")
    mode = raw.get("mode")
    if mode not in MODES:
        raise InvalidInput(f"{where}: mode must be erase or restore.")
    radius = _number(raw.get("radius"), f"{where}: radius")
    softness = _number(raw.get("softness", 0), f"{where}: softness")
    if not 0 < radius <= MAX_RADIUS:
        raise InvalidInput(f"{where}: radius must be above 0 and at most {MAX_RADIUS}.")
    if not 0 <= softness <= 1:
        raise InvalidInput(f"{where}: softness must be between 0 and 1.")
    points = raw.get("points")
    if not isinstance(points, list) or not points:
        raise InvalidInput(f"{where}: points must be a non-empty list of [x, y].")
    return Stroke(mode, radius, softness, tuple(_point(p, where) for p in points))


def _point(raw: Any, where: str) -> tuple[float, float]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise InvalidInput(f"{where}: each point must be [x, y].")
    x, y = (_number(v, f"{where}: a coordinate") for v in raw)
    if not (-1 <= x <= 2 and -1 <= y <= 2):  # a little outside the frame is a real gesture
        raise InvalidInput(f"{where}: a point lies far outside the image.")
    return x, y


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{what} must be a number.")
    return float(value)


def apply_strokes(alpha: Image.Image, strokes: Sequence[Stroke]) -> Image.Image:
    """Replay *strokes* on the L-mode *alpha*; return the new alpha (same size)."""
    a = np.asarray(alpha, np.float32).copy()
    height, width = a.shape
    for stroke in strokes:
        found = _coverage(stroke, width, height)
        if found is None:
            continue
        (top, left), cover = found
        region = a[top : top + cover.shape[0], left : left + cover.shape[1]]
        if stroke.mode == "erase":
            region *= 1.0 - cover
        else:
            region += (255.0 - region) * cover
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _coverage(stroke: Stroke, width: int, height: int) -> tuple[tuple[int, int], np.ndarray] | None:
    """The stroke's coverage over its bounding box, with the box's (top, left); None if the
    stroke misses the image entirely."""
    radius = stroke.radius * width
    edge = max(stroke.softness * radius, 1.0)
    points = [(x * width, y * height) for x, y in stroke.points]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    left, right = max(0, math.floor(min(xs) - radius)), min(width, math.ceil(max(xs) + radius))
    top, bottom = max(0, math.floor(min(ys) - radius)), min(height, math.ceil(max(ys) + radius))
    if left >= right or top >= bottom:
        return None
    cover = np.zeros((bottom - top, right - left), np.float32)
    segments = list(itertools.pairwise(points)) or [(points[0], points[0])]
    for p0, p1 in segments:
        _segment_coverage(cover, (top, left), p0, p1, radius, edge)
    return (top, left), cover


def _segment_coverage(
    cover: np.ndarray,
    origin: tuple[int, int],
    p0: tuple[float, float],
    p1: tuple[float, float],
    radius: float,
    edge: float,
) -> None:
    """Raise *cover* to this segment's coverage, over the segment's own box only."""
    top, left = origin
    height, width = cover.shape
    x0 = max(0, math.floor(min(p0[0], p1[0]) - radius) - left)
    x1 = min(width, math.ceil(max(p0[0], p1[0]) + radius) - left)
    y0 = max(0, math.floor(min(p0[1], p1[1]) - radius) - top)
    y1 = min(height, math.ceil(max(p0[1], p1[1]) + radius) - top)
    if x0 >= x1 or y0 >= y1:
        return
    # Pixel centres, in image coordinates.
    px = np.arange(x0, x1, dtype=np.float32)[None, :] + (left + 0.5)
    py = np.arange(y0, y1, dtype=np.float32)[:, None] + (top + 0.5)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((px - p0[0]) * dx + (py - p0[1]) * dy) / length2, 0.0, 1.0)
    else:
        t = np.zeros((1, 1), np.float32)
    distance = np.hypot(px - (p0[0] + t * dx), py - (p0[1] + t * dy))
    c = np.clip((radius - distance) / edge, 0.0, 1.0)
    np.maximum(cover[y0:y1, x0:x1], c, out=cover[y0:y1, x0:x1])
