"""The parallel PNG encoder: bit-exact round trips through Pillow, valid zlib streams."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cutout.imaging import png

RNG = np.random.default_rng(7)


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return np.asarray(image)


def idat_stream(data: bytes) -> bytes:
    """The concatenated IDAT payload of a PNG file."""
    pos, stream = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            stream += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return stream


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 1, 3), (1, 1, 4), (7, 2000, 4), (2000, 3, 3), (333, 517, 4), (64, 64)]
)
def test_round_trip_is_exact(shape: tuple[int, ...]) -> None:
    pixels = RNG.integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(decoded(png.encode(pixels)).reshape(shape), pixels)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])  # 1-3: ISA-L's deflate; the rest zlib's
def test_many_strips_make_one_valid_zlib_stream(
    monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    monkeypatch.setattr(png, "STRIP_BYTES", 1000)  # ~40 strips for this image
    pixels = RNG.integers(0, 256, (300, 200, 4), dtype=np.uint8)
    data = png.encode(pixels, level=level)
    raw = zlib.decompress(idat_stream(data))  # checks the combined Adler-32 too
    assert len(raw) == 300 * (1 + 200 * 4)
    assert np.array_equal(decoded(data), pixels)


def test_adler32_combination_matches_zlib() -> None:
    a, b = RNG.bytes(100_000), RNG.bytes(77_777)
    combined = png._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b))
    assert combined == zlib.adler32(a + b)


def test_cutout_zeroes_hidden_colour_and_keeps_alpha() -> None:
    rgb = RNG.integers(1, 256, (50, 60, 3), dtype=np.uint8)
    alpha = RNG.integers(0, 3, (50, 60), dtype=np.uint8) * 127  # 0, 127 or 254
    out = decoded(png.encode_cutout(rgb, alpha))
    assert np.array_equal(out[..., 3], alpha)
    hidden = alpha == 0
    assert not out[hidden][:, :3].any()
    assert np.array_equal(out[~hidden][:, :3], rgb[~hidden])


def test_icc_profile_is_embedded() -> None:
    profile = b"\x00\x00\x01\x00" + RNG.bytes(252)
    data = png.encode(RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8), icc_profile=profile)
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["icc_profile"] == profile


def test_faster_settings_still_compress() -> None:
    smooth = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    assert len(png.encode(smooth)) < smooth.size / 20


def test_isal_deflates_the_fast_levels() -> None:
    from isal import isal_zlib

    assert [png.deflater(level) for level in (1, 2, 3)] == [isal_zlib] * 3
    assert png.deflater(0) is zlib and png.deflater(6) is zlib
