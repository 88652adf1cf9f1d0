"""The JobStore contract (claims, leases, fencing, dedup, cancel) on [sqlite] and [mongomock]."""

from __future__ import annotations

import secrets
import threading
import time

import pytest

from cutout.errors import NotFound
from cutout.storage import JobStore, open_job_store
from cutout.storage.jobs import NewItem, NewJob
from tests.storage.conftest import Backend, new_record


@pytest.fixture
def jobs(backend: Backend) -> JobStore:
    return open_job_store(backend.store)


def _job(jobs: JobStore, n: int = 3, user: str = "alice", now: float = 100.0) -> str:
    items = [
        NewItem(f"p{i}.jpg", secrets.token_hex(12), jobs.put_input(iter([b"ab", bytes([i])])))
        for i in range(n)
    ]
    job = jobs.add_job(NewJob(user, "k1", {"format": "png"}, "opt"), items, now, now + 5)
    return job.id


def test_a_job_keeps_its_items_and_input_bytes_and_is_its_owners_only(jobs: JobStore) -> None:
    job_id = _job(jobs)
    job = jobs.get_job("alice", job_id)
    assert job.status == "queued" and job.total == 3 and job.counts.queued == 3
    assert job.options == {"format": "png"}
    items = jobs.list_items(job_id)
    assert [i.index for i in items] == [0, 1, 2] and items[1].name == "p1.jpg"
    assert items[2].input_ref and jobs.read_input(items[2].input_ref) == b"ab\x02"
    assert [i.index for i in jobs.list_items(job_id, offset=1, limit=1)] == [1]
    with pytest.raises(NotFound):
        jobs.get_job("mallory", job_id)
    assert jobs.list_jobs("mallory") == [] and [j.id for j in jobs.list_jobs("alice")] == [job_id]


def test_an_input_whose_stream_fails_leaves_nothing(jobs: JobStore) -> None:
    def chunks() -> object:
        yield b"x" * 10
        raise ValueError("too large")

    with pytest.raises(ValueError):
        jobs.put_input(chunks())  # type: ignore[arg-type]


def test_one_claim_at_a_time_and_a_lost_claim_cannot_write(jobs: JobStore) -> None:
    job_id = _job(jobs, 1)
    item = jobs.list_items(job_id)[0]
    first = jobs.claim(item.id, now=200.0, lease=10.0)
    assert first is not None and first.attempts == 1 and first.status == "running"
    assert jobs.claim(item.id, now=205.0, lease=10.0) is None  # leased
    assert jobs.get_job("alice", job_id).status == "running"
    assert jobs.renew(item.id, 1, 220.0)
    second = jobs.claim(item.id, now=221.0, lease=10.0)  # the first worker died
    assert second is not None and second.attempts == 2
    assert not jobs.finish(item.id, 1, 222.0, image_id="a" * 24)  # fenced off
    assert jobs.set_charged(item.id, 2, True) and not jobs.set_charged(item.id, 2, True)
    assert jobs.finish(item.id, 2, 223.0, image_id="b" * 24)
    assert jobs.claim(item.id, now=300.0, lease=10.0) is None
    done = jobs.complete_job(job_id, 224.0)
    assert done is not None and done.status == "done" and done.counts.done == 1
    assert jobs.complete_job(job_id, 225.0) is None  # once
    assert jobs.find_done("alice", item.sha256 or "", "opt") == "b" * 24
    assert jobs.find_done("bob", item.sha256 or "", "opt") is None  # never across users


def test_concurrent_claims_give_the_item_to_one(jobs: JobStore) -> None:
    item = jobs.list_items(_job(jobs, 1))[0]
    won: list[object] = []
    threads = [
        threading.Thread(target=lambda: won.append(jobs.claim(item.id, 200.0, 10.0)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([w for w in won if w is not None]) == 1


def test_due_finds_expired_leases_and_with_queued_too_lost_messages(jobs: JobStore) -> None:
    job_id = _job(jobs, 2, now=100.0)  # due at 105
    a, b = jobs.list_items(job_id)
    assert jobs.claim(a.id, 100.0, 10.0)
    assert jobs.due(104.0, 5.0, queued_too=True) == []
    assert jobs.due(106.0, 5.0, queued_too=False) == []  # b is queued, a leased until 110
    assert jobs.due(106.0, 5.0, queued_too=True) == [b.id]
    assert jobs.due(106.5, 5.0, queued_too=True) == []  # pushed on: taken once
    assert sorted(jobs.due(112.0, 5.0, queued_too=True)) == sorted([a.id, b.id])
    assert jobs.get_item(a.id).status == "queued"
    assert jobs.release(a.id, 1, 150.0) is False  # a's claim was given up


def test_cancel_stops_the_queued_items_only(jobs: JobStore) -> None:
    job_id = _job(jobs, 3)
    first = jobs.list_items(job_id)[0]
    assert jobs.claim(first.id, 200.0, 10.0)
    with pytest.raises(NotFound):
        jobs.cancel_job("mallory", job_id, 201.0)
    job = jobs.cancel_job("alice", job_id, 201.0)
    assert job.status == "cancelled" and job.counts.cancelled == 2 and job.counts.running == 1
    assert jobs.finish(first.id, 1, 202.0, error="broken", error_code="invalid_image")
    assert jobs.get_job("alice", job_id).counts.failed == 1


def test_an_add_with_a_given_record_id_is_idempotent(backend: Backend) -> None:
    record_id = secrets.token_hex(12)
    first = backend.store.add(new_record(), limit=5, record_id=record_id)
    again = backend.store.add(new_record(), limit=5, record_id=record_id)
    assert first.id == again.id == record_id
    assert backend.store.count("alice") == 1
    assert backend.stored_images() == 2


def test_the_sweep_removes_only_old_inputs_no_item_names(jobs: JobStore) -> None:
    """A submission cut short by a crash leaves its stored photos with no job naming them."""
    job_id = _job(jobs, n=2)
    orphan = jobs.put_input(iter([b"orphan"]))
    assert jobs.sweep_inputs(time.time() - 3600) == 0  # stored since: too recent to judge
    assert jobs.read_input(orphan.ref) == b"orphan"
    assert jobs.sweep_inputs(time.time() + 60) == 1
    with pytest.raises(NotFound):
        jobs.read_input(orphan.ref)
    for item in jobs.list_items(job_id):
        assert item.input_ref and jobs.read_input(item.input_ref)  # named by an item: kept
    assert jobs.sweep_inputs(time.time() + 60) == 0


def test_purge_removes_jobs_ended_before_the_cutoff_and_nothing_still_running(
    jobs: JobStore,
) -> None:
    ended = _job(jobs, 2)
    for item in jobs.list_items(ended):
        assert jobs.claim(item.id, 200.0, 10.0)
        assert jobs.finish(item.id, 1, 201.0, image_id="c" * 24)
    assert jobs.complete_job(ended, 202.0) is not None
    cancelled_mid_item = _job(jobs, 2)  # cancelled while one item still runs
    running = jobs.list_items(cancelled_mid_item)[0]
    assert jobs.claim(running.id, 200.0, 10.0)
    jobs.cancel_job("alice", cancelled_mid_item, 202.0)
    queued = _job(jobs, 1)
    ref = running.input_ref or ""  # the cancel removed the queued item's photo; not this one

    assert jobs.purge_finished(before=202.0) == 0  # ended at 202, not before it
    assert jobs.purge_finished(before=1e12) == 1
    with pytest.raises(NotFound):
        jobs.get_job("alice", ended)
    assert jobs.list_items(ended) == []
    assert jobs.get_job("alice", cancelled_mid_item).counts.running == 1
    assert jobs.read_input(ref)
    assert jobs.get_job("alice", queued).status == "queued"
    # once its last item ends, the cancelled job goes too, with the photo it still held
    assert jobs.finish(running.id, 1, 203.0, error="stopped", error_code="cancelled")
    assert jobs.purge_finished(before=1e12) == 1
    with pytest.raises(NotFound):
        jobs.read_input(ref)
