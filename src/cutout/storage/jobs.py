"""Batch jobs' state of record: a job and one item per photo (issue 14).

One protocol (:class:`JobStore`), two backends beside the image store: the same SQLite file
(tables from migration 0006, input bytes in files under ``job_inputs/``) or the same MongoDB
database (collections ``jobs`` and ``job_items``, input bytes in the GridFS bucket
``job_inputs``). The broker (Redis) only ever carries "work on item X": everything a worker
needs to resume, retry or refuse an item is here, so a flushed broker loses no job.

Items are *claimed* with a lease (``lease_until``, renewed while the item runs) and every
later write names the attempt that claimed it (``attempts``): a worker whose lease expired
and whose item was claimed again can no longer change it. That fencing, with the record id
fixed when the item is made (:attr:`JobItem.record_id`, which makes the store's ``add``
idempotent), is what turns "delivered at least once" into "one record per item".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

JobStatus = Literal["queued", "running", "done", "cancelled"]
ItemStatus = Literal["queued", "running", "done", "failed", "cancelled"]
#: Items in these states will not change any more (but for a job's deletion).
FINAL: tuple[ItemStatus, ...] = ("done", "failed", "cancelled")
INPUTS = "job_inputs"


@dataclass(frozen=True)
class StoredInput:
    """An input photo written to the store: where, its hash and its size."""

    ref: str
    sha256: str
    size: int


@dataclass(frozen=True)
class NewItem:
    name: str
    record_id: str  # the record this item will make: fixed now, so a second run finds it
    input: StoredInput | None = None  # None for a URL item (fetched when it runs)
    url: str | None = None


@dataclass(frozen=True)
class NewJob:
    user_id: str
    key_id: str | None  # None for a job from the page (no credits)
    options: dict[str, Any]  # the output options, as the API took them
    options_key: str  # a hash of *options*: the dedup key with an input's sha256
    webhook_url: str | None = None
    webhook_secret: str | None = None


@dataclass(frozen=True)
class Counts:
    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def unfinished(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class Job:
    id: str
    user_id: str
    key_id: str | None
    status: JobStatus
    options: dict[str, Any]
    options_key: str
    webhook_url: str | None
    webhook_secret: str | None
    total: int
    created_at: float  # epoch seconds
    started_at: float | None
    finished_at: float | None
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True)
class JobItem:
    id: str
    job_id: str
    user_id: str
    index: int
    name: str
    status: ItemStatus
    attempts: int
    lease_until: float | None
    record_id: str
    image_id: str | None
    error: str | None
    error_code: str | None
    input_ref: str | None
    url: str | None
    sha256: str | None
    options_key: str
    charged: bool
    started_at: float | None
    finished_at: float | None


class JobStore(Protocol):
    """Implementations must be thread-safe, safe across processes, and lazy."""

    def put_input(self, chunks: Iterable[bytes]) -> StoredInput:
        """Write an input photo from *chunks* (never whole in memory); on any error,
        including one raised by the iterator (a size limit), nothing remains."""
        ...

    def read_input(self, ref: str) -> bytes: ...

    def delete_input(self, ref: str) -> None: ...

    def purge_finished(self, before: float, limit: int = 1000) -> int:
        """Delete up to *limit* jobs that finished (done or cancelled) before *before* (epoch
        seconds) and have no item left to run, with their items and any input photo still
        stored; return how many jobs. Their cut-outs are history records and stay."""
        ...

    def sweep_inputs(self, older_than: float) -> int:
        """Delete the input photos stored before *older_than* (epoch seconds) that no item
        names: those of submissions cut short by a crash between storing their photos and
        saving their job. Return how many."""
        ...

    def add_job(self, job: NewJob, items: list[NewItem], now: float, due_at: float) -> Job:
        """Store the job and its items (queued, to be re-sent if not taken by *due_at*)."""
        ...

    def get_job(self, user_id: str | None, job_id: str) -> Job:
        """With counts. *user_id* None: any owner (workers). :raises NotFound:"""
        ...

    def list_jobs(self, user_id: str, limit: int = 100) -> list[Job]:
        """Newest first, with counts."""
        ...

    def list_items(
        self, job_id: str, offset: int = 0, limit: int = 100, status: ItemStatus | None = None
    ) -> list[JobItem]: ...

    def get_item(self, item_id: str) -> JobItem:
        """:raises NotFound:"""
        ...

    def claim(self, item_id: str, now: float, lease: float) -> JobItem | None:
        """Take a queued item, or a running one whose lease expired: ``running``,
        ``attempts`` + 1, leased until ``now + lease``. None if it is not there to take."""
        ...

    def renew(self, item_id: str, attempt: int, until: float) -> bool:
        """Extend the lease of the claim *attempt*; False if that claim was lost."""
        ...

    def set_charged(self, item_id: str, attempt: int, charged: bool) -> bool:
        """Flip the item's charged flag, only from the other value (so once)."""
        ...

    def finish(
        self,
        item_id: str,
        attempt: int,
        now: float,
        *,
        image_id: str | None = None,
        error: str | None = None,
        error_code: str | None = None,
    ) -> bool:
        """``done`` (with *image_id*) or ``failed`` (with *error*), if the claim still holds."""
        ...

    def release(self, item_id: str, attempt: int, until: float) -> bool:
        """Back to ``queued`` (a transient fault), not to be re-sent before *until*."""
        ...

    def due(self, now: float, grace: float, queued_too: bool, limit: int = 500) -> list[str]:
        """Items to send again, each pushed *grace* seconds on so only one caller takes it:
        running ones whose lease expired (their worker died) and, with *queued_too*, queued
        ones past their time (their message was lost: a flushed broker)."""
        ...

    def complete_job(self, job_id: str, now: float) -> Job | None:
        """Mark the job done if no item is left to run; return it the one time that happens."""
        ...

    def cancel_job(self, user_id: str, job_id: str, now: float) -> Job:
        """Cancel the items not started; finished and running items keep going. :raises NotFound:"""
        ...

    def find_done(self, user_id: str, sha256: str, options_key: str) -> str | None:
        """The record id of a done item of *user_id* with these bytes and options, if any."""
        ...

    def counts_by_state(self) -> Counts:
        """Items of all jobs by state (for /metrics)."""
        ...
