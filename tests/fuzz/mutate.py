"""Mutated real photos for the fuzzing campaign: every accepted format, then damaged.

Seeds are one real test photo (and its ground-truth mask, for an alpha channel), small, encoded
in every format we accept and several variants of each (EXIF orientation and an ICC profile,
progressive JPEG, palette and 16-bit PNG, lossless WebP with alpha, CMYK TIFF...). A Hypothesis
strategy picks a seed and applies one to three mutations: truncation (anywhere, or in the
tail), bit flips (anywhere, or past the headers), overwritten
or inserted or duplicated bytes, PNG chunks and JPEG segments reordered, dropped or repeated
(with valid CRCs, so the damage reaches the decoder), and header fields (PNG IHDR, JPEG SOF,
BMP, GIF) set to huge, zero or odd sizes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import strategies as st
from PIL import Image

Mutation = Callable[[bytes, st.DataObject], bytes]
#: Declared sizes that stress the limits: zero, one, odd, just over the pixel limit, absurd.
SIZES = (0, 1, 2, 3, 255, 7071, 7072, 65_535, 100_000, 2**31 - 1, 2**32 - 1)


@dataclass(frozen=True)
class Seed:
    name: str
    data: bytes


def seeds(photo: Path, mask: Path) -> list[Seed]:
    """The photo (reduced to ~160 px: decoding stays fast) in every format and variant."""
    with Image.open(photo) as p, Image.open(mask) as m:
        rgb = p.convert("RGB")
        rgb.thumbnail((160, 160))
        alpha = m.convert("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    icc = _small_icc()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    out = [
        Seed("jpeg", _save(rgb, "JPEG", quality=85)),
        Seed("jpeg-exif-icc", _save(rgb, "JPEG", quality=85, exif=exif, icc_profile=icc)),
        Seed("jpeg-progressive", _save(rgb, "JPEG", quality=80, progressive=True)),
        Seed("jpeg-grey", _save(rgb.convert("L"), "JPEG")),
        Seed("png", _save(rgb, "PNG")),
        Seed("png-rgba", _save(rgba, "PNG")),
        Seed("png-palette", _save(rgba.convert("P"), "PNG", transparency=0)),
        Seed("png-16bit", _save(_grey16(rgb), "PNG")),
        Seed("png-interlaced", _save(rgb, "PNG", interlace=1)),
        Seed("webp", _save(rgb, "WEBP", quality=80)),
        Seed("webp-lossless-rgba", _save(rgba, "WEBP", lossless=True)),
        Seed("bmp", _save(rgb, "BMP")),
        Seed("tiff", _save(rgb, "TIFF", compression="tiff_deflate")),
        Seed("tiff-cmyk", _save(rgb.convert("CMYK"), "TIFF")),
        Seed("gif", _save(rgba.convert("P"), "GIF")),
        Seed("heic", _save(rgb, "HEIF", quality=70)),
        Seed("avif", _save(rgb, "AVIF", quality=60)),
        # Images, but in formats we refuse (415): the refusal path gets fuzzed too.
        Seed("ico", _save(rgb, "ICO")),
        Seed("tga", _save(rgb, "TGA")),
        Seed("pcx", _save(rgb, "PCX")),
    ]
    return out


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _grey16(rgb: Image.Image) -> Image.Image:
    values = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(values.astype(np.uint16))


def _small_icc() -> bytes:
    from tests.helpers import matrix_icc_profile

    return matrix_icc_profile((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609),
                              (0.1492, 0.0632, 0.7446))  # fmt: skip


# -- generic byte mutations --------------------------------------------------------------------


def truncate(data: bytes, draw: st.DataObject) -> bytes:
    return data[: draw.draw(st.integers(0, max(0, len(data) - 1)), label="truncate at")]


def flip_bits(data: bytes, draw: st.DataObject) -> bytes:
    if not data:
        return data
    buffer = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 16), label="flips")):
        bit = draw.draw(st.integers(0, len(buffer) * 8 - 1))
        buffer[bit // 8] ^= 1 << (bit % 8)
    return bytes(buffer)


def damage_the_body(data: bytes, draw: st.DataObject) -> bytes:
    """Flip bits past the first 10 % of the file: headers survive, the decoder gets the rest."""
    if len(data) < 20:
        return flip_bits(data, draw)
    buffer = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 32), label="flips")):
        at = draw.draw(st.integers(len(data) // 10, len(data) - 1))
        buffer[at] ^= 1 << draw.draw(st.integers(0, 7))
    return bytes(buffer)


def cut_the_tail(data: bytes, draw: st.DataObject) -> bytes:
    """Truncate in the last half: a download or copy cut short."""
    return data[: draw.draw(st.integers(len(data) // 2, max(len(data) // 2, len(data) - 1)))]


def overwrite(data: bytes, draw: st.DataObject) -> bytes:
    if not data:
        return data
    start = draw.draw(st.integers(0, len(data) - 1), label="overwrite at")
    fill = draw.draw(
        st.one_of(st.binary(min_size=1, max_size=64), st.sampled_from([b"\x00" * 32, b"\xff" * 32]))
    )
    return data[:start] + fill + data[start + len(fill) :]


def insert(data: bytes, draw: st.DataObject) -> bytes:
    at = draw.draw(st.integers(0, len(data)), label="insert at")
    return data[:at] + draw.draw(st.binary(min_size=1, max_size=256)) + data[at:]


def duplicate(data: bytes, draw: st.DataObject) -> bytes:
    if len(data) < 2:
        return data + data
    start = draw.draw(st.integers(0, len(data) - 2))
    end = draw.draw(st.integers(start + 1, min(len(data), start + 4096)))
    return data[:end] + data[start:end] + data[end:]


# -- PNG: chunks and IHDR ------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return chunks


def _png(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray(PNG_SIGNATURE)
    for kind, body in chunks:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)
    return bytes(out)


def png_chunks(data: bytes, draw: st.DataObject) -> bytes:
    """Reorder, drop or repeat PNG chunks, with correct CRCs."""
    chunks = _png_chunks(data)
    if not chunks:
        return flip_bits(data, draw)
    action = draw.draw(st.sampled_from(["shuffle", "drop", "repeat", "split-idat"]))
    if action == "shuffle":
        chunks = draw.draw(st.permutations(chunks))
    elif action == "drop":
        del chunks[draw.draw(st.integers(0, len(chunks) - 1))]
    elif action == "repeat":
        i = draw.draw(st.integers(0, len(chunks) - 1))
        chunks.insert(i, chunks[i])
    else:
        chunks = [c for k, b in chunks for c in ([(k, b[: len(b) // 2]), (k, b[len(b) // 2 :])]
                                                 if k == b"IDAT" else [(k, b)])]  # fmt: skip
    return _png(chunks)


def png_header(data: bytes, draw: st.DataObject) -> bytes:
    """Set IHDR's width, height, bit depth or colour type to something else (CRC fixed)."""
    chunks = _png_chunks(data)
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        return flip_bits(data, draw)
    width, height, depth, colour, *rest = struct.unpack(">IIBBBBB", chunks[0][1])
    field = draw.draw(st.sampled_from(["width", "height", "both", "depth", "colour"]))
    if field in ("width", "both"):
        width = draw.draw(st.sampled_from(SIZES))
    if field in ("height", "both"):
        height = draw.draw(st.sampled_from(SIZES))
    if field == "depth":
        depth = draw.draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32, 255]))
    if field == "colour":
        colour = draw.draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 255]))
    chunks[0] = (b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, *rest))
    return _png(chunks)


# -- JPEG: segments and SOF --------------------------------------------------------------------


def _jpeg_segments(data: bytes) -> tuple[list[bytes], bytes] | None:
    """The marker segments before the scan data, and the rest (SOS onwards)."""
    if not data.startswith(b"\xff\xd8"):
        return None
    segments: list[bytes] = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return segments, data[pos:]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        segments.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return None


def jpeg_segments(data: bytes, draw: st.DataObject) -> bytes:
    parsed = _jpeg_segments(data)
    if not parsed or not parsed[0]:
        return flip_bits(data, draw)
    segments, scan = parsed
    action = draw.draw(st.sampled_from(["shuffle", "drop", "repeat"]))
    if action == "shuffle":
        segments = draw.draw(st.permutations(segments))
    elif action == "drop":
        del segments[draw.draw(st.integers(0, len(segments) - 1))]
    else:
        i = draw.draw(st.integers(0, len(segments) - 1))
        segments.insert(i, segments[i])
    return b"\xff\xd8" + b"".join(segments) + scan


def jpeg_header(data: bytes, draw: st.DataObject) -> bytes:
    """Change the frame header's height/width (SOF0/1/2) or its segment length."""
    parsed = _jpeg_segments(data)
    if not parsed:
        return flip_bits(data, draw)
    segments, scan = parsed
    for i, segment in enumerate(segments):
        if segment[1] in (0xC0, 0xC1, 0xC2) and len(segment) >= 9:
            body = bytearray(segment)
            field = draw.draw(st.sampled_from(["height", "width", "length", "components"]))
            if field == "height":
                body[5:7] = struct.pack(">H", draw.draw(st.sampled_from(SIZES)) & 0xFFFF)
            elif field == "width":
                body[7:9] = struct.pack(">H", draw.draw(st.sampled_from(SIZES)) & 0xFFFF)
            elif field == "length":
                body[2:4] = struct.pack(">H", draw.draw(st.integers(0, 0xFFFF)))
            else:
                body[9] = draw.draw(st.integers(0, 255))
            segments[i] = bytes(body)
            return b"\xff\xd8" + b"".join(segments) + scan
    return flip_bits(data, draw)


# -- BMP and GIF headers -----------------------------------------------------------------------


def other_header(data: bytes, draw: st.DataObject) -> bytes:
    """Huge or zero sizes in the headers of BMP (signed 32-bit) and GIF (16-bit)."""
    size = draw.draw(st.sampled_from(SIZES))
    if data.startswith(b"BM") and len(data) >= 26:
        at = draw.draw(st.sampled_from([18, 22]))
        value = struct.pack("<i", size if size < 2**31 else -(2**31 - 1))
        return data[:at] + value + data[at + 4 :]
    if data.startswith(b"GIF") and len(data) >= 10:
        at = draw.draw(st.sampled_from([6, 8]))
        return data[:at] + struct.pack("<H", size & 0xFFFF) + data[at + 2 :]
    return overwrite(data, draw)


MUTATIONS: tuple[Mutation, ...] = (
    truncate,
    cut_the_tail,
    flip_bits,
    damage_the_body,
    overwrite,
    insert,
    duplicate,
    png_chunks,
    png_header,
    jpeg_segments,
    jpeg_header,
    other_header,
)


def mutated(data: st.DataObject, pool: list[Seed]) -> tuple[str, bytes]:
    """Draw a seed, then one to three mutations: ``(description, bytes)``."""
    seed = data.draw(st.sampled_from(pool), label="seed")
    payload = seed.data
    names = [seed.name]
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
        payload = mutation(payload, data)
        names.append(mutation.__name__)
    return "+".join(names), payload
