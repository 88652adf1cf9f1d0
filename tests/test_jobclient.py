"""``cutout remove --server`` (src/cutout/jobclient.py) against a stand-in job server.

The stand-in speaks the job API's contract (issue 14) over real HTTP and finishes one item
each time the job is looked at, so the tests can stop the client halfway. The same behaviour
against the real server, with the real model, is in tests/api/test_live_jobclient.py.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cutout.batch import Job
from cutout.cli import EXIT_FAILED_INPUTS, EXIT_SETUP, EXIT_USAGE, main
from cutout.jobclient import MultipartBody, RemoteOptions, idempotency_key, state_file
from tests.helpers import LocalServer

KEY = "test-key"
BROKEN = "The file is not an image we can read."


@dataclass
class Item:
    index: int
    name: str
    data: bytes
    status: str = "queued"
    image_id: str | None = None


@dataclass
class StubJobs:
    """The job API's contract, kept in memory; ``hold`` stops items from finishing."""

    server: LocalServer
    jobs: dict[str, list[Item]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    results: dict[str, bytes] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)
    posts: int = 0
    forms: list[dict[str, str]] = field(default_factory=list)  # each job's option fields
    hold: bool = False
    fail_next_gets: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        self.posts += 1
        if handler.headers.get("X-Api-Key") != KEY:
            return _json(401, {"error": "auth_failed", "message": "Unknown API key."})
        key = handler.headers["Idempotency-Key"]
        if key in self.by_key:
            return _json(202, self.job_json(self.by_key[key]), {"Idempotent-Replayed": "true"})
        head = f"Content-Type: {handler.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        files = [
            p
            for p in message.iter_parts()
            if p.get_param("name", header="content-disposition") == "images"
        ]
        self.forms.append(
            {
                str(p.get_param("name", header="content-disposition")): str(p.get_content())
                for p in message.iter_parts()
                if p.get_filename() is None
            }
        )
        job_id = f"job{len(self.jobs) + 1}"
        self.jobs[job_id] = [
            Item(i, str(p.get_filename()), bytes(p.get_payload(decode=True)))
            for i, p in enumerate(files)
        ]
        self.by_key[key] = job_id
        self.server.routes[("GET", f"/api/v1/jobs/{job_id}")] = lambda h, b: self.look(job_id)
        return _json(202, self.job_json(job_id))

    def look(self, job_id: str) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            if self.fail_next_gets:
                self.fail_next_gets -= 1
                return _json(503, {"error": "busy", "message": "Busy."}, {"Retry-After": "0"})
            waiting = [i for i in self.jobs[job_id] if i.status == "queued"]
            if waiting and not self.hold:
                self.finish(waiting[0])
            return _json(200, self.job_json(job_id, items=True))

    def finish(self, item: Item) -> None:
        if item.data.startswith(b"not a photo"):
            item.status = "failed"
            return
        item.status, item.image_id = "done", f"img{len(self.results) + 1}"
        result = b"cut-out of " + item.data
        self.results[item.image_id] = result
        processed = {"sha256": hashlib.sha256(result).hexdigest(), "width": 4, "height": 3}
        record = {"id": item.image_id, "confidence": 0.9, "needs_review": False,
                  "processed": processed}  # fmt: skip
        routes = self.server.routes
        routes[("GET", f"/api/v1/images/{item.image_id}")] = lambda h, b: _json(200, record)
        routes[("GET", f"/api/v1/images/{item.image_id}/processed")] = self.download

    def download(
        self, handler: BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        image_id = handler.path.split("/")[4]
        self.downloads.append(image_id)
        return 200, {"Content-Type": "image/png"}, self.results[image_id]

    def job_json(self, job_id: str, *, items: bool = False) -> dict[str, Any]:
        found = self.jobs[job_id]
        finished = all(i.status != "queued" for i in found)
        shown: dict[str, Any] = {
            "id": job_id, "status": "done" if finished else "running", "total": len(found),
            "succeeded": sum(i.status == "done" for i in found),
            "failed": sum(i.status == "failed" for i in found),
        }  # fmt: skip
        if items:
            shown["items"] = [
                {
                    "index": i.index,
                    "name": i.name,
                    "status": i.status,
                    "image_id": i.image_id,
                    "error": BROKEN if i.status == "failed" else None,
                }
                for i in found
            ]
        return shown


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


@pytest.fixture
def stub() -> Any:
    server = LocalServer({})
    jobs = StubJobs(server)
    server.routes[("POST", "/api/v1/jobs")] = jobs.create
    with server:
        yield jobs


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in range(5):
        (shots / f"photo{n}.jpg").write_bytes(f"photo number {n}".encode() * 50)
    return shots


def test_a_job_is_sent_once_and_every_result_written_as_it_finishes(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    (folder / "notes.jpg").write_bytes(b"not a photo")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["remove", str(folder), "-o", str(out), "--server", stub.server.url, "--json"],
        env={"CUTOUT_API_KEY": KEY},
    )  # fmt: skip
    assert result.exit_code == EXIT_FAILED_INPUTS, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 6 and stub.posts == 1
    failed = [line for line in lines if "error" in line]
    assert failed == [{"input": str(folder / "notes.jpg"), "error": BROKEN}]
    for n in range(5):
        written = (out / f"photo{n}.png").read_bytes()
        assert written == b"cut-out of " + (folder / f"photo{n}.jpg").read_bytes()
    done = next(line for line in lines if line["input"].endswith("photo0.jpg"))
    assert done["output"] == str(out / "photo0.png")
    assert (done["width"], done["height"], done["confidence"]) == (4, 3, 0.9)
    assert "5 of 6 photos done; 1 failed." in result.stderr


def test_the_key_comes_from_the_option_or_the_environment_and_a_wrong_one_is_a_setup_error(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    argv = ["remove", str(folder), "-o", str(tmp_path / "out"), "--server", stub.server.url]
    missing = CliRunner().invoke(main, argv)
    assert missing.exit_code == EXIT_USAGE and "CUTOUT_API_KEY" in missing.output
    wrong = CliRunner().invoke(main, [*argv, "--key", "nope"])
    assert wrong.exit_code == EXIT_SETUP
    assert "refused the API key: Unknown API key." in wrong.stderr
    local_only = CliRunner().invoke(main, [*argv, "--key", KEY, "--model", "isnet"])
    assert local_only.exit_code == EXIT_USAGE and "--model cannot be used with --server" in (
        local_only.output
    )
    posts = stub.posts
    for number in (["--quality", "80"], ["--output-quality", "80"]):
        refused = CliRunner().invoke(main, [*argv, "--key", KEY, *number])
        assert refused.exit_code == EXIT_USAGE and "cannot be used with --server" in (
            refused.output
        ), refused.output
    assert stub.posts == posts  # refused before anything was sent


def test_the_quality_mode_goes_with_the_job(stub: StubJobs, folder: Path, tmp_path: Path) -> None:
    argv = ["remove", str(folder / "photo1.jpg"), "--server", stub.server.url, "--key", KEY]
    plain = CliRunner().invoke(main, [*argv, "-o", str(tmp_path / "one.png")])
    best = CliRunner().invoke(main, [*argv, "-o", str(tmp_path / "two.png"), "--quality", "best"])
    assert plain.exit_code == best.exit_code == 0, (plain.output, best.output)
    assert "quality" not in stub.forms[0]  # the server's default; earlier runs' keys unchanged
    assert stub.forms[1]["quality"] == "best" and stub.forms[1]["format"] == "png"
    assert len(stub.jobs) == 2  # another mode is another job (its own idempotency key)


def test_a_busy_server_is_waited_for(stub: StubJobs, folder: Path, tmp_path: Path) -> None:
    stub.fail_next_gets = 2
    result = CliRunner().invoke(
        main,
        [
            "remove",
            str(folder / "photo1.jpg"),
            "-o",
            str(tmp_path / "one.png"),
            "--server",
            stub.server.url,
            "--key",
            KEY,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "one.png").read_bytes().startswith(b"cut-out of photo number 1")


def test_killed_halfway_and_run_again_it_resumes_the_same_job(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    """SIGKILL while results come in; the second run makes no new job and downloads only
    what the first did not write (the first ones keep their inode: not rewritten)."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "cutout", "remove", str(folder), "-o", str(out),
            "--server", stub.server.url]  # fmt: skip
    env = {**os.environ, "CUTOUT_API_KEY": KEY}
    quiet = subprocess.DEVNULL
    first = subprocess.Popen(argv, env=env, stdout=quiet, stderr=quiet)
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.png"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stub.hold = True
    first.send_signal(signal.SIGKILL)
    first.wait()
    written = {p.name: p.stat().st_ino for p in out.glob("*.png")}
    before = len(stub.downloads)  # one more than written if the kill cut a download short
    assert 2 <= len(written) < 5 and len(written) <= before <= len(written) + 1
    stub.hold = False
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert "Resuming job job1" in second.stderr
    assert stub.posts == 1  # the state file named the job: nothing was uploaded again
    assert not list(out.glob(".cutout-job-*")), "the state file outlived the job"
    assert len(stub.downloads) - before == 5 - len(written)  # only what was missing
    for name, inode in written.items():
        assert (out / name).stat().st_ino == inode
    assert sorted(p.name for p in out.glob("*.png")) == [f"photo{n}.png" for n in range(5)]


def test_the_key_is_the_same_for_the_same_job_and_differs_otherwise(folder: Path) -> None:
    jobs = [Job(p, p.with_suffix(".png"), "png") for p in sorted(folder.iterdir())]
    png = RemoteOptions(format="png")
    key = idempotency_key("http://h:5000", jobs, png)
    assert key == idempotency_key("http://h:5000/", jobs, png)
    assert key != idempotency_key("http://h:5000", jobs, RemoteOptions(format="webp"))
    assert key != idempotency_key("http://other:5000", jobs, png)
    assert key != idempotency_key("http://h:5000", jobs[::-1], png)
    jobs[0].source.write_bytes(b"changed")
    assert key != idempotency_key("http://h:5000", jobs, png)


def test_the_streamed_body_is_as_long_as_it_says(folder: Path) -> None:
    body = MultipartBody([("format", "png")], [("images", p) for p in folder.iterdir()])
    assert len(b"".join(body)) == len(body)


def test_ctrl_c_leaves_the_job_running_and_says_how_to_resume(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    stub.hold = True  # nothing finishes: the client is waiting when it is interrupted
    argv = [sys.executable, "-m", "cutout", "remove", str(folder), "-o", str(tmp_path / "out"),
            "--server", stub.server.url]  # fmt: skip
    # A child inherits an *ignored* SIGINT (a Python handler is reset at exec, SIG_IGN is not),
    # and an earlier test in the same run can leave it ignored: start it with Ctrl+C live.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        client = subprocess.Popen(
            argv, env={**os.environ, "CUTOUT_API_KEY": KEY}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGINT, previous)
    assert client.stderr is not None
    announced = ""  # interrupt once the client knows its job (it says so), not before
    while "Job job1 on" not in announced:
        line = client.stderr.readline()
        assert line, f"the client ended first: {announced}"
        announced += line
    client.send_signal(signal.SIGINT)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 130
    assert "Interrupted: job job1 goes on on the server. Run the same command again" in stderr


def test_a_server_that_stays_away_is_given_up_on_with_the_way_to_resume(
    folder: Path, tmp_path: Path
) -> None:
    with LocalServer({}) as gone:
        address = gone.url  # a port nobody listens on once the server is closed
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        [
            "remove",
            str(folder),
            "-o",
            str(tmp_path / "out"),
            "--server",
            address,
            "--key",
            KEY,
            "--retry-for",
            "2",
        ],
    )
    assert result.exit_code == EXIT_SETUP
    assert f"cannot reach {address}" in result.stderr
    assert "run the same command again to resume it" in result.stderr
    assert time.monotonic() - started < 30


def test_without_the_state_file_the_same_key_finds_the_job_and_nothing_is_fetched_twice(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    """A run that finished (its state file gone) and the same command again: the upload
    with the same Idempotency-Key gets the job back, and the outputs on disk match the
    records' sha256, so nothing is downloaded again."""
    argv = ["remove", str(folder), "-o", str(tmp_path / "out"), "--server", stub.server.url,
            "--key", KEY]  # fmt: skip
    assert CliRunner().invoke(main, argv).exit_code == 0
    assert len(stub.downloads) == 5
    again = CliRunner().invoke(main, argv)
    assert again.exit_code == 0, again.output
    assert "Resuming job job1" in again.stderr
    assert stub.posts == 2 and len(stub.jobs) == 1 and len(stub.downloads) == 5


def test_a_state_file_naming_a_job_the_server_forgot_falls_back_to_the_upload(
    stub: StubJobs, folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = [Job(p, out / f"{p.stem}.png", "png") for p in sorted(folder.iterdir())]
    key = idempotency_key(stub.server.url, jobs, RemoteOptions(format="png"))
    memo = state_file(jobs, key)
    assert memo is not None and memo.parent == out
    out.mkdir()
    memo.write_text(json.dumps({"idempotency_key": key, "job": "forgotten"}))
    argv = ["remove", str(folder), "-o", str(out), "--server", stub.server.url, "--key", KEY]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    assert stub.posts == 1 and "Resuming" not in result.stderr
    assert not memo.exists()
