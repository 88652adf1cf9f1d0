"""remove.bg's output geometry on top of the one compositor (:mod:`cutout.imaging.compose`).

compose.py does backgrounds, masks, formats and encoding; this module adds what only remove.bg
asks for, in this order: ``roi`` (only that region can be foreground), ``crop`` with 1, 2 or 4
margins in px or % of the subject (a margin may reach past the photo: transparent padding),
``scale``/``position`` of the subject on its canvas, the ``size`` cap (scaled down, never up),
then ``channels``, ``bg_color``/``bg_image_*`` and ``format`` (``auto``: PNG when the result has
transparency, else JPEG; ``zip``: ``color.jpg`` + ``alpha.png``).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from cutout.errors import InvalidParameter
from cutout.imaging.compose import (
    Background,
    BackgroundImage,
    OutputFormat,
    OutputOptions,
    compose,
    fit_within,
    flatten,
    subject_bbox,
)
from cutout.imaging.decode import Photo
from cutout.imaging.refine import estimate_foreground
from cutout.removebg.params import Length, Params

Box = tuple[int, int, int, int]  # left, top, right, bottom


@dataclass(frozen=True)
class Rendered:
    data: bytes
    media_type: str
    width: int
    height: int
    foreground: tuple[int, int, int, int]  # top, left, width, height in the result


#: Decodes the background picture for an output of the given size (covering it, no larger
#: than needed), so its full-size pixels exist only if they must.
BackgroundLoader = Callable[[tuple[int, int]], Image.Image]


def render(
    photo: Photo,
    alpha: Image.Image,
    params: Params,
    *,
    background_image: BackgroundLoader | None = None,
    png_compression: int = 1,
) -> Rendered:
    """The response image for *params* from *photo* and its full-size *alpha*."""
    if params.roi is not None:
        alpha = _within(alpha, roi_box(params.roi, photo.size))
    subject = subject_bbox(alpha)
    if subject is None:
        raise InvalidParameter(
            "Could not identify foreground in image: nothing in it stood out as a subject.",
            "unknown_foreground",
        )
    rgb = photo.rgb
    if params.crop:
        box = _grow(subject, params.crop_margin)
        rgb, alpha = rgb.crop(box), alpha.crop(box)  # outside the photo: transparent black
        subject = subject_bbox(alpha) or (0, 0, *alpha.size)
    if params.scale is not None or params.position is not None:
        rgb, alpha = _place(rgb, alpha, subject, params.scale, params.position or (0.5, 0.5))
    rgb, alpha = fit_within(rgb, alpha, max_pixels=params.output_cap())
    background = _background(params, background_image, rgb.size)
    box = subject_bbox(alpha) or (0, 0, 0, 0)
    foreground = (box[1], box[0], box[2] - box[0], box[3] - box[1])
    if params.format == "zip":
        data = _zip(rgb, alpha, background, photo.icc_profile)
        return Rendered(data, "application/zip", rgb.width, rgb.height, foreground)
    options = OutputOptions(
        format=_format(params, background),
        background=background,
        mask_only=params.channels == "alpha",
        png_compression=png_compression,
    )
    encoded = compose(Photo(rgb, None, photo.format, photo.icc_profile), alpha, options)
    return Rendered(encoded.data, encoded.media_type, encoded.width, encoded.height, foreground)


def roi_box(roi: tuple[Length, Length, Length, Length], size: tuple[int, int]) -> Box:
    """The ROI in pixels. :raises InvalidParameter: outside the image, or empty."""
    width, height = size
    values = [
        round(v * (width if i % 2 == 0 else height) / 100) if pct else round(v)
        for i, (v, pct) in enumerate(roi)
    ]
    left, top, right, bottom = values
    if right > width or bottom > height:
        raise InvalidParameter(
            f"The given roi parameter defines a region that exceeds the image bounds "
            f"({width}x{height}).",
            "roi_exceeds_bounds",
        )
    if right <= left or bottom <= top:
        raise InvalidParameter(
            "The given roi parameter defines an empty region.", "roi_region_empty"
        )
    return left, top, right, bottom


def _within(alpha: Image.Image, box: Box) -> Image.Image:
    """*alpha* with everything outside *box* made transparent."""
    out = Image.new("L", alpha.size, 0)
    out.paste(alpha.crop(box), box[:2])
    return out


def _grow(subject: Box, margins: tuple[Length, Length, Length, Length]) -> Box:
    """The crop box: *subject* plus margins (top right bottom left; % of the subject's size)."""
    left, top, right, bottom = subject
    width, height = right - left, bottom - top

    def px(length: Length, extent: int) -> int:
        value, pct = length
        return round(value * extent / 100) if pct else round(value)

    m_top, m_right, m_bottom, m_left = margins
    return (
        left - px(m_left, width),
        top - px(m_top, height),
        right + px(m_right, width),
        bottom + px(m_bottom, height),
    )


def _place(
    rgb: Image.Image,
    alpha: Image.Image,
    subject: Box,
    scale: float | None,
    position: tuple[float, float],
) -> tuple[Image.Image, Image.Image]:
    """The subject moved (and, with *scale*, resized to that share of the canvas)."""
    width, height = rgb.size
    piece_rgb, piece_alpha = rgb.crop(subject), alpha.crop(subject)
    if scale is not None:
        factor = scale * min(width / piece_rgb.width, height / piece_rgb.height)
        size = (max(1, round(piece_rgb.width * factor)), max(1, round(piece_rgb.height * factor)))
        piece_rgb = piece_rgb.resize(size, Image.Resampling.LANCZOS)
        piece_alpha = piece_alpha.resize(size, Image.Resampling.LANCZOS)
    x = round(position[0] * (width - piece_rgb.width))
    y = round(position[1] * (height - piece_rgb.height))
    canvas_rgb, canvas_alpha = Image.new("RGB", rgb.size), Image.new("L", rgb.size, 0)
    canvas_rgb.paste(piece_rgb, (x, y))
    canvas_alpha.paste(piece_alpha, (x, y))
    return canvas_rgb, canvas_alpha


def _background(
    params: Params, load: BackgroundLoader | None, size: tuple[int, int]
) -> Background | None:
    if load is not None:
        return BackgroundImage(load(size))
    return params.bg_color


def _format(params: Params, background: Background | None) -> OutputFormat:
    if params.format in ("jpg", "webp", "png"):
        return {"jpg": "jpeg", "webp": "webp", "png": "png"}[params.format]  # type: ignore[return-value]
    opaque = background is not None and getattr(background, "alpha", 255) == 255
    return "jpeg" if opaque and params.channels == "rgba" else "png"


def _zip(
    rgb: Image.Image, alpha: Image.Image, background: Background | None, icc: bytes | None
) -> bytes:
    """remove.bg's ZIP: ``color.jpg`` (colours corrected at soft edges) + ``alpha.png``."""
    if background is None:
        color = estimate_foreground(rgb, alpha)
    else:  # the client composes colour and alpha itself: give it the composite, opaque
        flat = flatten(rgb, alpha, background)
        color = flat.convert("RGB")
        alpha = flat.getchannel("A") if flat.mode == "RGBA" else Image.new("L", rgb.size, 255)
    color_jpg, alpha_png = io.BytesIO(), io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    color.save(color_jpg, "JPEG", quality=90, **extra)
    alpha.save(alpha_png, "PNG", compress_level=1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:  # both are compressed already
        archive.writestr("color.jpg", color_jpg.getvalue())
        archive.writestr("alpha.png", alpha_png.getvalue())
    return out.getvalue()
