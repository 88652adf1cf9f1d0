"""Running one job item, idempotently (no Flask, no broker: both engines call this).

At-least-once delivery (a worker killed mid-item, a re-sent message, a restored one) becomes
one record and one charge per item like this:

* the item is *claimed* in the store with a short lease, renewed by a thread while it runs;
  a second delivery finds it leased (or done) and does nothing;
* its record id was fixed when the item was made, and the image store's ``add`` with a given
  id returns the record already there, so a run that died after storing changes nothing;
* the key is charged under the item's id as a token, in one atomic write with the token
  (:meth:`KeyStore.charge_key`), so a second run never charges again, and a refund gives
  back only a charge that was made, once;
* every later write names the claim (its attempt number): a worker whose lease was lost to
  another can no longer change the item.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from cutout.apikeys import KeyService
from cutout.errors import (
    CutoutError,
    EngineBusy,
    InvalidImage,
    InvalidName,
    NotFound,
    StorageError,
)
from cutout.imaging.compose import OutputOptions, parse_color
from cutout.service import ImageService, clean_name
from cutout.storage.jobs import Job, JobItem, JobStore
from cutout.urlfetch import FetchPolicy, fetch

log = logging.getLogger(__name__)

#: Credits one item costs: the same as one image on POST /api/v1/images.
ITEM_COST = 1.0
#: Faults worth another try later: the engine's queue was full or memory was short (both
#: EngineBusy), or the store did not answer. Bad input is never retried.
TRANSIENT = (EngineBusy, StorageError)
BACKOFF_BASE = 2.0
BACKOFF_MAX = 60.0


@dataclass(frozen=True)
class Outcome:
    kind: Literal["done", "failed", "retry", "skipped"]
    delay: float = 0.0  # for "retry": seconds before the item is sent again
    seconds: float = 0.0  # how long the item ran


def output_options(options: dict[str, Any], png_compression: int) -> OutputOptions:
    """A job's stored output choices (the API's OutputChoices) as the engine takes them."""
    background = options.get("background")
    return OutputOptions(
        format=options.get("format", "png"),
        background=parse_color(background) if background else None,
        crop=bool(options.get("crop")),
        crop_margin=int(options.get("margin") or 0),
        mask_only=bool(options.get("mask_only")),
        png_compression=png_compression,
    )


def backoff(attempt: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_BASE**attempt))


@dataclass
class ItemRunner:
    jobs: JobStore
    images: ImageService
    keys: KeyService | None
    lease: float
    max_attempts: int
    png_compression: int
    fetch_policy: FetchPolicy
    on_job_done: Callable[[Job], None] = lambda job: None
    on_item_done: Callable[[Outcome], None] = lambda outcome: None

    def run(self, item_id: str) -> Outcome:
        """Claim and run *item_id* if it is there to run; say what happened."""
        start = time.time()
        item = self.jobs.claim(item_id, start, self.lease)
        if item is None:
            return Outcome("skipped")
        outcome = self._run_claimed(item, start)
        outcome = Outcome(outcome.kind, outcome.delay, time.time() - start)
        if outcome.kind in ("done", "failed"):
            self.on_item_done(outcome)
            finished = self.jobs.complete_job(item.job_id, time.time())
            if finished is not None:
                self.on_job_done(finished)
        return outcome

    def _run_claimed(self, item: JobItem, start: float) -> Outcome:
        if item.attempts > self.max_attempts:
            return self._fail(
                item, "This photo could not be processed: too many attempts.", "gave_up"
            )
        job = self.jobs.get_job(None, item.job_id)
        try:
            with self._leased(item):
                image_id = self._work(job, item)
        except TRANSIENT as exc:
            self._refund(job, item)
            delay = backoff(item.attempts)
            log.info("item %s: %s; again in %.0f s", item.id, exc, delay)
            self.jobs.release(item.id, item.attempts, time.time() + delay + self.lease)
            return Outcome("retry", delay)
        except CutoutError as exc:
            self._refund(job, item)
            return self._fail(item, str(exc), exc.code)
        self.jobs.finish(item.id, item.attempts, time.time(), image_id=image_id)
        self._drop_input(item)
        return Outcome("done")

    def _fail(self, item: JobItem, message: str, code: str) -> Outcome:
        self.jobs.finish(item.id, item.attempts, time.time(), error=message, error_code=code)
        self._drop_input(item)
        return Outcome("failed")

    def _drop_input(self, item: JobItem) -> None:
        if item.input_ref:
            try:
                self.jobs.delete_input(item.input_ref)
            except StorageError as exc:  # an orphan file costs disk, not correctness
                log.warning("could not delete the input of item %s: %s", item.id, exc)

    def _work(self, job: Job, item: JobItem) -> str:
        """The record id of the item's result: found again, reused, or made now."""
        try:
            return self.images.store.get(job.user_id, item.record_id).id  # an earlier run's
        except NotFound:
            pass
        data = self._input(item)
        earlier = self._earlier_result(job, item, data)
        if earlier is not None:
            self._refund(job, item)  # an earlier run of this item may have charged: no image
            return earlier
        self._charge(job, item)
        record = self.images.create(
            job.user_id,
            _record_name(item.name),
            data,
            output=output_options(job.options, self.png_compression),
            quality=job.options.get("quality"),  # None (older jobs too): the engine's default
            record_id=item.record_id,
        )
        return record.id

    def _input(self, item: JobItem) -> bytes:
        if item.input_ref:
            try:
                return self.jobs.read_input(item.input_ref)
            except NotFound:
                raise InvalidImage("The photo was not kept (the job's upload failed).") from None
        if item.url:
            return fetch(item.url, self.fetch_policy, client=f"user:{item.user_id}").data
        raise InvalidImage("The item has no photo.")

    def _earlier_result(self, job: Job, item: JobItem, data: bytes) -> str | None:
        """The owner's own earlier result for these bytes and options (never another user's)."""
        sha256 = item.sha256 or hashlib.sha256(data).hexdigest()
        found = self.jobs.find_done(job.user_id, sha256, job.options_key)
        if found is None:
            return None
        try:
            return self.images.store.get(job.user_id, found).id
        except NotFound:  # deleted since: compute again
            return None

    def _charge(self, job: Job, item: JobItem) -> None:
        """One credit, under the item's id as token: charged once however often it runs."""
        if self.keys is None or job.key_id is None:
            return
        self.keys.charge(self.keys.store.get_key(job.key_id), ITEM_COST, token=_token(item))
        self.jobs.set_charged(item.id, item.attempts, True)  # shown in the store, for people

    def _refund(self, job: Job, item: JobItem) -> None:
        """Give the item's credit back, if it was charged (once, by token)."""
        if self.keys is None or job.key_id is None:
            return
        try:
            self.keys.refund(self.keys.store.get_key(job.key_id), ITEM_COST, token=_token(item))
            self.jobs.set_charged(item.id, item.attempts, False)
        except CutoutError as exc:
            log.warning("no refund for item %s: %s", item.id, exc)

    @contextmanager
    def _leased(self, item: JobItem) -> Iterator[None]:
        """Renew the item's lease every third of it while the block runs."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease / 3):
                try:
                    if not self.jobs.renew(item.id, item.attempts, time.time() + self.lease):
                        log.warning("item %s: lease lost to another worker", item.id)
                        return
                except CutoutError as exc:
                    log.warning("item %s: lease not renewed: %s", item.id, exc)

        thread = threading.Thread(target=renew, name=f"lease-{item.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def _token(item: JobItem) -> str:
    return f"job-item:{item.id}"


def _record_name(name: str) -> str:
    """The record's name: the input's file name without its extension, as the page names
    the photos it uploads."""
    stem = os.path.splitext(os.path.basename(name.replace("\\", "/")))[0] or name
    try:
        return clean_name(stem[:100])
    except InvalidName:
        return "photo"
