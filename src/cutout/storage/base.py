"""The storage interface: one protocol, two backends (SQLite + files, MongoDB + GridFS).

Records keep the seed's schema names (``_id``, ``user_id``, ``image_name``, ``created_on`` as
"YYYY-MM-DD HH:MM:SS" UTC) plus what we need: sizes, formats, content hashes, the engine and
model used, the cut-out's confidence score. Image bytes never sit inside a record (no base64):
they go to files or GridFS.
Every method takes the caller's ``user_id`` and treats another user's record exactly like a
missing one (:class:`NotFound`), so no code path can leak or touch somebody else's images.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal, Protocol

Kind = Literal["original", "processed"]
KINDS: tuple[Kind, ...] = ("original", "processed")
CREATED_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class ImageInfo:
    """What we know about one stored image without reading its bytes."""

    media_type: str  # "image/png", "image/jpeg", ...
    size_bytes: int
    width: int
    height: int
    sha256: str


def info_json(info: ImageInfo | None) -> dict[str, Any] | None:
    """An image's info as both JSON APIs show it (None for a seed-era image)."""
    return None if info is None else dataclasses.asdict(info)


@dataclass(frozen=True)
class NewImage:
    data: bytes
    media_type: str
    width: int
    height: int

    @cached_property
    def sha256(self) -> str:
        """Hashed once: the service (for thumbnails) and the store both need it."""
        return hashlib.sha256(self.data).hexdigest()

    def info(self) -> ImageInfo:
        return ImageInfo(self.media_type, len(self.data), self.width, self.height, self.sha256)


@dataclass(frozen=True)
class NewRecord:
    user_id: str
    image_name: str
    original: NewImage
    processed: NewImage
    engine: str
    model: str
    confidence: float | None = None  # in [0, 1]; None when the engine cannot score itself
    needs_review: bool | None = None


@dataclass(frozen=True)
class Record:
    id: str  # ``_id`` in JSON and in MongoDB
    user_id: str
    image_name: str
    created_on: str  # "YYYY-MM-DD HH:MM:SS", UTC, as the seed stored it
    original: ImageInfo | None  # None for a seed-era document (base64 inside it)
    processed: ImageInfo | None
    engine: str
    model: str
    confidence: float | None = None  # None for older records and unscored engines
    needs_review: bool | None = None
    # -- touch-up (the studio): ``processed`` is the *current* cut-out, the model's or an edit --
    edited: bool = False  # the current cut-out is a touched-up revision, not the model's
    revision: int = 0  # bumped by every saved edit or reset: names the current cut-out

    @property
    def legacy(self) -> bool:
        """True for documents written by the seed's app, whose images are base64 fields."""
        return self.original is None


@dataclass(frozen=True)
class Thumbnail:
    """A small picture of one of a record's images, for the page's history.

    ``source_sha256`` is the sha256 of the image it was made from, so a thumbnail left over from
    before an edit (or a reset) is recognised as stale and made again.
    """

    data: bytes
    media_type: str
    width: int
    height: int
    source_sha256: str


def now_created_on() -> str:
    return datetime.now(UTC).strftime(CREATED_FORMAT)


class ImageStore(Protocol):
    """What the services need from storage. Implementations must be thread-safe."""

    def add(self, record: NewRecord, *, limit: int, record_id: str | None = None) -> Record:
        """Store the record and both images, or nothing at all.

        *record_id* (24 hex digits) makes the add idempotent: if the user already has a
        record with that id, it is returned and nothing is written (a batch job's item that
        runs twice still makes one record).

        Atomic with respect to the per-user limit: with ``limit`` 5, twenty concurrent calls
        for one user store exactly five records; the others raise :class:`LimitReached`.
        On any failure, no record and no image bytes remain.
        """
        ...

    def count(self, user_id: str) -> int: ...

    def list(self, user_id: str) -> list[Record]:
        """The user's records, newest first, without image bytes."""
        ...

    def get(self, user_id: str, record_id: str) -> Record:
        """:raises NotFound: no such record, a malformed id, or not this user's."""
        ...

    def rename(self, user_id: str, record_id: str, image_name: str) -> Record: ...

    def delete(self, user_id: str, record_id: str) -> None:
        """Delete the record and all its images: edits and thumbnails too. :raises NotFound:"""
        ...

    def read_image(self, user_id: str, record_id: str, kind: Kind) -> tuple[ImageInfo, bytes]:
        """The bytes of one image with its info (computed on the fly for legacy documents)."""
        ...

    def save_edit(self, user_id: str, record_id: str, processed: NewImage | None) -> Record:
        """Make *processed* the record's current cut-out; ``None`` goes back to the model's.

        The model's own cut-out is never overwritten, so going back always works; only the
        latest edit is kept (the one it replaces is deleted). Bumps ``revision``.
        :raises NotFound: no such record, or not this user's (then nothing is stored).
        """
        ...

    def save_thumbnail(self, user_id: str, record_id: str, kind: Kind, thumb: Thumbnail) -> None:
        """Store (or replace) the thumbnail of the record's *kind* image. :raises NotFound:"""
        ...

    def read_thumbnail(self, user_id: str, record_id: str, kind: Kind) -> Thumbnail | None:
        """The stored thumbnail of *kind*, or None if there is none yet. :raises NotFound:"""
        ...

    def ping(self) -> None:
        """Raise :class:`StorageError` unless the backend answers."""
        ...

    def sweep(self) -> int:
        """Remove the images of adds that died (never of one still running); return how many.

        Safe at any time and from any number of processes at once.
        """
        ...

    def close(self) -> None: ...
