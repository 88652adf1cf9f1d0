"""The page's studio, Flask-free: photos from URLs, touch-ups, downloads with options, thumbnails.

Every image here is made at full resolution from what the store holds: the original as
uploaded and the record's current alpha (the alpha channel of its current cut-out). Downloads
go through the one compositor (:func:`~cutout.imaging.compose.compose`), as the CLI and the
APIs do. Touch-ups replay the page's strokes on the full-size alpha
(:mod:`cutout.imaging.brush`) and store the result as the record's edit; the model's cut-out is
kept, so a reset always works.

Decoding a photo is what costs memory, so each full-size operation (an edit, a download) enters
the same admission gate as removals do: a burst of downloads cannot run the process out of
memory either. Thumbnails made on request wait at a gate of their own, one at a time, and
then take their place in the same memory budget.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import posixpath
import threading
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from PIL import Image

from cutout.engine.base import Admission
from cutout.errors import InvalidInput, InvalidUrl, LimitReached, StorageError
from cutout.imaging.brush import Stroke, apply_strokes, check_cost
from cutout.imaging.compose import (
    FORMATS,
    Background,
    BackgroundImage,
    BlurredPhoto,
    Encoded,
    OutputFormat,
    OutputOptions,
    compose,
    fit_size,
    parse_color,
)
from cutout.imaging.decode import Limits, Photo, load_image, load_reduced, probe
from cutout.memory import decode_cost, output_cost, touch_up_cost
from cutout.numbers import parse_float, parse_int
from cutout.pipeline import within_photo_alpha
from cutout.service import ImageService, clean_name
from cutout.storage.base import ImageStore, Kind, NewImage, Record, Thumbnail
from cutout.thumbnails import (
    cutout_thumbnail,
    is_current,
    original_thumbnail,
    save_thumbnails,
)
from cutout.urlfetch import FetchPolicy, fetch

log = logging.getLogger(__name__)

BACKGROUNDS = ("transparent", "color", "blur", "image")
DEFAULT_BLUR = 0.02  # of the long side, as the CLI's default
MAX_BLUR = 0.1
#: No export is ever larger than the original; this only bounds what ``max_side`` may say.
MAX_SIDE = 100_000


@dataclass(frozen=True)
class ExportRequest:
    """What the download panel asks for, as the form sends it (strings, checked here)."""

    format: str = "png"
    background: str = "transparent"  # transparent | color | blur | image
    color: str | None = None  # for "color": #rrggbb, a name, r,g,b
    blur: float = DEFAULT_BLUR  # for "blur": radius as a fraction of the long side
    max_side: int | None = None  # None: the original size
    mask_only: bool = False
    background_image: bytes | None = None  # for "image": the picture's bytes

    @classmethod
    def from_form(cls, form: Mapping[str, str], background_image: bytes | None) -> ExportRequest:
        """Parse the download form's fields. :raises InvalidInput: naming the bad field."""
        return cls(
            format=(form.get("format") or "png").lower(),
            background=(form.get("background") or "transparent").lower(),
            color=form.get("color") or None,
            blur=_float(form.get("blur"), "blur", DEFAULT_BLUR),
            max_side=_side(form.get("max_side")),
            mask_only=(form.get("mask") or "").lower() in ("1", "true", "on", "yes"),
            background_image=background_image or None,
        )


@dataclass
class Studio:
    images: ImageService  # removals go through it: limits, admission, thumbnails
    fetch_policy: FetchPolicy
    #: Thumbnails made on request (records from before thumbnails existed) queue here, one at a
    #: time, rather than at the removals' gate: a first look at an old history asks for dozens
    #: at once, and the gate would refuse most of them (503) instead of letting them wait.
    thumbnail_gate: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(1))

    @property
    def store(self) -> ImageStore:
        return self.images.store

    @property
    def admission(self) -> Admission:
        return self.images.admission

    @property
    def limits(self) -> Limits:
        return self.images.limits

    # -- getting photos in ------------------------------------------------------------------

    def create_from_url(
        self, user_id: str, name: str | None, url: str | None, client: str = ""
    ) -> Record:
        """Download the image at *url* (safely: see :mod:`cutout.urlfetch`) and remove its
        background like an upload; the name defaults to the URL's file name. *client* (the
        caller's address) is who the per-client download cap counts."""
        if not url or not url.strip():
            raise InvalidUrl("Please enter the address (URL) of an image.")
        image_name = clean_name(name) if name and name.strip() else name_from_url(url)
        # Checked before downloading too: a full account should not wait for the download.
        if self.store.count(user_id) >= self.images.user_limit:
            raise LimitReached()
        fetched = fetch(url.strip(), self.fetch_policy, client=client or f"user:{user_id}")
        return self.images.create(user_id, image_name, fetched.data)

    # -- touch-up ---------------------------------------------------------------------------

    def edit(self, user_id: str, record_id: str, strokes: list[Stroke]) -> Record:
        """Apply *strokes* to the record's current alpha; store the result as its edit.

        :raises TouchUpTooCostly: the strokes would cost too much at the record's size (413),
            found before the photo is loaded.
        """
        record = self.store.get(user_id, record_id)
        pixels = 0
        if record.original is not None:
            check_cost(strokes, record.original.width, record.original.height)
            pixels = record.original.width * record.original.height
        with self._admitted(record, touch_up_cost(pixels)):
            photo, alpha = self._load(record)
            alpha = within_photo_alpha(photo, apply_strokes(alpha, strokes))
            encoded = compose(photo, alpha, self.images.output)
            image = NewImage(encoded.data, encoded.media_type, encoded.width, encoded.height)
            record = self.store.save_edit(user_id, record_id, image)
            save_thumbnails(self.store, record, photo, alpha, original=False)
        return record

    def reset(self, user_id: str, record_id: str) -> Record:
        """Back to the model's cut-out (its thumbnail is made again on next request)."""
        return self.store.save_edit(user_id, record_id, None)

    # -- downloads ----------------------------------------------------------------------------

    def export(
        self, user_id: str, record_id: str, request: ExportRequest
    ) -> tuple[Record, Encoded]:
        """The record's cut-out as *request* asks, composed at full resolution.

        A background picture is read from its header first; its decode is reserved with the
        photo's, and it is decoded no larger than the download needs.
        """
        options = self.export_options(request)
        picture = self._background_picture(request)
        record = self.store.get(user_id, record_id)
        original = record.original
        pixels = original.width * original.height if original else 0
        flattened = picture is not None or options.background is not None  # over a picture
        extra = output_cost(
            pixels, format=options.format, flattened=flattened, mask_only=options.mask_only
        ) + (decode_cost(*picture[1]) if picture else 0)
        with self._admitted(record, extra):
            photo, alpha = self._load(record)
            if picture:
                size = fit_size(photo.size, options.max_side)
                background = BackgroundImage(load_reduced(picture[0], self.limits, size))
                options = dataclasses.replace(options, background=background)
            return record, compose(photo, alpha, options)

    def _background_picture(self, request: ExportRequest) -> tuple[bytes, tuple[int, int]] | None:
        """The background picture's bytes and size (from its header), when one is asked for."""
        if request.background != "image" or not request.background_image:
            return None
        return request.background_image, probe(request.background_image, self.limits)

    def export_options(self, request: ExportRequest) -> OutputOptions:
        """Check *request* and turn it into the compositor's options. :raises InvalidInput:"""
        if request.format not in FORMATS:
            raise InvalidInput("The format must be png, webp or jpeg.")
        output_format: OutputFormat = request.format  # narrowed by the check above
        return OutputOptions(
            format=output_format,
            background=self._background(request),
            mask_only=request.mask_only,
            max_side=request.max_side,
            png_compression=self.images.output.png_compression,
        )

    def _background(self, request: ExportRequest) -> Background | None:
        if request.background not in BACKGROUNDS:
            raise InvalidInput("The background must be transparent, color, blur or image.")
        if request.background == "color":
            return parse_color(request.color or "white")
        if request.background == "blur":
            if not 0 < request.blur <= MAX_BLUR:
                raise InvalidInput(f"The blur must be above 0 and at most {MAX_BLUR}.")
            return BlurredPhoto(request.blur)
        if request.background == "image" and not request.background_image:
            raise InvalidInput("Please choose a background picture.")
        return None  # transparent, or a picture: decoded in export(), inside the admission

    # -- thumbnails ---------------------------------------------------------------------------

    def thumbnail(self, user_id: str, record_id: str, kind: Kind) -> Thumbnail:
        """The record's *kind* thumbnail; made (and stored) now if missing or stale."""
        record = self.store.get(user_id, record_id)
        thumb = self.store.read_thumbnail(user_id, record_id, kind)
        if thumb is not None and is_current(thumb, record, kind):
            return thumb
        info, data = self.store.read_image(user_id, record_id, kind)
        # One at a time, and inside the memory budget like every other decode.
        with self.thumbnail_gate, self.images.admitted_size(info.width, info.height):
            photo = load_image(data, self.limits)
            if kind == "original" or photo.alpha is None:
                thumb = original_thumbnail(photo, info.sha256)
            else:  # a cut-out: its own alpha is the subject's
                bare = Photo(photo.rgb, None, photo.format, photo.icc_profile)
                thumb = cutout_thumbnail(bare, photo.alpha, info.sha256)
        try:
            self.store.save_thumbnail(user_id, record_id, kind, thumb)
        except StorageError as exc:  # the page still gets its thumbnail; it is made again later
            log.warning("Could not store the %s thumbnail of %s: %s", kind, record_id, exc)
        return thumb

    # -- internals ----------------------------------------------------------------------------

    def _admitted(self, record: Record, extra: int = 0) -> AbstractContextManager[None]:
        """The removals' gate, reserving the memory a full-size photo of *record* needs, and
        *extra* bytes (a background picture).

        Seed-era records do not know their size; they are admitted at no cost (the slot
        count still bounds them)."""
        original = record.original
        width, height = (original.width, original.height) if original else (0, 0)
        return self.images.admitted_size(width, height, extra)

    def _load(self, record: Record) -> tuple[Photo, Image.Image]:
        """*record*'s original decoded, and its current alpha at the photo's size."""
        _, original = self.store.read_image(record.user_id, record.id, "original")
        _, processed = self.store.read_image(record.user_id, record.id, "processed")
        photo = load_image(original, self.limits)
        return photo, current_alpha(processed, photo.size)


def current_alpha(processed: bytes, size: tuple[int, int]) -> Image.Image:
    """The alpha of a stored cut-out, at the photo's *size*.

    The page's cut-outs carry it as their alpha channel (seed-era ones may be smaller: they
    are scaled up). A stored mask is the alpha itself. What the native API may have stored
    instead, a cut-out flattened on a colour, a JPEG or a crop, no longer holds the alpha of
    the whole photo: such a record can be viewed but not touched up or exported again.
    :raises InvalidInput: saying so.
    """
    with Image.open(io.BytesIO(processed)) as image:
        if image.mode == "L":
            alpha = image.copy()
        elif "A" in image.getbands() or "transparency" in image.info:
            alpha = image.convert("RGBA").getchannel("A")
        else:
            alpha = None
    width, height = size
    if alpha is None or abs(alpha.width / alpha.height - width / height) > 0.005:
        raise InvalidInput(
            "This cut-out was saved flattened, as a JPEG or cropped (by an API request), so "
            "its transparency is not stored. Upload the photo again to edit or export it here."
        )
    if alpha.size != size:
        alpha = alpha.resize(size, Image.Resampling.BILINEAR)
    return alpha


def name_from_url(url: str) -> str:
    """A record name from a URL: its file name without the extension, else its host."""
    parts = urlsplit(url.strip())
    stem = posixpath.splitext(posixpath.basename(unquote(parts.path)))[0]
    name = " ".join(stem.split()) or parts.hostname or "Image from the web"
    return clean_name(name[:100])


def _float(raw: str | None, field: str, default: float) -> float:
    if raw is None or raw.strip() == "":
        return default
    return parse_float(raw, field)


def _side(raw: str | None) -> int | None:
    """``max_side``: empty or "original" for the full size, else a whole number of pixels."""
    if raw is None or raw.strip() in ("", "original", "0"):
        return None
    side = parse_int(raw, "max_side")
    if not 1 <= side <= MAX_SIDE:
        raise InvalidInput("The maximum side must be a whole number of pixels (1 or more).")
    return side
