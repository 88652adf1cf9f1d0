"""``cutout remove --server``: send photos to a cutout server as one batch job, fetch the results.

Flask-free and engine-free: it speaks HTTP to the native API (``POST /api/v1/jobs``, then each
finished item's record under ``/api/v1/images``) with :mod:`requests`.

Resuming is built on three facts. The ``Idempotency-Key`` is derived from what the job *is*:
the server's address, the output options, and each photo's name and bytes (sha256) in order,
so the same command run again gets the same job back from the server instead of making a
second one. A small state file in the output folder remembers the job under that key, so the
second run does not even upload the photos again (without it, or if the server has forgotten
the job, the upload with the same key finds the job). And every output is written atomically
(:func:`cutout.batch.write_atomic`), so an output that exists is whole: when its sha256 is the
record's, it is not downloaded again.

The upload is streamed from the files (:class:`MultipartBody`), never built whole in memory:
a job may be a whole catalogue.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cutout import __version__
from cutout.batch import Done, Job, write_atomic
from cutout.errors import JobServerError

log = logging.getLogger(__name__)

#: Seconds between two looks at the job: short at first, longer while nothing changes.
POLL_FIRST, POLL_MAX = 0.3, 2.0
#: How long requests may keep failing (network down, server restarting) before the command
#: gives up. The job goes on on the server meanwhile; the same command resumes it.
PATIENCE = 120.0
#: Items asked for per page of ``GET /api/v1/jobs/{id}``.
PAGE_SIZE = 100
#: Statuses after which an item will not change.
FINAL = ("done", "failed", "cancelled")
CHUNK = 1 << 16
#: The state file's name, beside the outputs: hidden, so a folder of outputs used as the
#: input of another command does not take it for a photo.
STATE_PREFIX = ".cutout-job-"
#: Answers worth retrying: the server is restarting, busy, or behind a proxy that is.
TRANSIENT = {502, 503, 504}


@dataclass(frozen=True)
class RemoteOptions:
    """The output options a job takes (those of ``POST /api/v1/images``)."""

    format: str = "png"
    background: str | None = None
    crop: bool = False
    margin: int = 0
    mask_only: bool = False
    quality: str | None = None  # fast, balanced, best; None: the server's default

    def fields(self) -> list[tuple[str, str]]:
        """The options as form fields, in a fixed order (they are part of the job's key)."""
        found = [("format", self.format), ("crop", _flag(self.crop)),
                 ("margin", str(self.margin)), ("mask_only", _flag(self.mask_only))]  # fmt: skip
        if self.background is not None:
            found.append(("background", self.background))
        if self.quality is not None:  # only when given: keys of earlier runs stay the same
            found.append(("quality", self.quality))
        return found


def _flag(value: bool) -> str:
    return "true" if value else "false"


def idempotency_key(server: str, jobs: Sequence[Job], options: RemoteOptions) -> str:
    """The key that makes the same command, run again, find the same job.

    Hashes the server's address, the options and every photo's name and bytes, in order; the
    output paths are left out (they do not change the job). Reading every photo again costs a
    few milliseconds per photo, much less than uploading it a second time.
    """
    digest = hashlib.sha256()
    digest.update(server.rstrip("/").encode())
    digest.update(json.dumps(options.fields()).encode())
    for job in jobs:
        digest.update(b"\0" + job.source.name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(file_sha256(job.source).encode())
    return f"cutout-remove-{digest.hexdigest()[:40]}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class MultipartBody:
    """A ``multipart/form-data`` body read from the files as it is sent.

    :mod:`requests` sends an iterable that has a length with a ``Content-Length`` and no
    chunked encoding, which every WSGI server reads; ``files=`` would build the body in memory.
    """

    def __init__(self, fields: Sequence[tuple[str, str]], files: Sequence[tuple[str, Path]]):
        self.boundary = f"cutout-{secrets.token_hex(16)}"
        self.parts: list[tuple[bytes, Path | None]] = []
        for name, value in fields:
            self.parts.append((self._head(name) + b"\r\n" + value.encode() + b"\r\n", None))
        for name, path in files:
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            head = self._head(name, path.name) + f"Content-Type: {kind}\r\n\r\n".encode()
            self.parts.append((head, path))
        self.tail = f"--{self.boundary}--\r\n".encode()
        self.length = len(self.tail) + sum(
            len(head) + (path.stat().st_size + 2 if path else 0) for head, path in self.parts
        )

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def _head(self, name: str, filename: str | None = None) -> bytes:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            # RFC 7578 4.2: quotes and line breaks in a file name are percent-encoded.
            quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
            disposition += f'; filename="{quoted}"'
        head = f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\n"
        return head.encode("utf-8", "surrogateescape")

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        for head, path in self.parts:
            yield head
            if path is None:
                continue
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield self.tail


class JobClient:
    """The server's job and image endpoints, with retries for what is transient.

    :param server: the server's base URL, e.g. ``http://localhost:5000``.
    :param key: an API key (``cutout keys create``).
    :param patience: seconds a request may keep failing before :class:`JobServerError`.
    """

    def __init__(
        self,
        server: str,
        key: str,
        *,
        session: requests.Session | None = None,
        patience: float = PATIENCE,
        timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = server.rstrip("/")
        self.session = session or requests.Session()
        self.session.headers.update(
            {"X-Api-Key": key, "User-Agent": f"cutout/{__version__} (remove --server)"}
        )
        self.patience = patience
        self.timeout = timeout
        self.sleep = sleep

    def submit(
        self, jobs: Sequence[Job], options: RemoteOptions, key: str
    ) -> tuple[dict[str, Any], bool]:
        """Create the job, or find the one *key* made before; also say whether it was found."""

        def send() -> requests.Response:
            body = MultipartBody(options.fields(), [("images", job.source) for job in jobs])
            headers = {"Content-Type": body.content_type, "Idempotency-Key": key}
            # A long upload: the timeout is for each read of the answer, not the whole send.
            return self.session.post(
                self._url("/api/v1/jobs"), data=body, headers=headers, timeout=self.timeout
            )

        # A claim left by an upload that was cut off is released when the server notices: a
        # 409 on our own key is worth waiting for, as is a server that is restarting.
        response = self._retrying(send, retry_conflict=True)
        return response.json(), response.headers.get("Idempotent-Replayed") == "true"

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The job (without its items), or None if the server has no such job of ours."""
        try:
            return self.job(job_id, with_items=False)
        except JobServerError as exc:
            if exc.status == 404:
                return None
            raise

    def job(self, job_id: str, *, with_items: bool = True) -> dict[str, Any]:
        """The job, with every item (all pages) unless *with_items* is false."""
        if not with_items:  # the counts: one item is the least a page may hold
            return self._get(f"/api/v1/jobs/{job_id}", {"per_page": 1, "page": 1})
        first = self._get(f"/api/v1/jobs/{job_id}", {"per_page": PAGE_SIZE, "page": 1})
        items = list(first.get("items", []))
        page = 1
        while len(items) < int(first["total"]):
            page += 1
            more = self._get(f"/api/v1/jobs/{job_id}", {"per_page": PAGE_SIZE, "page": page})
            if not more.get("items"):
                break
            items += more["items"]
        return {**first, "items": items}

    def record(self, image_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/images/{image_id}")

    def download(self, image_id: str) -> bytes:
        url = self._url(f"/api/v1/images/{image_id}/processed")
        return self._retrying(lambda: self.session.get(url, timeout=self.timeout)).content

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self._url(path)
        response = self._retrying(
            lambda: self.session.get(url, params=params, timeout=self.timeout)
        )
        found: dict[str, Any] = response.json()
        return found

    def _url(self, path: str) -> str:
        return self.server + path

    def _retrying(
        self, send: Callable[[], requests.Response], *, retry_conflict: bool = False
    ) -> requests.Response:
        """*send* until it answers 2xx; wait out what is transient for ``patience`` seconds."""
        deadline = time.monotonic() + self.patience
        wait = 0.5
        while True:
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"cannot reach {self.server} ({type(exc).__name__})"
            else:
                if response.ok:
                    return response
                problem, wait = self._transient(response, wait, retry_conflict)
            if time.monotonic() + wait > deadline:
                raise JobServerError(
                    f"{problem}; gave up after {self.patience:.0f} s. The job goes on on the "
                    "server: run the same command again to resume it."
                )
            log.info("%s; retrying in %.1f s", problem, wait)
            self.sleep(wait)
            wait = min(wait * 2, 10.0)

    def _transient(
        self, response: requests.Response, wait: float, retry_conflict: bool
    ) -> tuple[str, float]:
        """What went wrong and how long to wait; :raises JobServerError: if not transient."""
        code, problem = _error(response)
        retry = response.status_code in TRANSIENT or (
            retry_conflict and code == "idempotency_conflict"
        )
        if not retry:
            raise JobServerError(
                _explained(response.status_code, problem, self.server), response.status_code
            )
        return problem, max(wait, _retry_after(response))


def _error(response: requests.Response) -> tuple[str, str]:
    """The error code and message of a JSON error answer (or the status line)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body.get("error", "")), body["message"]
    return "", f"HTTP {response.status_code} {response.reason}"


def _explained(status: int, message: str, server: str) -> str:
    if status == 401:
        return f"{server} refused the API key: {message} (give --key or CUTOUT_API_KEY)"
    if status == 404:
        return f"{server} has no such job or image: {message} (is it a cutout server?)"
    return f"{server} answered {status}: {message}"


def _retry_after(response: requests.Response) -> float:
    try:
        return float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Fetched:
    """One finished item on disk: the record's details, and whether it was downloaded now."""

    done: Done
    downloaded: bool


def fetch_result(client: JobClient, job: Job, item: dict[str, Any]) -> Fetched:
    """Write a done item's cut-out to ``job.target``, unless the same bytes are there already.

    The downloaded bytes are checked against the record's sha256 before they are written.
    """
    record = client.record(str(item["image_id"]))
    processed = record.get("processed") or {}
    expected = processed.get("sha256")
    downloaded = False
    if not (expected and job.target.is_file() and file_sha256(job.target) == expected):
        data = client.download(str(item["image_id"]))
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise JobServerError(
                f"the download of {job.source.name} was damaged on the way (sha256 differs)"
            )
        write_atomic(job.target, data)
        downloaded = True
    done = Done(
        job,
        int(processed.get("width", 0)),
        int(processed.get("height", 0)),
        _seconds(item),
        record.get("confidence"),
        record.get("needs_review"),
    )
    return Fetched(done, downloaded)


def _seconds(item: dict[str, Any]) -> float:
    """The server's time on the item (0 from a server that does not say)."""
    seconds = item.get("seconds")
    return float(seconds) if isinstance(seconds, int | float) else 0.0


@dataclass
class Progress:
    """What the command says while it runs: the job, when found again; each finished item."""

    on_job: Callable[[dict[str, Any], bool], None] | None = None
    on_result: Callable[[Job, Done | str], None] | None = None
    on_fetched: Callable[[Fetched], None] | None = None


def run_remote(
    jobs: Sequence[Job],
    client: JobClient,
    options: RemoteOptions,
    progress: Progress | None = None,
) -> list[tuple[Job, str]]:
    """Run *jobs* as one server job; write each result as it finishes.

    Returns the failed ones with their reasons, in input order, as
    :func:`cutout.batch.run_jobs` does.

    :raises JobServerError: the server refused the job, or stopped answering for longer than
        the client's patience (the job goes on; the same call resumes it).
    """
    progress = progress or Progress()
    memo, job_id = _open(client, jobs, options, progress)
    failures = _collect(client, jobs, job_id, progress)
    if memo is not None:
        memo.unlink(missing_ok=True)  # every result is here: nothing left to resume
    return failures


def _open(
    client: JobClient, jobs: Sequence[Job], options: RemoteOptions, progress: Progress
) -> tuple[Path | None, str]:
    """The job a previous run left (state file), else the one the key finds or makes."""
    key = idempotency_key(client.server, jobs, options)
    memo = state_file(jobs, key)
    created = _remembered(client, memo, key)
    replayed = created is not None
    if created is None:
        created, replayed = client.submit(jobs, options, key)
    job_id = str(created["id"])
    if memo is not None and not replayed:
        write_atomic(memo, json.dumps({"idempotency_key": key, "job": job_id}).encode())
    if int(created.get("total", len(jobs))) != len(jobs):
        raise JobServerError(
            f"job {job_id} has {created.get('total')} items for {len(jobs)} photos"
        )
    if progress.on_job:
        progress.on_job(created, replayed)
    return memo, job_id


def _collect(
    client: JobClient, jobs: Sequence[Job], job_id: str, progress: Progress
) -> list[tuple[Job, str]]:
    """Follow the job until every photo has its outcome; fetch each result as it comes."""
    pending = dict(enumerate(jobs))
    failures: dict[int, str] = {}
    wait = POLL_FIRST
    finished_before = -1
    while pending:
        state = client.job(job_id, with_items=False)
        finished = sum(int(state.get(n, 0)) for n in ("succeeded", "failed", "cancelled"))
        if finished == finished_before and state["status"] not in ("done", "cancelled"):
            wait = min(wait * 1.5, POLL_MAX)  # nothing new: do not page through the items
            client.sleep(wait)
            continue
        finished_before = finished
        state = client.job(job_id)
        changed = False
        for item in state["items"]:
            index = int(item["index"])
            if index not in pending or item["status"] not in FINAL:
                continue
            changed = True
            job = pending.pop(index)
            outcome = _finish(client, job, item, progress)
            if isinstance(outcome, str):
                failures[index] = outcome
            if progress.on_result:
                progress.on_result(job, outcome)
        if pending and state["status"] in ("done", "cancelled") and not changed:
            for index, job in sorted(pending.items()):  # a job that ended without them
                failures[index] = f"the server's job {job_id} ended ({state['status']}) first"
                if progress.on_result:
                    progress.on_result(job, failures[index])
            pending.clear()
        if pending:
            wait = POLL_FIRST if changed else min(wait * 1.5, POLL_MAX)
            client.sleep(wait)
    return [(jobs[i], failures[i]) for i in sorted(failures)]


def state_file(jobs: Sequence[Job], key: str) -> Path | None:
    """Where the job's id is kept while it runs: beside the outputs, when they share a folder."""
    folders = {job.target.parent for job in jobs}
    if len(folders) != 1:
        return None
    return folders.pop() / f"{STATE_PREFIX}{key.removeprefix('cutout-remove-')[:16]}.json"


def _remembered(client: JobClient, state: Path | None, key: str) -> dict[str, Any] | None:
    """The job a previous run left in *state*, if it was for this key and the server has it."""
    if state is None or not state.is_file():
        return None
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("idempotency_key") != key:
        return None
    return client.find(str(saved.get("job")))


def _finish(client: JobClient, job: Job, item: dict[str, Any], progress: Progress) -> Done | str:
    """A final item's outcome: its result written, or the one-line reason it failed."""
    if item["status"] == "cancelled":
        return "cancelled on the server before it started"
    if item["status"] == "failed":
        return str(item.get("error") or "failed on the server")
    try:
        fetched = fetch_result(client, job, item)
    except OSError as exc:  # an unwritable output: this photo fails, the others go on
        return f"{exc.strerror or exc}"
    except JobServerError as exc:
        if exc.status != 404:  # the key or the server: every photo would fail the same way
            raise
        return "done on the server, but its result is gone (deleted from the history?)"
    if progress.on_fetched:
        progress.on_fetched(fetched)
    return fetched.done
