"""Run the real server (``cutout serve``: gunicorn, threads) for tests that need real HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import requests

from tests.helpers import free_port


class LiveServer:
    """``python -m cutout serve`` on a free port, with *env* on top of a clean environment."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, argv: list[str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "USER_"))}
        self.env = {
            **keep,
            "CUTOUT_ENV": "development",
            "CUTOUT_DATA_DIR": str(data_dir),
            "CUTOUT_PORT": str(self.port),
            "CUTOUT_HOST": "127.0.0.1",
            "CUTOUT_LOG_LEVEL": "WARNING",
            "CUTOUT_METRICS_PORT": "0",  # tests that read metrics give a free port
        }
        if "CUTOUT_MODEL_DIR" in os.environ:
            self.env["CUTOUT_MODEL_DIR"] = os.environ["CUTOUT_MODEL_DIR"]
        self.env.update(env or {})
        self.argv = argv or [sys.executable, "-m", "cutout", "serve"]
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.cwd: Path | None = None

    def __enter__(self) -> LiveServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            # Its own process group: kill() takes the master and its workers at once.
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.wait_ready()
        except BaseException:  # no server left behind to fail the next tests (a ResourceWarning)
            if self.process.poll() is None:
                self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or too busy starting (a loaded machine) to answer
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def workers(self) -> list[int]:
        """The pids of gunicorn's workers (the master's children)."""
        assert self.process is not None
        return children(self.process.pid)

    def tree_rss(self) -> int:
        """Resident memory of the master and its workers, bytes."""
        assert self.process is not None
        return sum(proc_status(pid, "VmRSS") for pid in [self.process.pid, *self.workers()])

    def kill(self) -> None:
        """SIGKILL the master and every worker at the same instant: a crash, not a shutdown
        (a worker that outlives its master notices and exits cleanly, running cleanup)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def proc_status(pid: int, key: str) -> int:
    """A memory figure of /proc/PID/status (VmRSS, VmHWM...), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak(pid: int) -> None:
    """Reset VmHWM of *pid* to its current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
