"""The app runs the periodic orphan sweep on its own store, and stops it with the store."""

from __future__ import annotations

import threading
import time

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app


def sweepers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "orphan-sweeper" and t.is_alive()]


def test_the_app_sweeps_its_store_while_it_runs(settings: Settings, shared_engine: Engine) -> None:
    before = len(sweepers())
    app = create_app(settings.replace(sweep_interval=0.05), engine=shared_engine)
    store = app.extensions["cutout.store"]
    store.ping()
    orphan = settings.data_dir / "images" / f"{'ab' * 12}.processed"
    orphan.write_bytes(b"left by a worker that was killed")
    deadline = time.monotonic() + 10
    while orphan.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not orphan.exists()
    assert len(sweepers()) == before + 1
    store.close()
    assert len(sweepers()) == before


def test_no_periodic_sweep_when_turned_off(settings: Settings, shared_engine: Engine) -> None:
    before = len(sweepers())
    app = create_app(settings.replace(sweep_interval=0.0), engine=shared_engine)
    assert len(sweepers()) == before
    close_app(app)
