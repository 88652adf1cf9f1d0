"""The real image, run with podman the way this machine allows (issue 15).

``podman run --runtime runc`` with explicit ``nofile``/``nproc`` limits: the sandbox refuses
the default rlimits of crun and runc. Ports are published on loopback only; the data
directory is a host folder owned by the image's user, so the tests can look at the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest
import requests

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
#: The flags every container (and `kube play`, through containers.conf) needs here.
RUNTIME = ["--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]
APP_UID = 10001
SECRET = "container-test-secret-" + "c" * 40
#: The hardening of compose and the Deployment: read-only root, writable /tmp only.
HARDENED = ["--read-only", "--tmpfs", "/tmp:rw,size=512m,mode=1777", "--cap-drop", "ALL"]
HARDENED += ["--security-opt", "no-new-privileges"]


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """Run ``podman ARGS`` and return its standard output (stripped)."""
    result = subprocess.run(
        ["podman", *RUNTIME, *args], capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} -> {result.returncode}:\n{result.stderr}")
    return result.stdout.strip()


def build_images(redis: bool = False) -> dict[str, str]:
    """The tags of the images ``scripts/container_build.py`` builds (or finds cached)."""
    command = [sys.executable, str(ROOT / "scripts/container_build.py")]
    result = subprocess.run(
        [*command, *(["--redis"] if redis else [])], capture_output=True, text=True
    )
    assert result.returncode == 0, f"the image build failed:\n{result.stderr[-6000:]}"
    tags: dict[str, str] = json.loads(result.stdout.strip().splitlines()[-1])
    return tags


def data_dir(path: Path) -> Path:
    """A host folder for /data that the image's user may write, like a fresh named volume."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, APP_UID, APP_UID)
    path.chmod(0o750)
    return path


@dataclass
class Container:
    """One detached container of the app image, published on a loopback port."""

    image: str
    data: Path
    env: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    name: str = ""
    port: int = 0
    metrics_port: int = 0
    started: float = 0.0
    health_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.name = f"cutout-test-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> Container:
        env = {"APP_SECRET_KEY": SECRET, "CUTOUT_METRICS_HOST": "0.0.0.0", **self.env}
        args = ["run", "--detach", "--name", self.name, *ULIMITS, *HARDENED]
        args += ["-p", f"127.0.0.1:{self.port}:5000", "-p", f"127.0.0.1:{self.metrics_port}:9464"]
        args += ["-v", f"{self.data}:/data"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        self.started = time.monotonic()
        podman(*args, *self.extra, self.image)
        return self

    def wait(self, path: str = "/ready", timeout: float = 90.0) -> float:
        """Seconds from start until ``path`` answers 200; fails with the log if it never does."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail(f"the container exited ({self.exit_code()}):\n{self.logs()}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.2)
        pytest.fail(f"{path} not 200 within {timeout} s:\n{self.logs()}")

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name)

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))

    def logs(self) -> str:
        result = subprocess.run(["podman", "logs", self.name], capture_output=True, text=True)
        return (result.stdout + result.stderr)[-8000:]

    def exec(self, *command: str, check: bool = True) -> str:
        return podman("exec", self.name, *command, check=check)

    def tree_rss(self) -> int:
        """Resident memory of every process in the container (gunicorn's tree), bytes."""
        script = (
            "import glob, os\n"
            "t = 0\n"
            "me = f'/proc/{os.getpid()}/status'\n"
            "for s in set(glob.glob('/proc/[0-9]*/status')) - {me}:\n"
            "    try: lines = open(s).read().splitlines()\n"
            "    except OSError: continue\n"
            "    t += sum(int(l.split()[1]) for l in lines if l.startswith('VmRSS:'))\n"
            "print(t * 1024)\n"
        )
        return int(self.exec("python", "-c", script))

    def stop(self, timeout: int = 45) -> int:
        """``podman stop`` (SIGTERM, then SIGKILL after *timeout*); the exit code."""
        podman("stop", "--time", str(timeout), self.name, timeout=timeout + 30)
        return self.exit_code()

    def kill(self) -> None:
        podman("kill", "--signal", "KILL", self.name)
        podman("wait", self.name)

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name, check=False)

    def __enter__(self) -> Container:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()
