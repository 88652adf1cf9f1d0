"""The compose file run for real by Debian's podman-compose (issue 15 §2).

The services that can exist here start from the repository's ``docker-compose.yml`` unchanged:
the web app, Redis (a stand-in image built from Debian's ``redis-server`` with the official
image's contract) and the job worker; ``mongo`` sits behind a profile and is not started
(no MongoDB on this machine). Only variables the file reads are set: the image tags, the
published address (loopback, a free port), the secret.

The job worker (issue 14) must be in the image: without ``cutout worker`` the stack fails.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import Photos
from tests.container.podman import ROOT, SECRET, podman
from tests.container.test_image import browser, records, upload
from tests.helpers import free_port

NO_WORKER = "the image has no `cutout worker` command (issue 14): the job worker must be in it"


def machine_conf(tmp: Path) -> Path:
    """containers.conf with this machine's runtime and limits, for tools that take no flags."""
    conf = tmp / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
    )
    return conf


def has_worker(image: str) -> bool:
    """Whether the image has the `cutout worker` command (issue 14)."""
    run = ["podman", "--runtime", "runc", "run", "--rm", "--network", "none", *ulimits()]
    result = subprocess.run(
        [*run, image, "cutout", "worker", "--help"],
        capture_output=True,
        timeout=120,
    )
    return result.returncode == 0


def ulimits() -> list[str]:
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000"]


@dataclass
class Stack:
    project: str
    url: str
    env: dict[str, str]
    services: list[str]

    def compose(self, *args: str, timeout: float = 300) -> str:
        command = ["podman-compose", "-f", str(ROOT / "docker-compose.yml"), "-p", self.project]
        result = subprocess.run(
            [*command, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"podman-compose {args} failed:\n{result.stderr[-4000:]}"
        return result.stdout

    def up(self) -> None:
        self.compose("up", "-d", "--no-build", *self.services)
        self.wait_ready()

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass
            time.sleep(0.5)
        logs = podman("logs", self.container("app"), check=False)
        pytest.fail(f"the compose app is not ready after {timeout} s:\n{logs[-4000:]}")


@pytest.fixture(scope="module")
def worker(images: dict[str, str]) -> bool:
    assert has_worker(images["app"]), NO_WORKER
    return True


@pytest.fixture(scope="module")
def stack(
    images: dict[str, str], worker: bool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "MONGO_URI"},
        "CONTAINERS_CONF": str(machine_conf(tmp_path_factory.mktemp("compose"))),
        "APP_SECRET_KEY": SECRET,
        "CUTOUT_IMAGE": images["app"],
        "REDIS_IMAGE": images["redis"],
        "CUTOUT_PUBLISH": f"127.0.0.1:{port}",
    }
    services = ["app", "redis", *(["worker"] if worker else [])]
    stack = Stack(f"cutouttest{port}", f"http://127.0.0.1:{port}", env, services)
    try:
        stack.up()
        yield stack
    finally:
        stack.compose("down", "--volumes", timeout=180)


def test_the_stack_starts_without_mongo_and_redis_keeps_the_official_contract(
    stack: Stack,
) -> None:
    running = podman("ps", "--format", "{{.Names}}", "--filter", f"name={stack.project}")
    assert sorted(running.split()) == sorted(stack.container(s) for s in stack.services)
    assert podman("exec", stack.container("redis"), "redis-cli", "ping") == "PONG"
    assert podman("exec", stack.container("redis"), "id", "-u") == "999"
    # the web container reaches Redis by its service name, as CUTOUT_QUEUE_URL says
    probe = (
        "import socket; s = socket.create_connection(('redis', 6379), 5);"
        " s.sendall(b'PING\\r\\n'); print(s.recv(16).decode().strip())"
    )
    assert podman("exec", stack.container("app"), "python", "-c", probe) == "+PONG"


def test_uploads_survive_a_stop_and_restart_of_the_stack(stack: Stack, photos: Photos) -> None:
    session, token = browser(stack.url)
    created = upload(stack.url, session, token, photos.named("rocket"), "compose")
    assert created.status_code == 201, created.text
    saved = created.json()["_id"]
    stack.compose("down")  # containers gone; the named volumes stay
    stack.up()
    assert [r["_id"] for r in records(stack.url, session)] == [saved]
    image = session.get(stack.url + created.json()["processed_url"], timeout=30)
    assert image.status_code == 200


def test_a_job_submitted_to_the_web_is_finished_by_the_worker(
    stack: Stack, worker: bool, photos: Photos
) -> None:
    key = podman("exec", stack.container("app"), "cutout", "keys", "create", "compose-job")
    secret = key.splitlines()[-1]
    photo = photos.named("coffee")
    job = requests.post(
        stack.url + "/api/v1/jobs",
        headers={"X-Api-Key": secret},
        files=[("images", (photo.name, photo.read_bytes()))],
        timeout=60,
    )
    assert job.status_code == 202, job.text
    status_url = stack.url + f"/api/v1/jobs/{job.json()['id']}"
    deadline = time.monotonic() + 180
    body = job.json()
    while body["status"] not in ("done", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        body = requests.get(status_url, headers={"X-Api-Key": secret}, timeout=30).json()
    assert body["status"] == "done" and body["succeeded"] == 1, body
    # the web process does not run job items here (CUTOUT_WEB_RUNS_JOBS=false): the worker did
    logs = subprocess.run(
        ["podman", "logs", stack.container("worker")], capture_output=True, text=True
    )
    assert logs.stdout + logs.stderr, "the worker logged nothing while it ran the job"
