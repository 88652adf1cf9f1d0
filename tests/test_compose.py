"""Output options: formats, background colour, mask only, crop, hidden pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cutout.errors import InvalidInput
from cutout.imaging.compose import (
    BackgroundImage,
    BlurredPhoto,
    OutputOptions,
    SolidColor,
    compose,
    cover,
    parse_color,
    subject_box,
)
from cutout.imaging.decode import Photo
from cutout.imaging.refine import estimate_foreground
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
    image = decode(compose(photo, alpha, OutputOptions(background=SolidColor((0, 255, 0)))).data)
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (0, 255, 0)
    assert image.getpixel((100, 50)) == photo.rgb.getpixel((100, 50))
    # a soft edge: the estimated foreground colour, half over green (not the old background)
    foreground = np.asarray(estimate_foreground(photo.rgb, alpha))[50, 45].astype(float)
    soft = np.asarray(image)[50, 45].astype(int)
    expected = (foreground * 128 + np.array([0, 255, 0]) * 127) / 255
    assert np.abs(soft - expected).max() <= 2


def test_flattening_removes_the_old_background_fringe() -> None:
    """A subject shot on red, put on blue: the soft edge must not keep the red."""
    red, grey = (220, 20, 20), (120, 120, 120)
    rgb = Image.new("RGB", (120, 60), red)
    rgb.paste(grey, (40, 0, 80, 60))
    alpha = Image.new("L", rgb.size, 0)
    alpha.paste(255, (40, 0, 80, 60))
    for x in range(36, 40):  # a soft 4 px edge where the photo mixes grey into red
        a = (x - 35) / 5
        alpha.paste(round(a * 255), (x, 0, x + 1, 60))
        mixed = tuple(round(a * g + (1 - a) * r) for g, r in zip(grey, red, strict=True))
        rgb.paste(mixed, (x, 0, x + 1, 60))
    photo = Photo(rgb=rgb, alpha=None, format="PNG")

    naive = Image.composite(rgb, Image.new("RGB", rgb.size, (0, 0, 255)), alpha)
    ours = decode(compose(photo, alpha, OutputOptions(background=SolidColor((0, 0, 255)))).data)

    def red_excess(image: Image.Image) -> float:
        edge = np.asarray(image, np.float32)[:, 36:40]
        return float((edge[..., 0] - edge[..., 1]).mean())

    assert red_excess(naive) > 30  # the fringe the old compositor left
    assert red_excess(ours) < min(10, red_excess(naive) / 4)


def test_semi_transparent_colour_keeps_an_alpha_channel() -> None:
    photo, alpha = photo_and_alpha()
    half_green = SolidColor((0, 255, 0), 128)
    image = decode(compose(photo, alpha, OutputOptions(background=half_green)).data)
    assert image.mode == "RGBA"
    assert image.getpixel((5, 5)) == (0, 255, 0, 128)
    assert image.getpixel((100, 50)) == (*photo.rgb.getpixel((100, 50)), 255)  # type: ignore[misc]
    jpeg = decode(compose(photo, alpha, OutputOptions(format="jpeg", background=half_green)).data)
    assert jpeg.mode == "RGB" and np.abs(np.asarray(jpeg)[5, 5].astype(int) - (0, 255, 0)).max() < 8


def test_background_image_covers_the_frame() -> None:
    photo, alpha = photo_and_alpha()  # 200 x 100
    backdrop = Image.new("RGB", (60, 60), (255, 0, 0))
    backdrop.paste((0, 0, 255), (0, 0, 60, 30))  # blue top half, red bottom half
    image = decode(compose(photo, alpha, OutputOptions(background=BackgroundImage(backdrop))).data)
    assert image.size == (200, 100) and image.mode == "RGB"
    # scaled to 200 x 200 to cover, centred: rows 50-149 of it remain, blue above red
    pixels = np.asarray(image).astype(int)
    assert np.abs(pixels[5, 5] - (0, 0, 255)).max() < 10
    assert np.abs(pixels[95, 5] - (255, 0, 0)).max() < 10
    assert image.getpixel((100, 50)) == photo.rgb.getpixel((100, 50))


def test_cover_keeps_the_aspect_ratio() -> None:
    tall = Image.new("RGB", (10, 100), (9, 9, 9))
    tall.paste((200, 200, 200), (0, 45, 10, 55))  # a band in the middle survives the crop
    wide = cover(tall, (100, 200))  # scaled x10 to 100 x 1000; rows 400-600 of that remain
    assert wide.size == (100, 200)
    assert np.asarray(wide)[100, 50, 0] > 150 and np.asarray(wide)[5, 50, 0] < 50


def test_blurred_background_keeps_the_subject_sharp_and_out_of_the_blur() -> None:
    rgb = Image.new("RGB", (200, 100), (0, 200, 0))  # green background
    rgb.paste((255, 0, 255), (80, 30, 120, 70))  # a magenta subject
    alpha = Image.new("L", rgb.size, 0)
    alpha.paste(255, (80, 30, 120, 70))
    photo = Photo(rgb=rgb, alpha=None, format="PNG")
    image = decode(compose(photo, alpha, OutputOptions(background=BlurredPhoto(radius=0.05))).data)
    pixels = np.asarray(image).astype(int)
    assert tuple(pixels[50, 100]) == (255, 0, 255)  # the subject itself is untouched
    ring = pixels[50, 70]  # background right next to the subject: no magenta ghost
    assert abs(ring[0] - 0) < 20 and abs(ring[1] - 200) < 20


def test_output_is_scaled_down_to_fit_never_up() -> None:
    photo, alpha = photo_and_alpha()  # 200 x 100
    out = compose(photo, alpha, OutputOptions(max_side=50))
    assert (out.width, out.height) == (50, 25) and decode(out.data).size == (50, 25)
    out = compose(photo, alpha, OutputOptions(max_pixels=5000))
    assert (out.width, out.height) == (100, 50)
    out = compose(photo, alpha, OutputOptions(max_side=1000, max_pixels=10**9, mask_only=True))
    assert (out.width, out.height) == (200, 100)


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
    ("text", "color"),
    [
        ("white", SolidColor((255, 255, 255))),
        ("#ff8800", SolidColor((255, 136, 0))),
        ("#f80", SolidColor((255, 136, 0))),
        ("#ff880080", SolidColor((255, 136, 0), 128)),
        ("1,2,3", SolidColor((1, 2, 3))),
        ("1,2,3,4", SolidColor((1, 2, 3), 4)),
    ],
)
def test_colours_parse(text: str, color: SolidColor) -> None:
    assert parse_color(text) == color


@pytest.mark.parametrize("text", ["nope", "1,2", "300,0,0", "#12345"])
def test_bad_colours_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a colour"):
        parse_color(text)


def test_bad_options_are_refused() -> None:
    with pytest.raises(InvalidInput):
        OutputOptions(format="gif")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        OutputOptions(crop_margin=-1)
    with pytest.raises(InvalidInput):
        OutputOptions(max_side=0)


def test_colour_profile_is_embedded_in_every_format() -> None:
    photo, alpha = photo_and_alpha()
    profile = b"\x00\x00\x00\x10fake-profile"
    tagged = Photo(rgb=photo.rgb, alpha=None, format="JPEG", icc_profile=profile)
    for fmt in ("png", "webp", "jpeg"):
        out = compose(tagged, alpha, OutputOptions(format=fmt))
        assert decode(out.data).info.get("icc_profile") == profile, fmt
    mask = compose(tagged, alpha, OutputOptions(mask_only=True))
    assert "icc_profile" not in decode(mask.data).info
