"""Compose the final image from a photo and its full-size alpha, and encode it."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageColor

from cutout.errors import ImageTooLarge, InvalidInput
from cutout.imaging import png
from cutout.imaging.decode import Photo
from cutout.imaging.refine import estimate_foreground

OutputFormat = Literal["png", "webp", "jpeg"]
FORMATS: tuple[OutputFormat, ...] = ("png", "webp", "jpeg")
MEDIA_TYPES = {"png": "image/png", "webp": "image/webp", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": ".png", "webp": ".webp", "jpeg": ".jpg"}
WHITE = (255, 255, 255)
#: The longest side each format can encode (libjpeg: 65500; libwebp: 16383).
JPEG_MAX_SIDE = 65_500
MAX_SIDE: dict[OutputFormat, int] = {"jpeg": JPEG_MAX_SIDE, "webp": 16_383}
#: Alpha at or below this is "background" when finding the subject's box (ignores faint haze).
SUBJECT_THRESHOLD = 8


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = "png"
    background: tuple[int, int, int] | None = None  # flatten onto this colour
    mask_only: bool = False  # the alpha itself, as a grayscale image
    crop: bool = False  # crop to the subject's bounding box
    crop_margin: int = 0  # pixels kept around the subject when cropping
    refine_edges: bool = False  # estimate foreground colours to remove fringes
    png_compression: int = 1
    quality: int = 90  # JPEG and WebP

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidInput(f"Unknown output format {self.format!r}; use png, webp or jpeg.")
        if self.crop_margin < 0:
            raise InvalidInput("The crop margin cannot be negative.")


@dataclass(frozen=True)
class Encoded:
    data: bytes
    format: OutputFormat
    width: int
    height: int

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]


def parse_color(text: str) -> tuple[int, int, int]:
    """Accept ``white``, ``#ff8800``, ``#f80`` or ``255,136,0``."""
    try:
        if "," in text:
            parts = tuple(int(p) for p in text.split(","))
            if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
                raise ValueError(text)
            return parts[0], parts[1], parts[2]
        rgb = ImageColor.getrgb(text.strip())
        return rgb[0], rgb[1], rgb[2]
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a colour; use a name (white), #rrggbb or r,g,b."
        ) from None


def compose(photo: Photo, alpha: Image.Image, options: OutputOptions) -> Encoded:
    """Build the output image from *photo* and its full-size L-mode *alpha*; encode it."""
    rgb = photo.rgb
    if options.crop:
        box = subject_box(alpha, options.crop_margin)
        rgb, alpha = rgb.crop(box), alpha.crop(box)
    if options.mask_only:
        return encode(alpha, options)  # a mask has no colours to manage
    if options.refine_edges:
        rgb = estimate_foreground(rgb, alpha)
    background = options.background or (WHITE if options.format == "jpeg" else None)
    if background is not None:
        flat = Image.composite(rgb, Image.new("RGB", rgb.size, background), alpha)
        return encode(flat, options, photo.icc_profile)
    if options.format == "png":  # the common case: skip building the RGBA image at all
        data = png.encode_cutout(
            np.asarray(rgb),
            np.asarray(alpha),
            level=options.png_compression,
            icc_profile=photo.icc_profile,
        )
        return Encoded(data, "png", rgb.width, rgb.height)
    return encode(cutout_rgba(rgb, alpha), options, photo.icc_profile)


def cutout_rgba(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    """RGBA with the photo's colour zeroed where fully transparent.

    Zeroing is not cosmetic: otherwise the removed background is still in the file, merely
    hidden, and anyone can recover it by dropping the alpha. It also compresses better.
    """
    visible = alpha.point(lambda v: 255 if v else 0)
    out = Image.composite(rgb, Image.new("RGB", rgb.size), visible)
    out.putalpha(alpha)
    return out


def subject_box(alpha: Image.Image, margin: int) -> tuple[int, int, int, int]:
    """The bounding box of the visible subject grown by *margin*; the whole frame if none."""
    box = alpha.point(lambda v: 255 if v > SUBJECT_THRESHOLD else 0).getbbox()
    width, height = alpha.size
    if box is None:
        return 0, 0, width, height
    left, top, right, bottom = box
    return (
        max(left - margin, 0),
        max(top - margin, 0),
        min(right + margin, width),
        min(bottom + margin, height),
    )


def encode(image: Image.Image, options: OutputOptions, icc_profile: bytes | None = None) -> Encoded:
    """Encode *image*, embedding the source's colour profile so colours match the original.

    :raises ImageTooLarge: a side is longer than JPEG or WebP can hold (PNG has no such limit).
    """
    limit = MAX_SIDE.get(options.format)
    if limit and max(image.size) > limit:
        raise ImageTooLarge(
            f"The image is {image.width}x{image.height}; {options.format.upper()} holds at most "
            f"{limit} pixels a side. Write PNG instead."
        )
    buffer = io.BytesIO()
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    if options.format == "png":
        pixels = np.asarray(image)
        data = png.encode(pixels, level=options.png_compression, icc_profile=icc_profile)
        return Encoded(data, "png", image.width, image.height)
    if options.format == "webp":
        image.save(buffer, "WEBP", quality=options.quality, alpha_quality=100, method=4, **extra)
    else:
        flat = image.convert("L" if image.mode == "L" else "RGB")
        flat.save(buffer, "JPEG", quality=options.quality, **extra)
    return Encoded(buffer.getvalue(), options.format, image.width, image.height)
