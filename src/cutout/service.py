"""Use cases of the web app: upload, list, rename, delete, read images (no Flask here).

Views parse the request, call one method here, and render or serialise what comes back; every
rule (names, limits, ownership, what gets stored) lives here or below, so the JSON and HTML
surfaces cannot drift apart and tests can drive the rules without HTTP.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from PIL import Image

from cutout.config import QUALITIES
from cutout.engine.base import Admission, Engine, with_quality
from cutout.errors import InvalidImage, InvalidName, InvalidParameter, LimitReached
from cutout.imaging import png
from cutout.imaging.compose import JPEG_MAX_SIDE, OutputOptions
from cutout.imaging.confidence import needs_review
from cutout.imaging.decode import Limits, Photo, load_image, probe
from cutout.memory import estimate, largest_pixels, options_cost, quality_cost
from cutout.pipeline import predict_and_refine, remove_background
from cutout.storage.base import ImageInfo, ImageStore, Kind, NewImage, NewRecord, Record
from cutout.text import UNSAFE_CHARACTERS
from cutout.thumbnails import make_thumbnails, store_thumbnails

NAME_MAX = 100
T = TypeVar("T")
#: What a request costs beyond its removal, in bytes, from the photo's (width, height).
ExtraCost = Callable[[int, int], int]
UNSAFE_NAME_CHARACTERS = UNSAFE_CHARACTERS
#: Uploads in these formats are kept byte for byte; browsers can show them.
BROWSER_FORMATS = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "AVIF": "image/avif",
    "BMP": "image/bmp",
}


def clean_name(raw: str | None) -> str:
    """Trim *raw*, strip control characters, and check its length (1-100 characters).

    Whitespace (tabs, newlines) folds into single spaces. Control characters (NUL, ESC...),
    lone surrogates (which no database can store as text) and the bidirectional overrides that
    make a name read differently from what it holds are removed, not refused: a name pasted
    from somewhere with stray controls is still a usable name. Other format characters stay
    (the zero-width joiner builds emoji).
    """
    name = " ".join((raw or "").split())  # trims, and folds newlines/tabs into spaces
    name = " ".join(UNSAFE_NAME_CHARACTERS.sub("", name).split())
    if not name:
        raise InvalidName("Please give the image a name.")
    if len(name) > NAME_MAX:
        raise InvalidName(f"The name is too long: at most {NAME_MAX} characters, please.")
    return name


def clean_quality(raw: str | None) -> str | None:
    """The quality mode a request asks for (None or "": the server's default)."""
    if not raw:
        return None
    if raw not in QUALITIES:
        raise InvalidParameter(
            f"Unknown quality {raw[:20]!r}; use one of: {', '.join(QUALITIES)}.",
            "invalid_quality",
        )
    return raw


@dataclass
class ImageService:
    store: ImageStore
    engine: Callable[[], Engine]  # resolved per call: the model may still be loading at start
    admission: Admission  # bounds whole removals by count and by memory, not just the model
    limits: Limits
    user_limit: int
    output: OutputOptions
    #: each user's uploads being processed in this process (see :meth:`_place`)
    _running: Counter[str] = field(default_factory=Counter, init=False, repr=False)
    _counting: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def create(
        self,
        user_id: str,
        name: str | None,
        data: bytes | None,
        output: OutputOptions | None = None,
        quality: str | None = None,
        *,
        record_id: str | None = None,
    ) -> Record:
        """Remove the background of *data* and store both images under *name*.

        Nothing is stored unless processing succeeded. The limit is checked first, counting
        the user's uploads in progress (so neither a full account nor a burst beyond the room
        left waits for the model), and enforced again, atomically, by the store.
        *output* replaces the service's default output options (the native API's choices);
        *quality* the engine's default quality mode (``fast``, ``balanced``, ``best``).
        *record_id* fixes the new record's id (a batch job's item): a record already stored
        under it is returned instead (see :meth:`ImageStore.add`).
        """
        image_name = clean_name(name)
        quality = clean_quality(quality)
        if not data:
            raise InvalidImage("Please choose an image to upload.")
        with self._place(user_id, record_id):
            return self._create(user_id, image_name, data, output, quality, record_id)

    @contextmanager
    def _place(self, user_id: str, record_id: str | None) -> Iterator[None]:
        """Hold one of the user's places under the limit while an upload is processed, or
        raise LimitReached at once.

        The uploads this process is running count as stored: 20 uploads at once from a user
        with room for 5 all ran the model, and the store refused 15 of them afterwards (a
        visitor's burst cost 20 removals of CPU; 48 s of a test on a Zen 3). Each process
        counts only its own uploads: a burst spread over several processes (gunicorn workers,
        pods) can still run the model for uploads the store then refuses, and the store's
        atomic check keeps the limit.
        A job's item (*record_id*) keeps the plain check: a retried item whose record is
        stored must reach the store, which returns that record.
        """
        with self._counting:
            running = self._running[user_id] if record_id is None else 0
            if self.store.count(user_id) + running >= self.user_limit:
                raise LimitReached()
            if record_id is None:
                self._running[user_id] += 1
        try:
            yield
        finally:
            if record_id is None:
                with self._counting:
                    self._running[user_id] -= 1
                    if not self._running[user_id]:
                        del self._running[user_id]

    def _create(
        self,
        user_id: str,
        image_name: str,
        data: bytes,
        output: OutputOptions | None,
        quality: str | None,
        record_id: str | None,
    ) -> Record:
        options = output or self.output

        def extra(width: int, height: int) -> int:
            return options_cost(options, width * height) + quality_cost(quality)

        with self.admitted(data, extra):
            engine_now = with_quality(self.engine(), quality)
            cutout = remove_background(data, engine_now, limits=self.limits, options=options)
            original = _original(data, cutout.photo)  # re-encoding works on the decoded photo
            processed = NewImage(
                cutout.output.data,
                cutout.output.media_type,
                cutout.output.width,
                cutout.output.height,
            )
            # Thumbnails too are made here, from the decoded photo, inside the memory budget.
            # With other output options (the native API's) the stored cut-out may be flattened,
            # cropped or a mask: its thumbnail is then made from the stored file, on request.
            thumbnails = make_thumbnails(
                cutout.photo,
                cutout.alpha if output is None else None,
                original_sha256=original.sha256,
                processed_sha256=processed.sha256,
            )
            engine, model, confidence = cutout.engine, cutout.model, cutout.confidence
            del cutout  # the decoded photo goes before the next removal may start
        record = NewRecord(
            user_id=user_id,
            image_name=image_name,
            original=original,
            processed=processed,
            engine=engine,
            model=model,
            confidence=confidence,
            needs_review=needs_review(confidence),
        )
        stored = self.store.add(record, limit=self.user_limit, record_id=record_id)
        store_thumbnails(self.store, stored, thumbnails)
        return stored

    def cut(
        self,
        data: bytes | None,
        render: Callable[[Photo, Image.Image], T],
        extra_cost: ExtraCost | None = None,
        quality: str | None = None,
    ) -> tuple[T, float | None]:
        """Stateless removal (remove.bg's ``/v1.0/removebg``): nothing is stored.

        Decodes *data*, finds the subject and hands the photo and its full-size alpha to
        *render*, all inside the same admission gate as :meth:`create`, so every surface shares
        one bound on memory and a full queue answers "busy" everywhere. *extra_cost* says
        what *render* costs beyond the removal (a background picture it decodes, canvases
        larger than the photo), from the photo's size: it is reserved with the removal's.
        *quality* is the engine's quality mode (None: its default).
        Returns what *render* made and the cut-out's confidence (None when the engine cannot
        score itself).
        """
        if not data:
            raise InvalidImage("Please send an image.")
        quality = clean_quality(quality)

        def extra(width: int, height: int) -> int:
            return (extra_cost(width, height) if extra_cost else 0) + quality_cost(quality)

        with self.admitted(data, extra):
            photo = load_image(data, self.limits)
            engine = with_quality(self.engine(), quality)
            prediction, alpha = predict_and_refine(photo, engine)
            return render(photo, alpha), prediction.confidence

    @contextmanager
    def admitted(self, data: bytes, extra_cost: ExtraCost | None = None) -> Iterator[None]:
        """The gate every removal goes through, whatever the surface (the form, an API...):
        ``with service.admitted(data): cutout = remove_background(data, ...)``.

        The image's size is read from its header first, so bad input is refused before any
        wait; then the ``with`` block holds a slot and the removal's estimated peak memory
        (:mod:`cutout.memory`) from the budget. Do all the work on the decoded photo inside
        the block, and drop it there: what outlives the block is not accounted for.

        :raises InvalidInput: the bytes are not an acceptable image.
        :raises ImageTooLarge: the image could never fit in the memory budget (413).
        :raises EngineBusy: no room now, and none came within the queue's timeout (503).
        """
        width, height = probe(data, self.limits)
        extra = extra_cost(width, height) if extra_cost else 0
        with self.admitted_size(width, height, extra):
            yield

    @contextmanager
    def admitted_size(self, width: int, height: int, extra: int = 0) -> Iterator[None]:
        """:meth:`admitted` for an image whose size is known (a stored record's original),
        reserving *extra* bytes too (what the request decodes or draws beyond the removal)."""
        budget = self.admission.budget or 0
        too_large = (
            f"The image is {width}x{height} ({width * height / 1e6:.1f} MP); this server can "
            f"process images up to {largest_pixels(budget) / 1e6:.1f} MP."
        )
        if extra and estimate(width, height) <= budget:  # the extras are what does not fit
            too_large = (
                "This request needs more memory than the server can give one request: "
                "use a smaller background picture, smaller margins or a smaller output size."
            )
        with self.admission.admit(estimate(width, height) + extra, too_large=too_large):
            yield

    def history(self, user_id: str) -> list[Record]:
        return self.store.list(user_id)

    def rename(self, user_id: str, record_id: str, name: str | None) -> Record:
        return self.store.rename(user_id, record_id, clean_name(name))

    def delete(self, user_id: str, record_id: str) -> None:
        self.store.delete(user_id, record_id)

    def image(self, user_id: str, record_id: str, kind: Kind) -> tuple[Record, ImageInfo, bytes]:
        record = self.store.get(user_id, record_id)
        info, data = self.store.read_image(user_id, record_id, kind)
        return record, info, data


def _original(data: bytes, photo: Photo) -> NewImage:
    """The upload as the user sent it, unless browsers cannot show it (HEIC, TIFF): then JPEG,
    or PNG for images wider or taller than JPEG allows (found by the fuzzer: a 500)."""
    media_type = BROWSER_FORMATS.get(photo.format)
    if media_type:
        return NewImage(data, media_type, *photo.size)
    if max(photo.size) > JPEG_MAX_SIDE:
        encoded = png.encode(np.asarray(photo.rgb), level=1)
        return NewImage(encoded, "image/png", *photo.size)
    buffer = io.BytesIO()
    photo.rgb.save(buffer, "JPEG", quality=92)
    return NewImage(buffer.getvalue(), "image/jpeg", *photo.size)
