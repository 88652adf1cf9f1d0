"""Decoding untrusted uploads: every accepted format, every refusal."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout.errors import ImageTooLarge, InvalidImage, UnsupportedFormat
from cutout.imaging.decode import Limits, load_image
from tests.helpers import encode, matrix_icc_profile, synthetic_photo

LIMITS = Limits(max_bytes=5_000_000, max_pixels=2_000_000)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 4.0),
        ("PNG", {}, 0.0),
        ("WEBP", {"quality": 95}, 4.0),
        ("BMP", {}, 0.0),
        ("TIFF", {}, 0.0),
        ("HEIF", {"quality": 95}, 6.0),
        ("AVIF", {"quality": 95}, 6.0),
    ],
)
def test_accepted_formats_decode_to_the_same_picture(
    fmt: str, params: dict[str, object], tolerance: float
) -> None:
    original = synthetic_photo()
    photo = load_image(encode(original, fmt, **params), LIMITS)
    assert photo.rgb.mode == "RGB"
    assert photo.rgb.size == original.size
    assert photo.alpha is None
    assert mean_abs_diff(photo.rgb, original) <= tolerance


def test_gif_uses_the_first_frame() -> None:
    first = Image.new("RGB", (64, 48), (255, 0, 0)).convert("P")
    second = Image.new("RGB", (64, 48), (0, 0, 255)).convert("P")
    data = io.BytesIO()
    first.save(data, "GIF", save_all=True, append_images=[second])
    photo = load_image(data.getvalue(), LIMITS)
    assert photo.format == "GIF"
    assert photo.rgb.getpixel((10, 10)) == (255, 0, 0)


def test_format_is_sniffed_from_content_not_name() -> None:
    # A PNG's bytes are a PNG whatever the upload called it; there is no name to trust.
    photo = load_image(encode(synthetic_photo(), "PNG"), LIMITS)
    assert photo.format == "PNG"


def test_exif_orientation_is_applied() -> None:
    image = synthetic_photo(200, 100)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    photo = load_image(encode(image, "JPEG", exif=exif, quality=95), LIMITS)
    assert photo.rgb.size == (100, 200)
    assert mean_abs_diff(photo.rgb, image.transpose(Image.Transpose.ROTATE_270)) < 4


def test_cmyk_jpeg_becomes_rgb() -> None:
    image = synthetic_photo()
    photo = load_image(encode(image.convert("CMYK"), "JPEG", quality=95), LIMITS)
    assert photo.rgb.mode == "RGB"
    assert mean_abs_diff(photo.rgb, image) < 6


def test_icc_profile_is_kept_not_applied() -> None:
    # Pixel values stay as stored (what the model was trained on); the profile travels along.
    red, green, blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    profile = matrix_icc_profile(blue, green, red)
    image = Image.new("RGB", (32, 32), (200, 50, 10))
    photo = load_image(encode(image, "PNG", icc_profile=profile), LIMITS)
    assert photo.rgb.getpixel((5, 5)) == (200, 50, 10)
    assert photo.icc_profile == profile


def test_grayscale_profile_is_not_carried_into_rgb() -> None:
    gray = synthetic_photo().convert("L")
    photo = load_image(encode(gray, "PNG", icc_profile=b"not an rgb profile"), LIMITS)
    assert photo.icc_profile is None


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = (np.arange(256 * 64, dtype=np.uint16).reshape(64, 256) * 4).astype(np.uint16)
    image = Image.fromarray(ramp)
    photo = load_image(encode(image, "PNG"), LIMITS)
    values = np.asarray(photo.rgb)[..., 0]
    assert values.min() == 0
    assert values.max() >= 250  # clipping would have made nearly everything 255
    assert (values == 255).mean() < 0.05


def test_palette_and_grayscale_become_rgb() -> None:
    for mode in ("P", "L", "1"):
        photo = load_image(encode(synthetic_photo().convert(mode), "PNG"), LIMITS)
        assert photo.rgb.mode == "RGB"


def test_existing_alpha_is_kept() -> None:
    rgba = synthetic_photo().convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, 100, 100))
    rgba.putalpha(alpha)
    photo = load_image(encode(rgba, "PNG"), LIMITS)
    assert photo.alpha is not None
    assert photo.alpha.getpixel((10, 10)) == 0
    assert photo.alpha.getpixel((200, 200)) == 255


def test_opaque_alpha_channel_is_dropped() -> None:
    photo = load_image(encode(synthetic_photo().convert("RGBA"), "PNG"), LIMITS)
    assert photo.alpha is None


def test_palette_transparency_becomes_alpha() -> None:
    image = synthetic_photo().convert("P")
    photo = load_image(encode(image, "PNG", transparency=0), LIMITS)
    assert photo.alpha is not None


@pytest.mark.parametrize("data", [b"", b"hello, this is text", b"\x00" * 1000])
def test_non_images_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        load_image(data, LIMITS)


def test_truncated_image_is_refused() -> None:
    data = encode(synthetic_photo(), "JPEG", quality=95)
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        load_image(data[: len(data) // 2], LIMITS)


def test_known_but_unsupported_format_is_named() -> None:
    with pytest.raises(UnsupportedFormat, match="PPM"):
        load_image(encode(synthetic_photo(), "PPM"), LIMITS)


def test_too_many_bytes_is_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge, match="largest accepted"):
        load_image(b"\x89PNG" + b"\x00" * 100, Limits(max_bytes=50, max_pixels=10**6))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims *width* x *height* but holds almost no data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [2000, 30_000, 200_000])
def test_decompression_bombs_are_refused_before_allocation(side: int) -> None:
    with pytest.raises(ImageTooLarge):
        load_image(png_header_only(side, side), LIMITS)


#: In a process where pillow-heif cannot be imported (a deployment that removed it for its
#: GPL-2.0 x265, docs/licences.md): a HEIC upload is a clear refusal, other formats still work.
WITHOUT_HEIF = """
import sys
sys.modules["pillow_heif"] = None  # import pillow_heif now raises ImportError
from cutout.errors import UnsupportedFormat
from cutout.imaging.decode import Limits, load_image
limits = Limits(max_bytes=5_000_000, max_pixels=2_000_000)
heic, png = (open(p, "rb").read() for p in sys.argv[1:3])
try:
    load_image(heic, limits)
except UnsupportedFormat as refusal:
    print("refused:", refusal)
print("png:", load_image(png, limits).format)
"""


def test_without_pillow_heif_heic_is_refused_and_the_rest_decodes(tmp_path: Path) -> None:
    heic, png = tmp_path / "a.heic", tmp_path / "a.png"
    heic.write_bytes(encode(synthetic_photo(), "HEIF", quality=90))
    png.write_bytes(encode(synthetic_photo(), "PNG"))
    run = subprocess.run(
        [sys.executable, "-c", WITHOUT_HEIF, str(heic), str(png)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    refusal = "refused: HEIC images are not supported. Use JPEG, PNG, WebP, AVIF, TIFF, BMP or GIF."
    assert run.stdout.startswith(refusal + "\n"), run.stdout + run.stderr
    assert run.stdout.endswith("png: PNG\n"), run.stdout
    assert "pillow-heif is not installed" in run.stderr
