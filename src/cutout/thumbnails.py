"""Thumbnails: the history shows records at display size, never the full-size images.

Twenty 12 MP photos are about 100 MB of originals and more of cut-outs; their thumbnails are a
few MB in all. Each record gets two, WebP, at most :data:`SIDE` pixels on the long side (the
history card shows them at up to ~520 CSS px, so this stays sharp on 1.25x screens): the
original, and the current cut-out with its alpha (made with the one compositor, so the
thumbnail looks like the download). Both are made with the same size arithmetic, so the
before/after slider lays one exactly over the other.

They are made right after an upload or an edit, from the decoded photo and alpha already in
memory; a record without one (made before thumbnails existed, or whose save failed) gets it on
first request. A thumbnail remembers the sha256 of its source, so one left over from before an
edit or a reset is recognised as stale.
"""

from __future__ import annotations

import io
import logging

from PIL import Image

from cutout.errors import StorageError
from cutout.imaging.compose import OutputOptions, compose
from cutout.imaging.decode import Photo
from cutout.storage.base import ImageStore, Kind, Record, Thumbnail

log = logging.getLogger(__name__)

SIDE = 640
QUALITY = 80
MEDIA_TYPE = "image/webp"


def fitted_size(size: tuple[int, int], side: int = SIDE) -> tuple[int, int]:
    """*size* scaled down (never up) to fit *side*: the compositor's own arithmetic."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    if scale >= 1.0:
        return size
    return max(1, int(width * scale)), max(1, int(height * scale))


def original_thumbnail(photo: Photo, source_sha256: str) -> Thumbnail:
    """The photo at display size (with its own transparency, if it has any)."""
    size = fitted_size(photo.size)
    image = photo.rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if photo.alpha is not None:
        image.putalpha(photo.alpha.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=QUALITY, method=4)
    return Thumbnail(buffer.getvalue(), MEDIA_TYPE, *size, source_sha256)


def cutout_thumbnail(photo: Photo, alpha: Image.Image, source_sha256: str) -> Thumbnail:
    """The cut-out at display size, made by the compositor (WebP keeps the alpha)."""
    options = OutputOptions(format="webp", max_side=SIDE, quality=QUALITY)
    encoded = compose(photo, alpha, options)
    return Thumbnail(encoded.data, MEDIA_TYPE, encoded.width, encoded.height, source_sha256)


Made = list[tuple[Kind, Thumbnail]]


def make_thumbnails(
    photo: Photo,
    alpha: Image.Image | None,
    *,
    original_sha256: str | None,
    processed_sha256: str | None,
) -> Made:
    """The thumbnails of a record's original (if its hash is given) and cut-out.

    *alpha* None: the stored cut-out is not simply the photo with this alpha (an API client
    asked for it flattened, cropped or as a mask), so its thumbnail is made from the stored
    file on first request instead.
    """
    made: Made = []
    if original_sha256 is not None:
        made.append(("original", original_thumbnail(photo, original_sha256)))
    if processed_sha256 is not None and alpha is not None:
        made.append(("processed", cutout_thumbnail(photo, alpha, processed_sha256)))
    return made


def save_thumbnails(
    store: ImageStore,
    record: Record,
    photo: Photo,
    alpha: Image.Image | None,
    *,
    original: bool = True,
) -> None:
    """Make and store the record's cut-out thumbnail (and, if *original*, the original's)."""
    made = make_thumbnails(
        photo,
        alpha,
        original_sha256=record.original.sha256 if original and record.original else None,
        processed_sha256=record.processed.sha256 if record.processed else None,
    )
    store_thumbnails(store, record, made)


def store_thumbnails(store: ImageStore, record: Record, made: Made) -> None:
    """Best effort: a failure here must not fail the upload or edit that already succeeded;
    the thumbnail is made again on first request."""
    for kind, thumb in made:
        try:
            store.save_thumbnail(record.user_id, record.id, kind, thumb)
        except StorageError as exc:
            log.warning("Could not store the %s thumbnail of %s: %s", kind, record.id, exc)


def is_current(thumb: Thumbnail | None, record: Record, kind: Kind) -> bool:
    """True if *thumb* was made from the record's current *kind* image.

    Seed-era records do not know their images' hashes (the images are base64 in the document
    and never change), so any thumbnail of theirs is current, unless the cut-out was edited
    (then the record knows the edit's hash).
    """
    if thumb is None:
        return False
    info = record.original if kind == "original" else record.processed
    return info is None or thumb.source_sha256 == info.sha256
