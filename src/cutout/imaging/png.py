"""A parallel PNG encoder for the cut-out, several times faster than Pillow's on two cores.

Why not Pillow (or libpng, or spng)? They all deflate on one core, and at zlib level 1 that is
~150 ms for a 2 MP RGBA image: a sixth of the model's forward pass, the largest cost left around
it (``make bench``). Here the rows are split into strips that are filtered and deflated in
parallel threads (zlib releases the GIL), then joined into one valid zlib stream the way pigz
does it: every strip but the last ends with a sync flush, and the Adler-32 checksums of the
strips are combined. Each row uses PNG's "Up" filter, computed with numpy; it compresses
photographic cut-outs slightly better than Pillow's adaptive filtering at level 1.

At levels 1-3 the deflate itself is ISA-L's (the ``isal`` package, Intel's storage-acceleration
library): at level 1 it compresses a 2 MP cut-out 4.5x faster than zlib, and 6% smaller. Its
raw deflate streams join like zlib's. Other levels (0, 4-9) stay with zlib.

For cut-outs the alpha is joined with the colour here, strip by strip, so the full-size RGBA
image is never built, and colour under fully transparent pixels is zeroed on the way (it would
otherwise leak the removed background; see :func:`cutout.imaging.compose.cutout_rgba`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import numpy as np
from isal import isal_zlib as _isal

from cutout.machine import usable_cores

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)
STRIP_BYTES = 4 << 20  # raw bytes per strip: small enough to bound memory, big enough to deflate
ADLER_BASE = 65521
UP_FILTER = 2
_Rows = Callable[[int, int], np.ndarray]  # (top, bottom) -> rows top..bottom, HxWxC uint8


def encode(pixels: np.ndarray, *, level: int = 1, icc_profile: bytes | None = None) -> bytes:
    """Encode an HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA) uint8 array as PNG."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return _encode(
        pixels.shape[0],
        pixels.shape[1],
        pixels.shape[2],
        lambda top, bottom: pixels[top:bottom],
        level,
        icc_profile,
    )


def encode_cutout(
    rgb: np.ndarray, alpha: np.ndarray, *, level: int = 1, icc_profile: bytes | None = None
) -> bytes:
    """Encode RGB + alpha as RGBA PNG, zeroing the colour of fully transparent pixels."""
    height, width = alpha.shape

    def rows(top: int, bottom: int) -> np.ndarray:
        strip = np.empty((bottom - top, width, 4), np.uint8)
        opacity = alpha[top:bottom]
        # colour * (alpha != 0): a third of the time of masked assignment
        np.multiply(rgb[top:bottom], (opacity != 0)[..., None], out=strip[..., :3])
        strip[..., 3] = opacity
        return strip

    return _encode(height, width, 4, rows, level, icc_profile)


def _encode(
    height: int, width: int, channels: int, rows: _Rows, level: int, icc_profile: bytes | None
) -> bytes:
    row_bytes = 1 + width * channels
    per_strip = max(1, STRIP_BYTES // row_bytes)
    bounds = [(top, min(height, top + per_strip)) for top in range(0, height, per_strip)]
    last = len(bounds) - 1

    def deflate(index: int) -> tuple[bytes, int, int]:
        top, bottom = bounds[index]
        raw = _filtered(rows, top, bottom, width, channels)
        codec = deflater(level)
        compressor = codec.compressobj(level, codec.DEFLATED, -15)  # raw deflate, no header
        flush = codec.Z_FINISH if index == last else codec.Z_SYNC_FLUSH
        return compressor.compress(raw) + compressor.flush(flush), codec.adler32(raw), len(raw)

    with ThreadPoolExecutor(max_workers=min(len(bounds), usable_cores())) as pool:
        parts = list(pool.map(deflate, range(len(bounds))))
    checksum = parts[0][1]
    for _, adler, length in parts[1:]:
        checksum = _adler32_combine(checksum, adler, length)
    stream = b"\x78\x01" + b"".join(p[0] for p in parts) + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[channels], 0, 0, 0)
    chunks = [_chunk(b"IHDR", header)]
    if icc_profile:
        chunks.append(_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))
    chunks += [_chunk(b"IDAT", stream), _chunk(b"IEND", b"")]
    return SIGNATURE + b"".join(chunks)


def deflater(level: int) -> ModuleType:
    """ISA-L for levels 1-3 (its range; far faster than zlib there), else zlib."""
    if 1 <= level <= _isal.ISAL_BEST_COMPRESSION:
        return _isal
    return zlib


def _filtered(rows: _Rows, top: int, bottom: int, width: int, channels: int) -> memoryview:
    """Scanlines top..bottom with the Up filter (each row minus the one above, mod 256).

    Written straight into the one output buffer and handed over without a copy: at 2 MP
    these copies cost as much as deflating the strip.
    """
    current = rows(top, bottom).reshape(bottom - top, width * channels)
    lines = np.empty((bottom - top, 1 + width * channels), np.uint8)
    lines[:, 0] = UP_FILTER
    np.subtract(current[1:], current[:-1], out=lines[1:, 1:])  # uint8 arithmetic wraps
    if top:
        np.subtract(current[0], rows(top - 1, top).reshape(-1), out=lines[0, 1:])
    else:
        lines[0, 1:] = current[0]  # the row above the image is zeros
    return lines.data.cast("B")


def _adler32_combine(adler1: int, adler2: int, length2: int) -> int:
    """Adler-32 of A+B from those of A and B (zlib's adler32_combine, which Python lacks)."""
    remainder = length2 % ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (remainder * sum1) % ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + ADLER_BASE - 1) % ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + ADLER_BASE - remainder) % ADLER_BASE
    return (sum2 << 16) | sum1


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
