"""Batch jobs, the submitting side: make a job from uploads, archives or URLs, read it,
cancel it, stream its results as a zip (no Flask here; the API's views call this).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from cutout.errors import BodyTooLarge, InvalidInput, NotFound
from cutout.storage.base import ImageStore
from cutout.storage.jobs import Job, JobItem, JobStore, NewItem, NewJob, StoredInput

CHUNK = 256 * 1024
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
#: Archive members that are never photos: macOS resource forks, folders' metadata.
SKIPPED = ("__MACOSX/", ".DS_Store", "Thumbs.db")


class Dispatcher(Protocol):
    """Where "work on item X" goes: Celery on Redis, or this process's own threads."""

    def send(self, item_ids: list[str], delay: float = 0.0) -> None:
        """Send the items; a failure to send is logged, not raised (the reaper re-sends)."""
        ...

    def depth(self) -> int | None:
        """Messages waiting in the queue, or None when that cannot be known now."""
        ...


@dataclass(frozen=True)
class Upload:
    name: str
    stream: IO[bytes]


@dataclass(frozen=True)
class Url:
    url: str


Source = Upload | Url


def stored_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options as a job keeps them: a ``quality`` of None (the server's default) is left
    out, so such a job is stored, keyed and deduplicated as jobs were before quality modes."""
    return {k: v for k, v in options.items() if not (k == "quality" and v is None)}


def options_key(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()


def sources_from_zip(archive: IO[bytes]) -> Iterator[Upload]:
    """The photos of a zip, each read from the archive as it is stored (never all at once)."""
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InvalidInput("The archive is not a valid .zip file.") from None
    with bundle:
        for info in bundle.infolist():
            if info.is_dir() or any(part in info.filename for part in SKIPPED):
                continue
            with bundle.open(info) as member:
                yield Upload(os.path.basename(info.filename), member)


@dataclass
class JobService:
    jobs: JobStore
    images: ImageStore
    dispatcher: Dispatcher
    max_items: int
    max_bytes: int
    lease: float

    def submit(
        self,
        user_id: str,
        key_id: str | None,
        sources: Iterable[Source],
        options: dict[str, Any],
        *,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> Job:
        """Store the photos (streamed) and the job, then send its items. :raises BodyTooLarge:
        over the job's item or byte limit (nothing is kept). :raises InvalidInput: no photo."""
        options = stored_options(options)
        stored: list[StoredInput] = []
        try:
            items = self._items(sources, stored)
            if not items:
                raise InvalidInput("Send at least one photo (images, archive or urls).")
            now = time.time()
            job = self.jobs.add_job(
                NewJob(user_id, key_id, options, options_key(options), webhook_url, webhook_secret),
                items,
                now,
                due_at=now + self.lease,
            )
        except BaseException:
            for item in stored:
                self.jobs.delete_input(item.ref)
            raise
        self.dispatcher.send([item.id for item in self.all_items(job.id)])
        return job

    def _items(self, sources: Iterable[Source], stored: list[StoredInput]) -> list[NewItem]:
        items: list[NewItem] = []
        used = [0]
        for source in sources:
            if len(items) >= self.max_items:
                raise BodyTooLarge(
                    f"Too many photos for one job: at most {self.max_items}; split the batch."
                )
            record_id = secrets.token_hex(12)
            if isinstance(source, Url):
                items.append(NewItem(_url_name(source.url), record_id, url=source.url))
                continue
            put = self.jobs.put_input(self._counted(source.stream, used))
            stored.append(put)
            if put.size == 0:
                raise InvalidInput(f"{source.name or 'A photo'} is empty.")
            items.append(NewItem(source.name or f"photo-{len(items) + 1}", record_id, put))
        return items

    def _counted(self, stream: IO[bytes], used: list[int]) -> Iterator[bytes]:
        while chunk := stream.read(CHUNK):
            used[0] += len(chunk)
            if used[0] > self.max_bytes:
                raise BodyTooLarge(
                    f"The job is too large: at most {self.max_bytes / 1024 / 1024:g} MB of "
                    "photos in one job; split the batch."
                )
            yield chunk

    def all_items(self, job_id: str) -> Iterator[JobItem]:
        offset = 0
        while page := self.jobs.list_items(job_id, offset=offset, limit=500):
            yield from page
            offset += len(page)

    def get(self, user_id: str, job_id: str) -> Job:
        return self.jobs.get_job(user_id, job_id)

    def cancel(self, user_id: str, job_id: str) -> Job:
        return self.jobs.cancel_job(user_id, job_id, time.time())

    def results_zip(self, user_id: str, job_id: str) -> Iterator[bytes]:
        """The done items' cut-outs as a zip, made as it is sent: one image in memory at a
        time (the zip is written in streaming mode, sizes after each file)."""
        self.jobs.get_job(user_id, job_id)  # NotFound before the first byte
        return self._zip(user_id, job_id)

    def _zip(self, user_id: str, job_id: str) -> Iterator[bytes]:
        sink = _Sink()
        names: set[str] = set()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as bundle:
            for item in self.all_items(job_id):
                if item.status != "done" or not item.image_id:
                    continue
                try:
                    info, data = self.images.read_image(user_id, item.image_id, "processed")
                except NotFound:  # deleted from the history since
                    continue
                name = _unique(_stem(item.name) + EXTENSIONS.get(info.media_type, ""), names)
                with bundle.open(name, "w") as entry:
                    entry.write(data)
                del data
                yield sink.take()
        yield sink.take()

    def eta_seconds(self, job: Job, now: float | None = None) -> float | None:
        """Time left at the pace so far (None before the first item is finished)."""
        finished = job.counts.done + job.counts.failed
        left = job.counts.unfinished
        if job.status in ("done", "cancelled") or left == 0:
            return 0.0
        if not finished or job.started_at is None:
            return None
        elapsed = max((now or time.time()) - job.started_at, 1e-3)
        return round(left * elapsed / finished, 1)


class _Sink:
    """A write-only, unseekable file that hands its bytes over as they come."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._written = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _stem(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/")) or "photo"
    stem = os.path.splitext(base)[0] or "photo"
    return stem[:100]


def _unique(name: str, taken: set[str]) -> str:
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}-{n}{ext}"
    taken.add(candidate)
    return candidate


def _url_name(url: str) -> str:
    tail = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    return tail[:100] or "photo"
