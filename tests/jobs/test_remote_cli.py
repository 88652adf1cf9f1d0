"""`cutout remove --server`: one job on a real server, resumed after the client is killed,
downloading only what it lacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import requests

from cutout.apikeys import KeyService
from cutout.storage import SQLiteStore, open_key_store
from tests.conftest import Photos
from tests.jobs.conftest import child_env, small_photos
from tests.live import LiveServer


def test_a_killed_client_resumes_its_job_and_fetches_only_what_it_lacks(
    tmp_path: Path, photos: Photos
) -> None:
    data = tmp_path / "data"
    store = SQLiteStore(data)
    _, secret = KeyService(open_key_store(store)).create("studio", "cli", credits=20)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name, photo in small_photos(photos, 5, side=256):
        (folder / name).write_bytes(photo)
    with LiveServer(data, {"USER_LIMIT": "50"}) as server:
        argv = [sys.executable, "-m", "cutout", "remove", str(folder), "-o", str(out), "--json",
                "--server", server.url, "--key", secret]  # fmt: skip
        env = child_env(tmp_path / "client", {})
        first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, start_new_session=True)
        assert first.stdout is not None
        line = json.loads(first.stdout.readline())  # the first photo is written: kill it
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        first.stdout.close()
        early = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
        assert Path(line["output"]).name in early and len(early) < 5

        again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        lines = [json.loads(x) for x in again.stdout.splitlines()]
        assert sorted(Path(x["output"]).name for x in lines) == [
            f"photo-{i:02d}.png" for i in range(5)
        ]
        assert all(x["width"] > 0 and "error" not in x for x in lines)
        for name, mtime in early.items():  # not downloaded again
            assert (out / name).stat().st_mtime_ns == mtime
        listed = requests.get(
            server.url + "/api/v1/jobs", headers={"X-Api-Key": secret}, timeout=10
        ).json()
    assert len(listed["items"]) == 1 and listed["items"][0]["succeeded"] == 5
    assert store.count("studio") == 5
    assert not list(out.glob(".cutout-job*"))  # the state file goes when the job is done
