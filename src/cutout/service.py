"""Use cases of the web app: upload, list, rename, delete, read images (no Flask here).

Views parse the request, call one method here, and render or serialise what comes back; every
rule (names, limits, ownership, what gets stored) lives here or below, so the JSON and HTML
surfaces cannot drift apart and tests can drive the rules without HTTP.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image

from cutout.engine.base import Admission, Engine
from cutout.errors import InvalidImage, InvalidName, LimitReached
from cutout.imaging.compose import OutputOptions
from cutout.imaging.decode import Limits, Photo, load_image
from cutout.pipeline import full_alpha, predict_photo, remove_background
from cutout.storage.base import ImageInfo, ImageStore, Kind, NewImage, NewRecord, Record
from cutout.thumbnails import save_thumbnails

NAME_MAX = 100
T = TypeVar("T")
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
    """Trim *raw* and check its length (1-100 characters)."""
    name = " ".join((raw or "").split())  # trims, and folds newlines/tabs into spaces
    if not name:
        raise InvalidName("Please give the image a name.")
    if len(name) > NAME_MAX:
        raise InvalidName(f"The name is too long: at most {NAME_MAX} characters, please.")
    return name


@dataclass
class ImageService:
    store: ImageStore
    engine: Callable[[], Engine]  # resolved per call: the model may still be loading at start
    admission: Admission  # bounds whole removals (decoded photos are big), not just the model
    limits: Limits
    user_limit: int
    output: OutputOptions

    def create(
        self,
        user_id: str,
        name: str | None,
        data: bytes | None,
        output: OutputOptions | None = None,
    ) -> Record:
        """Remove the background of *data* and store both images under *name*.

        Nothing is stored unless processing succeeded. The limit is checked first (so a full
        account does not wait for the model) and enforced again, atomically, by the store.
        *output* replaces the service's default output options (the native API's choices).
        """
        image_name = clean_name(name)
        if not data:
            raise InvalidImage("Please choose an image to upload.")
        if self.store.count(user_id) >= self.user_limit:
            raise LimitReached()
        with self.admission:
            cutout = remove_background(
                data, self.engine(), limits=self.limits, options=output or self.output
            )
        processed = NewImage(
            cutout.output.data, cutout.output.media_type, cutout.output.width, cutout.output.height
        )
        record = NewRecord(
            user_id=user_id,
            image_name=image_name,
            original=_original(data, cutout.photo),
            processed=processed,
            engine=cutout.engine,
            model=cutout.model,
            confidence=cutout.confidence,
            needs_review=cutout.needs_review,
        )
        stored = self.store.add(record, limit=self.user_limit)
        # With other output options (the native API's) the stored cut-out may be flattened,
        # cropped or a mask: its thumbnail is then made from the stored file, on request.
        alpha = cutout.alpha if output is None else None
        save_thumbnails(self.store, stored, cutout.photo, alpha)
        return stored

    def cut(
        self, data: bytes | None, render: Callable[[Photo, Image.Image], T]
    ) -> tuple[T, float | None]:
        """Stateless removal (remove.bg's ``/v1.0/removebg``): nothing is stored.

        Decodes *data*, finds the subject and hands the photo and its full-size alpha to
        *render*, all inside the same admission gate as :meth:`create`, so every surface shares
        one bound on memory and a full queue answers "busy" everywhere. Returns what *render*
        made and the cut-out's confidence (None when the engine cannot score itself).
        """
        if not data:
            raise InvalidImage("Please send an image.")
        with self.admission:
            photo = load_image(data, self.limits)
            prediction = predict_photo(photo, self.engine())
            return render(photo, full_alpha(photo, prediction.mask)), prediction.confidence

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
    """The upload as the user sent it, unless browsers cannot show it (HEIC, TIFF): then JPEG."""
    media_type = BROWSER_FORMATS.get(photo.format)
    if media_type:
        return NewImage(data, media_type, *photo.size)
    buffer = io.BytesIO()
    photo.rgb.save(buffer, "JPEG", quality=92)
    return NewImage(buffer.getvalue(), "image/jpeg", *photo.size)
