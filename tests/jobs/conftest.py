"""Batch-job fixtures: a real redis-server on a free loopback port, real `cutout worker`
processes, distinct small photos (crops of the CC0 ones), a key with credits."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest
import requests
from PIL import Image

from tests.conftest import Photos, missing
from tests.helpers import free_port


class Redis:
    """``redis-server`` without persistence: a restart loses every message, as a flushed or
    replaced broker would."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Redis:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed; `make test` installs it (apt-get)")
        assert binary is not None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path / "redis").start()
    yield server
    server.stop()


def child_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "USER_"))}
    env = {
        **keep,
        "CUTOUT_ENV": "development",
        "CUTOUT_DATA_DIR": str(data_dir),
        "CUTOUT_LOG_LEVEL": "INFO",
        "CUTOUT_METRICS_PORT": "0",
        "CUTOUT_INFERENCE_THREADS": "1",  # two workers on two cores: one each
    }
    if "CUTOUT_MODEL_DIR" in os.environ:
        env["CUTOUT_MODEL_DIR"] = os.environ["CUTOUT_MODEL_DIR"]
    return {**env, **extra}


class Worker:
    """``python -m cutout worker`` as a process of its own."""

    def __init__(self, data_dir: Path, env: dict[str, str], name: str) -> None:
        self.log = data_dir.parent / f"worker-{name}.log"
        self.env = child_env(data_dir, env)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Worker:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cutout", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def small_photos(photos: Photos, n: int, side: int = 160) -> list[tuple[str, bytes]]:
    """*n* distinct small JPEGs: crops of the CC0 photos at different offsets, each marked
    (distinct bytes, so none is deduplicated against another)."""
    made = []
    sources = [Image.open(p).convert("RGB") for p in photos]
    for i in range(n):
        source = sources[i % len(sources)]
        step = i // len(sources)
        x = (step * 17) % max(1, source.width - 2 * side)
        crop = source.crop((x, 0, x + 2 * side, 2 * side)).resize((side, side))
        crop.putpixel((0, 0), (i, 255 - i, i))  # and a marker: distinct even with no room
        buffer = io.BytesIO()
        crop.save(buffer, "JPEG", quality=80 + i % 10)
        made.append((f"photo-{i:02d}.jpg", buffer.getvalue()))
    return made


def wait_for(
    session: requests.Session, url: str, done: str = "done", timeout: float = 180.0
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, object] = session.get(url, timeout=10).json()
        if body["status"] == done:
            return body
        assert time.monotonic() < deadline, f"job not {done} after {timeout} s: {body}"
        time.sleep(0.5)
