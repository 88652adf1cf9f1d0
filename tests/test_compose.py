"""Output options: formats, background colour, mask only, crop, hidden pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cutout.errors import InvalidInput
from cutout.imaging.compose import OutputOptions, compose, parse_color, subject_box
from cutout.imaging.decode import Photo
from tests.helpers import synthetic_photo


def photo_and_alpha() -> tuple[Photo, Image.Image]:
    rgb = synthetic_photo(200, 100)
    alpha = Image.new("L", rgb.size, 0)
    alpha.paste(255, (50, 20, 150, 80))
    alpha.paste(128, (40, 20, 50, 80))  # a soft edge on the left
    return Photo(rgb=rgb, alpha=None, format="PNG"), alpha


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_png_is_full_size_rgba_with_the_alpha() -> None:
    photo, alpha = photo_and_alpha()
    out = compose(photo, alpha, OutputOptions())
    image = decode(out.data)
    assert (image.format, image.mode, image.size) == ("PNG", "RGBA", (200, 100))
    assert out.media_type == "image/png" and out.extension == ".png"
    assert np.array_equal(np.asarray(image.getchannel("A")), np.asarray(alpha))


def test_fully_transparent_pixels_hide_nothing() -> None:
    photo, alpha = photo_and_alpha()
    rgba = np.asarray(decode(compose(photo, alpha, OutputOptions()).data))
    hidden = rgba[..., 3] == 0
    assert hidden.any() and not rgba[hidden][:, :3].any()
    visible = rgba[..., 3] == 255
    assert np.array_equal(rgba[visible][:, :3], np.asarray(photo.rgb)[visible])


def test_webp_keeps_alpha() -> None:
    photo, alpha = photo_and_alpha()
    image = decode(compose(photo, alpha, OutputOptions(format="webp")).data)
    assert (image.format, image.mode) == ("WEBP", "RGBA")
    assert (
        np.abs(np.asarray(image.getchannel("A"), np.int16) - np.asarray(alpha, np.int16)).max() <= 2
    )


def test_jpeg_is_flattened_on_white_by_default() -> None:
    photo, alpha = photo_and_alpha()
    image = decode(compose(photo, alpha, OutputOptions(format="jpeg")).data)
    assert (image.format, image.mode) == ("JPEG", "RGB")
    assert all(c > 245 for c in image.getpixel((5, 5)))  # type: ignore[union-attr]


def test_background_colour_replaces_the_background() -> None:
    photo, alpha = photo_and_alpha()
    image = decode(compose(photo, alpha, OutputOptions(background=(0, 255, 0))).data)
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (0, 255, 0)
    assert image.getpixel((100, 50)) == photo.rgb.getpixel((100, 50))
    soft = np.asarray(image)[50, 45].astype(int)  # half foreground, half green
    expected = (
        np.asarray(photo.rgb)[50, 45].astype(float) * 128 + np.array([0, 255, 0]) * 127
    ) / 255
    assert np.abs(soft - expected).max() <= 2


def test_mask_only_is_the_grayscale_alpha() -> None:
    photo, alpha = photo_and_alpha()
    image = decode(compose(photo, alpha, OutputOptions(mask_only=True)).data)
    assert image.mode == "L"
    assert np.array_equal(np.asarray(image), np.asarray(alpha))


def test_crop_to_subject_with_margin() -> None:
    photo, alpha = photo_and_alpha()
    out = compose(photo, alpha, OutputOptions(crop=True, crop_margin=5))
    assert (out.width, out.height) == (150 - 40 + 10, 80 - 20 + 10)
    assert subject_box(alpha, 1000) == (0, 0, 200, 100)  # the margin stops at the frame


def test_crop_without_subject_keeps_the_frame() -> None:
    photo, _ = photo_and_alpha()
    out = compose(photo, Image.new("L", photo.size, 0), OutputOptions(crop=True))
    assert (out.width, out.height) == photo.size


@pytest.mark.parametrize(
    ("text", "rgb"),
    [
        ("white", (255, 255, 255)),
        ("#ff8800", (255, 136, 0)),
        ("#f80", (255, 136, 0)),
        ("1,2,3", (1, 2, 3)),
    ],
)
def test_colours_parse(text: str, rgb: tuple[int, int, int]) -> None:
    assert parse_color(text) == rgb


@pytest.mark.parametrize("text", ["nope", "1,2", "300,0,0", "#12345"])
def test_bad_colours_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a colour"):
        parse_color(text)


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidInput):
        OutputOptions(format="gif")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        OutputOptions(crop_margin=-1)


def test_colour_profile_is_embedded_in_every_format() -> None:
    photo, alpha = photo_and_alpha()
    profile = b"\x00\x00\x00\x10fake-profile"
    tagged = Photo(rgb=photo.rgb, alpha=None, format="JPEG", icc_profile=profile)
    for fmt in ("png", "webp", "jpeg"):
        out = compose(tagged, alpha, OutputOptions(format=fmt))
        assert decode(out.data).info.get("icc_profile") == profile, fmt
    mask = compose(tagged, alpha, OutputOptions(mask_only=True))
    assert "icc_profile" not in decode(mask.data).info
