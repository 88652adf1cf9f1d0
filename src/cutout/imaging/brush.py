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

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from cutout.errors import InvalidInput, RequestTooCostly

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
    """Replay *strokes* on the L-mode *alpha*; return the new alpha (same size).

    :raises TouchUpTooCostly: the strokes would cost more than one save may (see :func:`plan`).
    """
    plans = plan(strokes, *alpha.size)
    # The tiles are the only full-size float array: the alpha goes in as bytes and the result
    # is rounded in place (a float copy of the alpha and two rounding temporaries added
    # 12 bytes per pixel to a touch-up's peak: 212 MB traced at 16 MP, now 105 MB)
    tiles = _Tiles(np.asarray(alpha))
    for stroke_plan in plans:
        stroke_plan.apply(tiles)
    result = tiles.image()
    np.rint(result, out=result)
    np.clip(result, 0, 255, out=result)
    return Image.fromarray(result.astype(np.uint8), "L")


# -- the replay: whole strokes at once, on tiles --------------------------------------------
#
# The image is cut into TILE x TILE tiles. For each stroke, every segment names the tiles its
# capsule (the segment widened by the radius) can reach, and the distance from each such
# tile's centre to the segment is taken (numpy, over all segment-tile pairs at once). A tile
# whose nearest segment is close enough is covered entirely (no per-pixel work), one too far
# is untouched, and only the tiles on the stroke's edge get the exact per-pixel distance, to
# just the segments that can be nearest there. The result is the same arithmetic as brush.js,
# with work in proportion to the stroke's edge, not to its segments times its bounding box.

TILE = 16
#: From a tile's centre to its farthest pixel centre.
_HALF_DIAGONAL = (TILE - 1) / math.sqrt(2)
#: One save's bounds, at the record's resolution: segment-tile pairs, and pixel-segment
#: distances on the strokes' edges. A long studio session (300 hand-drawn strokes at the
#: page's default brush on a 12 MP photo) needs about 40 % of the second; both are checked
#: before any pixel changes, and the most they allow takes about 4 s of one core (make bench).
MAX_PAIRS = 12_000_000
MAX_EDGE_WORK = 100_000_000
_CHUNK = 1_000_000  # pairs (or edge pixels) handled per numpy pass: bounds the memory


class TouchUpTooCostly(RequestTooCostly):
    """The strokes would take too long to replay at this resolution (413)."""


def plan(strokes: Sequence[Stroke], width: int, height: int) -> list[_StrokePlan]:
    """Work out which tiles each stroke covers, checking the cost before any pixel changes.

    :raises TouchUpTooCostly: beyond :data:`MAX_PAIRS` or :data:`MAX_EDGE_WORK`.
    """
    check_cost(strokes, width, height)
    plans = [_plan_stroke(s, width, height) for s in strokes]
    if sum(p.edge_work for p in plans) > MAX_EDGE_WORK:
        raise _too_costly(width, height)
    return plans


def check_cost(strokes: Sequence[Stroke], width: int, height: int) -> None:
    """The first, cheap half of :func:`plan`'s check (segment-tile pairs), for callers that
    want to refuse before they load anything. :raises TouchUpTooCostly:"""
    pairs = sum(_pair_count(_segments(s, width, height)) for s in strokes)
    if pairs > MAX_PAIRS:
        raise _too_costly(width, height)


def _too_costly(width: int, height: int) -> TouchUpTooCostly:
    return TouchUpTooCostly(
        f"This touch-up is too much to apply at once on a {width}x{height} photo: save after "
        "fewer strokes, or use a smaller or harder brush for long strokes."
    )


@dataclass(frozen=True)
class _Segments:
    a: np.ndarray  # (n, 2) start points, pixels
    b: np.ndarray  # (n, 2) end points
    lo: np.ndarray  # (n, 2) first tile (x, y) each capsule reaches
    hi: np.ndarray  # (n, 2) last tile, inclusive
    radius: float
    edge: float


def _segments(stroke: Stroke, width: int, height: int) -> _Segments:
    """The stroke's segments in pixels, with the tile range of each capsule (off-image ones
    dropped); a single point is a segment of length zero."""
    points = np.asarray(stroke.points, np.float64) * (width, height)
    a, b = (points[:-1], points[1:]) if len(points) > 1 else (points, points)
    radius = stroke.radius * width
    edge = max(stroke.softness * radius, 1.0)
    low, high = np.minimum(a, b) - radius, np.maximum(a, b) + radius
    inside = (high[:, 0] >= 0) & (high[:, 1] >= 0) & (low[:, 0] < width) & (low[:, 1] < height)
    last = ((width - 1) // TILE, (height - 1) // TILE)
    lo = np.clip(np.floor(low[inside] / TILE), 0, last).astype(np.int64)
    hi = np.clip(np.floor(high[inside] / TILE), 0, last).astype(np.int64)
    return _Segments(a[inside], b[inside], lo, hi, radius, edge)


def _pair_count(seg: _Segments) -> int:
    return int(np.prod(seg.hi - seg.lo + 1, axis=1).sum())


def _pairs(seg: _Segments, first: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segment index, tile x and tile y of every pair of segments ``first:stop``."""
    span = seg.hi[first:stop] - seg.lo[first:stop] + 1
    counts = span[:, 0] * span[:, 1]
    index = np.repeat(np.arange(first, stop), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    local = index - first
    tx = seg.lo[index, 0] + k % span[local, 0]
    ty = seg.lo[index, 1] + k // span[local, 0]
    return index, tx, ty


def _chunks(seg: _Segments) -> Iterator[tuple[int, int]]:
    """Ranges of segments whose pairs number about :data:`_CHUNK` each (at least one)."""
    counts = np.prod(seg.hi - seg.lo + 1, axis=1)
    ends = np.cumsum(counts)
    first = 0
    while first < len(counts):
        base = ends[first - 1] if first else 0
        stop = max(first + 1, int(np.searchsorted(ends, base + _CHUNK, side="right")))
        yield first, stop
        first = stop


def _distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points (px, py) to segments a-b (numpy broadcasting; the same formula as
    brush.js: the nearest point of the segment, clamped to its ends)."""
    ax, ay = a[..., 0], a[..., 1]
    dx, dy = b[..., 0] - ax, b[..., 1] - ay
    length2 = dx * dx + dy * dy
    inverse = np.divide(1.0, length2, out=np.zeros_like(length2), where=length2 > 0)
    rx, ry = px - ax, py - ay
    t = rx * dx + ry * dy
    t *= inverse  # a point-like segment (length 0) gets t = 0: its start
    np.clip(t, 0.0, 1.0, out=t)
    ex = rx - t * dx
    ey = ry - t * dy
    result: np.ndarray = np.hypot(ex, ey, out=ex)
    return result


@dataclass(frozen=True)
class _StrokePlan:
    mode: Mode
    full: tuple[np.ndarray, np.ndarray]  # (ty, tx) of the tiles covered entirely
    edge_tiles: tuple[np.ndarray, np.ndarray]  # (ty, tx) of the tiles on the stroke's edge
    candidates: tuple[np.ndarray, np.ndarray]  # (edge tile number, segment) pairs to measure
    coarse: np.ndarray  # per edge tile: measured on the lattice of every other pixel
    segments: _Segments

    @property
    def edge_work(self) -> int:
        tile = self.candidates[0]
        on_lattice = int(self.coarse[tile].sum())
        return on_lattice * (TILE // 2 + 1) ** 2 + (len(tile) - on_lattice) * TILE * TILE

    def apply(self, tiles: _Tiles) -> None:
        # Fully covered tiles become transparent (erase) or opaque (restore) outright.
        tiles.data[self.full[0], :, self.full[1], :] = 0.0 if self.mode == "erase" else 255.0
        ty, tx = self.edge_tiles
        if len(ty) == 0:
            return
        cover = self._edge_cover()
        region = tiles.data[ty, :, tx, :]  # (n, TILE, TILE)
        if self.mode == "erase":
            region *= 1.0 - cover
        else:
            region += (255.0 - region) * cover
        tiles.data[ty, :, tx, :] = region

    def _edge_cover(self) -> np.ndarray:
        """Each edge tile's per-pixel coverage, from the distance to its nearest segment.

        Tiles in a soft ramp (one at least :data:`COARSE_EDGE` pixels wide) away from the
        stroke's line take the squared distance on a lattice of every other pixel and
        interpolate it (it is smooth there, unlike the distance on the line itself): the
        coverage moves by less than 1/255 almost everywhere and by at most about 10/255 on
        the rare creases where two parts of a stroke meet, and four times fewer distances
        make long soft strokes several times faster. Every other tile is measured pixel by pixel.
        """
        distance = np.empty((len(self.edge_tiles[0]), TILE, TILE), np.float32)
        tile, index = self.candidates
        for coarse in (False, True):
            chosen = self.coarse[tile] == coarse
            tiles = np.flatnonzero(self.coarse == coarse)
            if len(tiles) == 0:
                continue
            # Tile numbers within this group (both lists are sorted by tile number).
            local = np.searchsorted(tiles, tile[chosen])
            found = self._nearest(tiles, local, index[chosen], coarse)
            distance[tiles] = np.sqrt(_interpolate(np.square(found))) if coarse else found
        seg = self.segments
        c = np.subtract(np.float32(seg.radius), distance, out=distance)
        c *= np.float32(1.0 / seg.edge)
        return np.clip(c, 0.0, 1.0, out=c)

    def _nearest(
        self, tiles: np.ndarray, tile: np.ndarray, index: np.ndarray, coarse: bool
    ) -> np.ndarray:
        """Distance to the nearest candidate segment, per pixel (or lattice point) of
        *tiles* (edge tile numbers); candidate k belongs to ``tiles[tile[k]]``."""
        seg = self.segments
        spacing = 2 if coarse else 1
        offsets = np.arange(0, TILE + spacing - 1, spacing, dtype=np.float32) + np.float32(0.5)
        ty, tx = self.edge_tiles[0][tiles], self.edge_tiles[1][tiles]
        nearest = np.full((len(tiles), len(offsets), len(offsets)), np.inf, np.float32)
        step = max(1, _CHUNK // len(offsets) ** 2)
        for start in range(0, len(tile), step):
            t, i = tile[start : start + step], index[start : start + step]
            # Relative to each tile's corner (float32 keeps 1/1000 px there, at any position).
            origin = np.stack([tx[t], ty[t]], axis=1) * TILE
            a = (seg.a[i] - origin).astype(np.float32)
            b = (seg.b[i] - origin).astype(np.float32)
            _minimum_into(nearest, t, _pixel_distance(offsets, a, b))
        return nearest


#: Ramps at least this wide (pixels) are measured on every other pixel (see _edge_cover),
#: in tiles no nearer than NEAR_LINE pixels to the stroke's line.
COARSE_EDGE = 16.0
NEAR_LINE = 4.0


def _interpolate(lattice: np.ndarray) -> np.ndarray:
    """(n, TILE/2 + 1, TILE/2 + 1) values at every other pixel centre (and one beyond the
    tile) -> (n, TILE, TILE), bilinearly."""
    half = TILE // 2
    rows = np.empty((len(lattice), TILE, half + 1), np.float32)
    rows[:, 0::2] = lattice[:, :half]
    rows[:, 1::2] = (lattice[:, :half] + lattice[:, 1:]) / 2
    out = np.empty((len(lattice), TILE, TILE), np.float32)
    out[:, :, 0::2] = rows[:, :, :half]
    out[:, :, 1::2] = (rows[:, :, :half] + rows[:, :, 1:]) / 2
    return out


def _pixel_distance(offsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from the points (x, y) of ``offsets`` x ``offsets`` in a tile to each
    segment a[k]-b[k]: (n, len(offsets), len(offsets)), indexed [k, y, x].

    The same distance as :func:`_distance`, written with the segment's unit direction so
    that most of the arithmetic happens on rows and columns before it is spread over tiles.
    """
    delta = b - a
    length = np.hypot(delta[:, 0], delta[:, 1])
    point = length == 0  # a dab: the distance to its point
    ux = np.where(point, 1.0, delta[:, 0] / np.where(point, 1.0, length)).astype(np.float32)
    uy = np.where(point, 0.0, delta[:, 1] / np.where(point, 1.0, length)).astype(np.float32)
    rx = offsets[None, :] - a[:, :1]  # (n, m): x of each column, from a
    ry = offsets[None, :] - a[:, 1:]  # (n, m): y of each row, from a
    shape = (len(a), 1, len(offsets))
    along = (rx * ux[:, None]).reshape(shape) + (ry * uy[:, None])[:, :, None]
    across = (rx * uy[:, None]).reshape(shape) - (ry * ux[:, None])[:, :, None]
    half = (length / 2).astype(np.float32)[:, None, None]
    along -= half  # beyond either end by |along - L/2| - L/2
    np.abs(along, out=along)
    along -= half
    np.maximum(along, 0.0, out=along)
    result: np.ndarray = np.hypot(along, across, out=across)
    return result


def _minimum_into(target: np.ndarray, tile: np.ndarray, values: np.ndarray) -> None:
    """``target[tile[k]] = min(target[tile[k]], values[k])`` for every k, *tile* sorted.

    Taken rank by rank within each tile's run (the first candidate of every tile, then the
    second...), so no index repeats within one fancy-indexed update (ufunc.at is far slower).
    """
    if len(tile) == 0:
        return
    starts = np.flatnonzero(np.r_[True, tile[1:] != tile[:-1]])
    rank = np.arange(len(tile)) - np.repeat(starts, np.diff(np.r_[starts, len(tile)]))
    for r in range(int(rank.max()) + 1):
        chosen = np.flatnonzero(rank == r)
        targets = tile[chosen]
        target[targets] = np.minimum(target[targets], values[chosen])


def _plan_stroke(stroke: Stroke, width: int, height: int) -> _StrokePlan:
    seg = _segments(stroke, width, height)
    empty = np.zeros(0, np.int64)
    if len(seg.a) == 0:
        return _StrokePlan(
            stroke.mode, (empty, empty), (empty, empty), (empty, empty), empty.astype(bool), seg
        )
    origin = seg.lo.min(axis=0)
    shape = tuple(seg.hi.max(axis=0) - origin + 1)[::-1]  # (rows, columns) of tiles
    chunks = list(_chunks(seg))
    # Almost every stroke is one chunk: its pairs are kept for the second pass, not redone.
    kept = [_located(seg, origin, *chunks[0])] if len(chunks) == 1 else None
    nearest = np.full(shape, np.inf)
    for row, col, _, d in kept or (_located(seg, origin, *c) for c in chunks):
        np.minimum.at(nearest, (row, col), d)
    full = nearest + _HALF_DIAGONAL <= seg.radius - seg.edge
    edge = ~full & (nearest - _HALF_DIAGONAL < seg.radius)
    number = np.full(shape, -1, np.int64)
    number[edge] = np.arange(int(edge.sum()))
    tiles, segments = [], []
    for row, col, index, d in kept or (_located(seg, origin, *c) for c in chunks):
        # The segments that may be nearest somewhere in a tile of the stroke's edge.
        keep = edge[row, col] & (d <= nearest[row, col] + 2 * _HALF_DIAGONAL)
        tiles.append(number[row[keep], col[keep]])
        segments.append(index[keep])
    tile_numbers, segment_numbers = np.concatenate(tiles), np.concatenate(segments)
    order = np.argsort(tile_numbers, kind="stable")
    full_rows, full_cols = np.nonzero(full)
    edge_rows, edge_cols = np.nonzero(edge)
    away = nearest[edge_rows, edge_cols] - _HALF_DIAGONAL >= NEAR_LINE
    return _StrokePlan(
        stroke.mode,
        (full_rows + origin[1], full_cols + origin[0]),
        (edge_rows + origin[1], edge_cols + origin[0]),
        (tile_numbers[order], segment_numbers[order]),
        away & (seg.edge >= COARSE_EDGE),
        seg,
    )


def _located(
    seg: _Segments, origin: np.ndarray, first: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of segments ``first:stop``: tile row and column (from *origin*), segment index,
    and the distance from the tile's centre to the segment."""
    index, tx, ty = _pairs(seg, first, stop)
    return ty - origin[1], tx - origin[0], index, _centre_distance(seg, index, tx, ty)


def _centre_distance(seg: _Segments, index: np.ndarray, tx: np.ndarray, ty: np.ndarray) -> Any:
    centre_x = tx * TILE + TILE / 2
    centre_y = ty * TILE + TILE / 2
    return _distance(centre_x, centre_y, seg.a[index], seg.b[index])


class _Tiles:
    """An image padded to whole tiles, addressed as ``data[tile_y, :, tile_x, :]``."""

    def __init__(self, image: np.ndarray) -> None:
        self.height, self.width = image.shape
        rows, cols = -(-self.height // TILE), -(-self.width // TILE)
        padded = np.zeros((rows * TILE, cols * TILE), np.float32)
        padded[: self.height, : self.width] = image
        self.data = padded.reshape(rows, TILE, cols, TILE)

    def image(self) -> np.ndarray:
        rows, _, cols, _ = self.data.shape
        return self.data.reshape(rows * TILE, cols * TILE)[: self.height, : self.width]
