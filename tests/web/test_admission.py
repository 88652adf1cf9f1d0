"""Admission by cost (issue 9, fault 5): the gate itself, then through the app on the real model.

The gate is plain threading; its tests use threads that hold a place until told to leave.
The burst that keeps a real server's memory under its budget is in test_live_budget.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine import base
from cutout.engine.base import TRIM_FROM, Admission, Engine
from cutout.errors import EngineBusy, ImageTooLarge
from cutout.extensions import close_app
from cutout.memory import BYTES_PER_PIXEL, FIXED_BYTES, MB, estimate, largest_pixels
from tests.helpers import encode
from tests.web.conftest import Actions
from tests.web.test_faults import stored_files
from tests.web.test_pages import GatedEngine


@contextmanager
def holding(admission: Admission, cost: int) -> Iterator[threading.Event]:
    """Hold *cost* of *admission* on another thread until the block ends."""
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with admission.admit(cost):
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(10)
    try:
        yield leave
    finally:
        leave.set()
        thread.join(10)


def enter_later(admission: Admission, cost: int, log: list[str], name: str) -> threading.Thread:
    def enter() -> None:
        try:
            with admission.admit(cost):
                log.append(name)
        except EngineBusy:
            log.append(f"{name}: busy")

    thread = threading.Thread(target=enter)
    thread.start()
    return thread


def wait_for(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.005)
    assert condition(), "condition never became true"  # type: ignore[operator]


def test_the_estimate_is_the_measured_line() -> None:
    assert estimate(7000, 7000) == int(FIXED_BYTES + BYTES_PER_PIXEL * 49e6)
    assert 600 * MB < estimate(7000, 7000) < 1000 * MB  # fault 5's PNG: 62 KB on disk
    assert largest_pixels(estimate(4000, 3000)) == pytest.approx(12e6, abs=1)


def test_large_reservations_return_freed_memory_before_and_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(base, "release_free_memory", lambda: calls.append("trim"))
    gate = Admission(slots=2, max_waiting=1, timeout=1, budget=4 * TRIM_FROM)
    with gate.admit(TRIM_FROM - 1):
        pass
    assert calls == []  # a small photo does not pay the page faults of reused memory
    with gate.admit(TRIM_FROM):
        assert calls == ["trim"]
    assert calls == ["trim", "trim"]


TRIM_CHILD = """
import sys
from pathlib import Path
from cutout.memory import release_free_memory

def rss():
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(l for l in status if l.startswith("VmRSS:")).split()[1]) * 1024

blocks = [bytearray(100_000) for _ in range(4000)]  # 400 MB on the heap, under mmap's threshold
kept = blocks[::2]  # every other block stays: the freed ones are holes free() cannot return
del blocks
full = rss()
release_free_memory()
print(full - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux")
def test_release_free_memory_returns_the_holes_of_the_heap() -> None:
    run = subprocess.run(
        [sys.executable, "-c", TRIM_CHILD], capture_output=True, text=True, check=True
    )
    assert int(run.stdout) > 150 * MB  # measured: 183 MB of the 200 MB freed


def test_a_cost_over_the_whole_budget_is_refused_at_once() -> None:
    admission = Admission(slots=4, max_waiting=4, timeout=60, budget=100)
    started = time.monotonic()
    with (
        pytest.raises(ImageTooLarge, match="too big for us"),
        admission.admit(101, too_large="too big for us"),
    ):
        pass
    assert time.monotonic() - started < 1 and admission.reserved == 0


def test_costs_that_do_not_fit_together_run_one_after_the_other() -> None:
    admission = Admission(slots=4, max_waiting=4, timeout=60, budget=100)
    log: list[str] = []
    with holding(admission, 70) as leave:
        second = enter_later(admission, 70, log, "second")
        small = enter_later(admission, 10, log, "small")  # fits, but waits its turn (FIFO)
        wait_for(lambda: admission.waiting == 2)
        assert log == [] and admission.reserved == 70
        leave.set()
        second.join(10)
        small.join(10)
    assert log == ["second", "small"] and admission.reserved == 0 and admission.active == 0


def test_small_costs_share_the_budget() -> None:
    admission = Admission(slots=4, max_waiting=0, timeout=60, budget=100)
    with holding(admission, 40), holding(admission, 40):
        assert admission.reserved == 80 and admission.active == 2
        with pytest.raises(EngineBusy), admission.admit(40):  # no room, and no queue
            pass


def test_a_full_queue_is_refused_at_once_and_a_long_wait_times_out() -> None:
    admission = Admission(slots=1, max_waiting=1, timeout=0.3, budget=100)
    log: list[str] = []
    with holding(admission, 10):
        waiter = enter_later(admission, 10, log, "waiter")
        wait_for(lambda: admission.waiting == 1)
        with pytest.raises(EngineBusy, match="busy"), admission.admit(10):
            pass
        waiter.join(10)
    assert log == ["waiter: busy"]  # timed out after 0.3 s
    assert admission.waiting == 0 and admission.active == 0


def test_slots_still_bound_how_many_run() -> None:
    admission = Admission(slots=1, max_waiting=0, timeout=60, budget=None)
    with holding(admission, 0), pytest.raises(EngineBusy), admission.admit(0):
        pass


# -- through the app, on the real model --------------------------------------------------------


def flat_png(width: int, height: int) -> bytes:
    """Fault 5's input: a flat picture, a few KB on disk, width x height x 3 bytes decoded."""
    from PIL import Image

    return encode(Image.new("RGB", (width, height), (200, 180, 160)), "PNG")


@pytest.fixture
def budget_app(web_settings: Settings, shared_engine: Engine) -> Iterator[Flask]:
    settings = web_settings.replace(memory_budget_mb=400.0, max_concurrent=2, user_limit=10)
    app = create_app(settings, engine=GatedEngine(shared_engine))
    yield app
    close_app(app)


def test_an_image_that_can_never_fit_is_a_clear_413(
    budget_app: Flask, web_settings: Settings
) -> None:
    """7000x7000 is under the 50 MP limit, but its removal needs ~900 MB: budget 400 MB."""
    budget_app.extensions["cutout.service"].engine().gate.set()
    actions = Actions(budget_app.test_client())
    data = flat_png(7000, 7000)
    assert len(data) < 200_000
    response = actions.upload("flat", data, json=True)
    assert response.status_code == 413
    body = response.get_json()
    assert body["error"] == "image_too_large"
    assert body["message"].startswith("The image is 7000x7000 (49.0 MP); this server can ")
    assert actions.records() == [] and stored_files(web_settings) == []


def test_images_that_cannot_fit_now_wait_for_room(budget_app: Flask, photo: Path) -> None:
    """Two ~220 MB removals under a 400 MB budget: the second waits for the first."""
    gated = budget_app.extensions["cutout.service"].engine()
    admission = budget_app.extensions["cutout.service"].admission
    users = [Actions(budget_app.test_client()) for _ in range(2)]
    tokens = [user.token() for user in users]
    data = flat_png(4000, 3000)  # 12 MP: estimate(4000, 3000) is about 220 MB
    assert 200 * MB < estimate(4000, 3000) < 400 * MB < 2 * estimate(4000, 3000)
    statuses: dict[int, int] = {}

    def upload(i: int) -> None:
        statuses[i] = users[i].upload(f"n{i}", data, json=True, token=tokens[i]).status_code

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: admission.active == 1 and admission.waiting == 1, timeout=30)
    assert admission.reserved == estimate(4000, 3000)  # a free slot, but no room: waiting
    gated.gate.set()
    for thread in threads:
        thread.join(120)
    assert statuses == {0: 201, 1: 201}
    assert admission.reserved == 0
