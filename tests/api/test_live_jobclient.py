"""``cutout remove --server`` against the real server (``cutout serve``, the embedded job runner,
the real model): results as they finish, a broken photo failing alone, and a client killed
with SIGKILL halfway that, run again, resumes the same job and downloads only what it lacks."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.api.test_live_api import cli_key
from tests.conftest import cc0_jpeg
from tests.live import LiveServer

pytestmark = pytest.mark.model
STEMS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "horse")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("live-jobclient") / "data"
    with LiveServer(data, {"USER_LIMIT": "1000", "CUTOUT_API_RATE_LIMIT": "100000/minute"}) as live:
        yield live


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "shots"
    folder.mkdir()
    for stem in STEMS:
        (folder / f"{stem}.jpg").write_bytes(cc0_jpeg(stem).read_bytes())
    (folder / "zz-notes.jpg").write_bytes(b"these are notes, not a photo\n")
    return folder


def test_killed_halfway_it_resumes_the_same_job_and_downloads_only_what_it_lacks(
    server: LiveServer, shots: Path, tmp_path: Path
) -> None:
    key = cli_key(server, "jobclient")
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cutout", "remove", str(shots), "-o", str(out),
            "--server", server.url, "--json"]  # fmt: skip
    env = {**os.environ, "CUTOUT_API_KEY": key}
    started = time.monotonic()
    first = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list(out.glob("*.png"))) < 2 and time.monotonic() - started < 120:
        assert first.poll() is None, "the client ended before it was killed"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = {p.name: p.stat().st_ino for p in out.glob("*.png")}
    assert 2 <= len(kept) < len(STEMS), kept

    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 1, second.stderr  # the notes failed; every photo was done
    jobs = requests.get(f"{server.url}/api/v1/jobs", headers={"X-Api-Key": key}, timeout=10)
    listed: list[dict[str, str]] = jobs.json()["items"]
    assert len(listed) == 1, listed  # the second run made no job of its own
    assert f"Resuming job {listed[0]['id']}" in second.stderr

    lines = [json.loads(line) for line in second.stdout.splitlines()]
    assert len(lines) == len(STEMS) + 1
    failed = [line for line in lines if "error" in line]
    assert failed == [{"input": str(shots / "zz-notes.jpg"), "error": failed[0]["error"]}]
    assert "not an image we can read" in failed[0]["error"]
    assert not list(out.glob(".cutout-job-*")), "the state file outlived the job"
    for name, inode in kept.items():  # written by the first run, not again by the second
        assert (out / name).stat().st_ino == inode, name
    for line in lines:
        if "error" in line:
            continue
        output = Path(line["output"])
        with Image.open(output) as cut:
            assert cut.mode == "RGBA" and cut.size == (line["width"], line["height"])
        assert 0 <= line["confidence"] <= 1 and line["seconds"] > 0
    records = requests.get(
        f"{server.url}/api/v1/images", headers={"X-Api-Key": key}, timeout=10
    ).json()["items"]
    assert len(records) == len(STEMS)  # one record per photo: nothing done twice
    stored = {r["name"]: r["processed"]["sha256"] for r in records}
    for stem in STEMS:
        on_disk = hashlib.sha256((out / f"{stem}.png").read_bytes()).hexdigest()
        assert on_disk in stored.values(), stem
    print(
        f"\nkilled after {len(kept)} of {len(STEMS)}; both runs {time.monotonic() - started:.1f} s"
    )
