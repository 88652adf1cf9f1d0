"""Compose the final image from a photo and its full-size alpha, and encode it.

This is the one compositor: the CLI, the web page's downloads and both APIs call
:func:`compose`, so a cut-out flattened on a colour, a photo or its own blurred background
looks the same wherever it was made. Flattening always estimates the foreground colours at
soft edges first (:func:`~cutout.imaging.refine.estimate_foreground`), so hair does not keep a
fringe of the old background on the new one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageColor

from cutout.errors import ImageTooLarge, InvalidInput
from cutout.imaging import png
from cutout.imaging.decode import Photo
from cutout.imaging.refine import box_filter, estimate_foreground

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
class SolidColor:
    """A colour; ``alpha`` below 255 gives a semi-transparent backdrop (PNG and WebP)."""

    rgb: tuple[int, int, int]
    alpha: int = 255


@dataclass(frozen=True)
class BackgroundImage:
    """A picture behind the subject, scaled to cover the output and centred (aspect kept)."""

    image: Image.Image


@dataclass(frozen=True)
class BlurredPhoto:
    """The photo's own background, blurred ("portrait mode"); *radius* is a fraction of the
    long side. The subject is masked out of the blur, so it leaves no ghost behind itself."""

    radius: float = 0.02


Background = SolidColor | BackgroundImage | BlurredPhoto
WHITE_BACKGROUND = SolidColor(WHITE)


@dataclass(frozen=True)
class OutputOptions:
    format: OutputFormat = "png"
    background: Background | None = None  # None: transparent (JPEG: white)
    mask_only: bool = False  # the alpha itself, as a grayscale image
    crop: bool = False  # crop to the subject's bounding box
    crop_margin: int = 0  # pixels kept around the subject when cropping
    refine_edges: bool = False  # estimate foreground colours in transparent output too
    max_side: int | None = None  # scale down (never up) so the long side fits
    max_pixels: int | None = None  # scale down (never up) to at most this many pixels
    png_compression: int = 1
    quality: int = 90  # JPEG and WebP

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidInput(f"Unknown output format {self.format!r}; use png, webp or jpeg.")
        if self.crop_margin < 0:
            raise InvalidInput("The crop margin cannot be negative.")
        if (self.max_side is not None and self.max_side < 1) or (
            self.max_pixels is not None and self.max_pixels < 1
        ):
            raise InvalidInput("The maximum output size must be at least 1 pixel.")


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


def parse_color(text: str) -> SolidColor:
    """Accept ``white``, ``#ff8800``, ``#f80``, ``#ff880080`` (with alpha) or ``255,136,0``.

    ASCII only: Pillow's parser and int() would also take other scripts' digits."""
    try:
        if not text.isascii():
            raise ValueError(text)
        if "," in text:
            parts = tuple(int(p) for p in text.split(","))
            if len(parts) not in (3, 4) or not all(0 <= p <= 255 for p in parts):
                raise ValueError(text)
            return SolidColor((parts[0], parts[1], parts[2]), parts[3] if len(parts) == 4 else 255)
        rgba = ImageColor.getrgb(text.strip())
        return SolidColor((rgba[0], rgba[1], rgba[2]), rgba[3] if len(rgba) == 4 else 255)
    except ValueError:
        raise InvalidInput(
            f"{text!r} is not a colour; use a name (white), #rrggbb, #rrggbbaa or r,g,b."
        ) from None


def compose(photo: Photo, alpha: Image.Image, options: OutputOptions) -> Encoded:
    """Build the output image from *photo* and its full-size L-mode *alpha*; encode it."""
    rgb, alpha = _framed(photo, alpha, options)
    if options.mask_only:
        return encode(alpha, options)  # a mask has no colours to manage
    background = _background(options)
    if background is not None:
        return encode(flatten(rgb, alpha, background), options, photo.icc_profile)
    if options.refine_edges:
        rgb = estimate_foreground(rgb, alpha)
    if options.format == "png":  # the common case: skip building the RGBA image at all
        data = png.encode_cutout(
            np.asarray(rgb),
            np.asarray(alpha),
            level=options.png_compression,
            icc_profile=photo.icc_profile,
        )
        return Encoded(data, "png", rgb.width, rgb.height)
    return encode(cutout_rgba(rgb, alpha), options, photo.icc_profile)


def compose_image(photo: Photo, alpha: Image.Image, options: OutputOptions) -> Image.Image:
    """What :func:`compose` would encode, as an image: the mask (L), the cut-out (RGBA, colour
    zeroed where transparent), or the subject over its background (RGB, or RGBA over a
    semi-transparent colour). ``options.format`` only decides JPEG's default white."""
    rgb, alpha = _framed(photo, alpha, options)
    if options.mask_only:
        return alpha
    background = _background(options)
    if background is not None:
        return flatten(rgb, alpha, background)
    if options.refine_edges:
        rgb = estimate_foreground(rgb, alpha)
    return cutout_rgba(rgb, alpha)


def _framed(
    photo: Photo, alpha: Image.Image, options: OutputOptions
) -> tuple[Image.Image, Image.Image]:
    """The photo and its alpha, cropped to the subject and scaled down as *options* say."""
    rgb = photo.rgb
    if options.crop:
        box = subject_box(alpha, options.crop_margin)
        rgb, alpha = rgb.crop(box), alpha.crop(box)
    return fit_within(rgb, alpha, max_side=options.max_side, max_pixels=options.max_pixels)


def _background(options: OutputOptions) -> Background | None:
    """The background to flatten onto, if any: JPEG has no alpha, so white by default and the
    chosen colour always opaque."""
    background = options.background or (WHITE_BACKGROUND if options.format == "jpeg" else None)
    if options.format == "jpeg" and isinstance(background, SolidColor):
        background = SolidColor(background.rgb)
    return background


def flatten(rgb: Image.Image, alpha: Image.Image, background: Background) -> Image.Image:
    """The subject over *background*: RGB, or RGBA for a semi-transparent colour."""
    if isinstance(background, SolidColor) and background.alpha < 255:
        return _over_translucent(estimate_foreground(rgb, alpha), alpha, background)
    # The foreground goes onto the backdrop strip by strip: a full-size foreground and a
    # composited copy would add 8 bytes per pixel to the peak
    return estimate_foreground(rgb, alpha, onto=backdrop(rgb, alpha, background))


def backdrop(rgb: Image.Image, alpha: Image.Image, background: Background) -> Image.Image:
    """The opaque RGB picture that goes behind the subject, at the size of *rgb*."""
    if isinstance(background, SolidColor):
        return Image.new("RGB", rgb.size, background.rgb)
    if isinstance(background, BackgroundImage):
        return cover(background.image.convert("RGB"), rgb.size)
    return blurred_background(rgb, alpha, background.radius)


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """*image* scaled (up or down) to cover *size* exactly, centred, the overflow cut off."""
    width, height = size
    scale = max(width / image.width, height / image.height)
    scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    box = (left / scale, top / scale, (left + width) / scale, (top + height) / scale)
    return image.resize(size, Image.Resampling.LANCZOS, box=box)


def blurred_background(rgb: Image.Image, alpha: Image.Image, radius: float) -> Image.Image:
    """The background of *rgb* blurred, with the subject masked out of the blur.

    A normalised convolution: blur(photo * bg) / blur(bg), where bg = 1 - alpha, so only
    background pixels feed the blur and the subject's colours do not bleed around it. Works at a
    reduced size (a blur has no fine detail to lose) and is scaled back up.
    """
    width, height = rgb.size
    pixels = max(2.0, radius * max(width, height))
    factor = max(1, int(pixels // 4))  # ~4 px of blur radius at the working size
    small = (max(1, width // factor), max(1, height // factor))
    photo = np.asarray(rgb.resize(small, Image.Resampling.BOX), np.float32)
    weight = 1.0 - np.asarray(alpha.resize(small, Image.Resampling.BOX), np.float32) / 255.0
    radius_small = max(1, round(pixels / factor / 2))
    num = _blur(photo * weight[..., None], radius_small)
    den = _blur(weight, radius_small)[..., None] + 1e-3
    fallback = photo.mean(axis=(0, 1))  # no background anywhere near: the photo's mean colour
    out = np.where(den > 0.02, num / den, fallback)
    result = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")
    return result.resize(rgb.size, Image.Resampling.BILINEAR)


def _blur(x: np.ndarray, radius: int) -> np.ndarray:
    """Two box passes: close enough to a Gaussian for a backdrop, O(N) for any radius."""
    return box_filter(box_filter(x, radius), radius)


def _over_translucent(
    foreground: Image.Image, alpha: Image.Image, background: SolidColor
) -> Image.Image:
    """Porter-Duff "over" onto a semi-transparent colour: RGBA out."""
    a = np.asarray(alpha, np.float32)[..., None] / 255.0
    b = background.alpha / 255.0
    out_a = a + b * (1.0 - a)
    color = np.asarray(foreground, np.float32) * a + np.asarray(background.rgb, np.float32) * (
        b * (1.0 - a)
    )
    color /= np.maximum(out_a, 1e-6)
    rgba = np.concatenate([color, out_a * 255.0], axis=-1)
    return Image.fromarray(np.clip(np.rint(rgba), 0, 255).astype(np.uint8), "RGBA")


def fit_size(
    size: tuple[int, int], max_side: int | None = None, max_pixels: int | None = None
) -> tuple[int, int]:
    """*size* scaled down (never up) to fit *max_side* and *max_pixels* (None: no bound)."""
    width, height = size
    scale = 1.0
    if max_side:
        scale = min(scale, max_side / max(width, height))
    if max_pixels:
        scale = min(scale, (max_pixels / (width * height)) ** 0.5)
    if scale >= 1.0:
        return size
    return max(1, int(width * scale)), max(1, int(height * scale))


def fit_within(
    rgb: Image.Image,
    alpha: Image.Image,
    *,
    max_side: int | None = None,
    max_pixels: int | None = None,
) -> tuple[Image.Image, Image.Image]:
    """Scale both down (never up) to fit *max_side* and *max_pixels* (None: no bound)."""
    size = fit_size(rgb.size, max_side, max_pixels)
    if size == rgb.size:
        return rgb, alpha
    return (
        rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0),
        alpha.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0),
    )


def cutout_rgba(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    """RGBA with the photo's colour zeroed where fully transparent.

    Zeroing is not cosmetic: otherwise the removed background is still in the file, merely
    hidden, and anyone can recover it by dropping the alpha. It also compresses better.
    """
    visible = alpha.point(lambda v: 255 if v else 0)
    out = Image.composite(rgb, Image.new("RGB", rgb.size), visible)
    out.putalpha(alpha)
    return out


def subject_bbox(alpha: Image.Image) -> tuple[int, int, int, int] | None:
    """The bounding box of the alpha above :data:`SUBJECT_THRESHOLD`; None if there is none."""
    found: tuple[int, int, int, int] | None = alpha.point(
        lambda v: 255 if v > SUBJECT_THRESHOLD else 0
    ).getbbox()
    return found


def subject_box(alpha: Image.Image, margin: int) -> tuple[int, int, int, int]:
    """The bounding box of the visible subject grown by *margin*; the whole frame if none."""
    box = subject_bbox(alpha)
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
        flat = image.convert("L" if image.mode == "L" else "RGB")  # JPEG has no alpha
        flat.save(buffer, "JPEG", quality=options.quality, **extra)
    return Encoded(buffer.getvalue(), options.format, image.width, image.height)
