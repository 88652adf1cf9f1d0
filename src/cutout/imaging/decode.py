"""Decode untrusted image bytes into an upright 8-bit RGB photo, or refuse them clearly.

The format is decided by content (Pillow's sniffing), never by file name or Content-Type. The
byte limit is checked before decoding and the pixel limit after reading only the header, so a
decompression bomb is refused before a single pixel is allocated.

Colour: RGB pixel values are kept as stored and an embedded ICC profile (Adobe RGB, Display P3,
a camera profile) is carried over to the output, so the cut-out looks exactly like the original
in any colour-managed viewer. Converting to sRGB instead would shift colours, and it also hurts
the model, which was trained on stored values: on the test photos with Adobe RGB and camera
profiles, converted input cost up to 0.15 IoU on one image.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cutout.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

log = logging.getLogger(__name__)

try:  # HEIC/HEIF: what phones save by default
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - it is a declared dependency
    log.warning("pillow-heif is not installed: HEIC/HEIF photos will be refused")

Image.init()  # register every plugin now, so ``Image.open(formats=...)`` knows all names
# Pillow warns (UserWarning) about damage it works around, such as corrupt EXIF data: the
# photo still decodes, so these are not errors of ours and must not reach stderr once per
# message. Set once, here: catch_warnings() around each decode is not thread-safe.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

#: Pillow format names we accept (the JPEG opener also yields MPO, as many phones save), and
#: how the messages name them. HEIF only while pillow-heif is installed: a format Pillow has no
#: opener for made ``Image.open(formats=...)`` raise KeyError, a 500 for every HEIC upload.
_ACCEPTED = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP", "HEIF": "HEIC", "AVIF": "AVIF",
             "TIFF": "TIFF", "BMP": "BMP", "GIF": "GIF"}  # fmt: skip
FORMATS = tuple(f for f in _ACCEPTED if f in Image.OPEN)
_READABLE = ", ".join(_ACCEPTED[f] for f in FORMATS)
_EITHER = " or ".join(_READABLE.rsplit(", ", 1))
#: ISO base media brands of HEIF still images: named in the refusal when pillow-heif is absent.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
#: Our sentence for bytes that start like an image but cannot be decoded; Pillow's own message
#: ("Truncated File Read", "broken data stream...") goes to the debug log, not to the user.
CORRUPT = (
    "The image data is corrupt or truncated. Check that the file opens on your computer and "
    "upload it again."
)
#: What Pillow's openers and decoders raise on damaged data (besides UnidentifiedImageError).
#: RuntimeError: the AVIF and HEIF codecs ("Failed to decode frame 0", found by the fuzzer).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    RuntimeError,
)
#: Modes whose ICC profile (if any) describes RGB data, and so still fits after conversion.
_RGB_MODES = {"RGB", "RGBA", "RGBX", "RGBa", "P", "PA"}


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Photo:
    """A decoded photo: ``rgb`` is 8-bit RGB, upright; ``alpha`` is its own transparency;
    ``icc_profile`` is its colour profile, for the output to carry."""

    rgb: Image.Image
    alpha: Image.Image | None
    format: str
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.size


def probe(data: bytes, limits: Limits) -> tuple[int, int]:
    """Width and height of *data* from its header alone, with every check short of decoding.

    Admission control sizes a removal from this before any pixel is allocated.
    """
    with _checked_open(data, limits) as image:
        return image.size


def load_image(data: bytes, limits: Limits) -> Photo:
    """Decode *data* as a photo; raise :class:`InvalidInput` subclasses for anything unusable."""
    image = _checked_open(data, limits)
    fmt = str(image.format)
    icc = image.info.get("icc_profile") if image.mode in _RGB_MODES else None
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb, alpha = _split(image)
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has far too many pixels to process.") from None
    except DECODE_ERRORS as exc:
        log.debug("undecodable image: %s: %s", type(exc).__name__, exc)
        raise InvalidImage(CORRUPT) from None
    return Photo(rgb=rgb, alpha=alpha, format=fmt, icc_profile=icc or None)


def load_reduced(data: bytes, limits: Limits, size: tuple[int, int]) -> Image.Image:
    """Decode *data* as an upright RGB picture no larger than needed to cover *size*.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers *size* (the decoder's
    draft mode: the full-size pixels never exist); other formats are decoded whole and
    scaled down at once. For background pictures, which only need the output's size.
    """
    image = _checked_open(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if image.format == "JPEG":
                image.draft("RGB", _draft_request(image.size, size, _rotated(image)))
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb, _ = _split(image)
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has far too many pixels to process.") from None
    except DECODE_ERRORS as exc:
        log.debug("undecodable image: %s: %s", type(exc).__name__, exc)
        raise InvalidImage(CORRUPT) from None
    scale = max(size[0] / rgb.width, size[1] / rgb.height)
    if scale < 0.5:  # much larger than needed: keep twice the size, for a clean final resize
        shrunk = (max(1, round(rgb.width * scale * 2)), max(1, round(rgb.height * scale * 2)))
        rgb = rgb.resize(shrunk, Image.Resampling.BOX)
    return rgb


def _rotated(image: Image.Image) -> bool:
    """Whether the EXIF orientation turns the picture a quarter (width and height swap)."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def _draft_request(
    stored: tuple[int, int], cover: tuple[int, int], rotated: bool
) -> tuple[int, int]:
    """The size to ask JPEG's draft mode for so that the upright picture still covers
    *cover* with the same aspect as the stored one."""
    width, height = cover[::-1] if rotated else cover
    scale = max(width / stored[0], height / stored[1])
    return max(1, round(stored[0] * scale)), max(1, round(stored[1] * scale))


def photo_from_image(image: Image.Image, limits: Limits) -> Photo:
    """The photo in an already opened Pillow *image* (the library's input), with the same
    checks, orientation and colour handling as :func:`load_image`; *image* is not changed."""
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} ({width * height / 1e6:.1f} MP); the largest "
            f"accepted is {limits.max_pixels / 1e6:.1f} MP (CUTOUT_MAX_MEGAPIXELS)."
        )
    if width == 0 or height == 0:
        raise InvalidImage("The image is empty (0 pixels wide or high).")
    icc = image.info.get("icc_profile") if image.mode in _RGB_MODES else None
    try:
        image.load()
        rgb, alpha = _split(ImageOps.exif_transpose(image))
    except DECODE_ERRORS as exc:
        log.debug("unusable image: %s: %s", type(exc).__name__, exc)
        raise InvalidImage(CORRUPT) from None
    return Photo(rgb=rgb, alpha=alpha, format=str(image.format or "RAW"), icc_profile=icc or None)


def _checked_open(data: bytes, limits: Limits) -> Image.Image:
    """Open *data* (header only) within the byte and pixel limits."""
    if not data:
        raise InvalidImage("The file is empty.")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"The file is {_mb(len(data))}; the largest accepted is {_mb(limits.max_bytes)}."
        )
    image = _open(data)
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"The image is {width}x{height} ({width * height / 1e6:.1f} MP); the largest "
            f"accepted is {limits.max_pixels / 1e6:.1f} MP."
        )
    return image


def _open(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        # Our own pixel limit (checked by the caller) replaces Pillow's global warning.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=FORMATS)
        except Image.DecompressionBombError:
            raise ImageTooLarge("The image has far too many pixels to process.") from None
        except UnidentifiedImageError:
            fmt = _format_of(data)
            if fmt:
                raise UnsupportedFormat(f"{fmt} images are not supported. Use {_EITHER}.") from None
            raise InvalidImage(f"The file is not an image we can read ({_READABLE}).") from None
        except DECODE_ERRORS as exc:  # e.g. a JPEG cut short inside its header (ICC profile)
            log.debug("unreadable image header: %s: %s", type(exc).__name__, exc)
            raise InvalidImage(CORRUPT) from None


def _format_of(data: bytes) -> str | None:
    """Name the format when Pillow knows it but we do not accept it (e.g. PDF, ICO)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as other:
                return other.format
        except Exception:  # anything at all means "not an image"
            pass
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return "HEIC"  # no opener for it: pillow-heif is not installed
    return None


def _split(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """Return (8-bit RGB image, its alpha or None) for any Pillow mode."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    alpha = None
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        alpha = image.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None  # an alpha channel that hides nothing
    return image.convert("RGB"), alpha


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit and float grayscale to 8 bits (Pillow's convert would clip instead)."""
    values = np.asarray(image, dtype=np.float32)
    top = float(values.max())
    scale = 255.0 if image.mode == "F" and top <= 1.0 else (65535.0 if top > 255 else 255.0)
    return Image.fromarray(np.clip(values * (255.0 / scale), 0, 255).astype(np.uint8), "L")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"
