"""``cutout remove --server``: the photos go to a server as one batch job (no Flask here).

The job is named by a client-side idempotency key, a hash of the inputs' bytes and the
options, so running the same command again (after Ctrl+C, a lost network, a killed process)
finds the same job instead of starting another: from a small state file beside the outputs
without uploading anything, else by sending the same request with the same
``Idempotency-Key``. Results already written are not downloaded again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from cutout.batch import Done, Job, write_atomic
from cutout.errors import CutoutError, DownloadFailed, InvalidInput

CHUNK = 256 * 1024
STATE = ".cutout-job.json"
POLL = 1.0


@dataclass
class Remote:
    server: str
    key: str
    options: dict[str, Any]  # the API's output fields: format, background, crop, margin...
    on_result: Callable[[Job, Done | str], None]
    on_done: Callable[[Job], None] = lambda job: None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        self.server = self.server.rstrip("/")
        self.session = requests.Session()
        self.session.headers["X-Api-Key"] = self.key

    def run(self, jobs: list[Job]) -> list[tuple[Job, str]]:
        """Send *jobs* as one job (or find it again), write each result as it finishes;
        return the failures."""
        key = idempotency_key(jobs, self.options)
        state = jobs[0].target.parent / STATE if len({j.target.parent for j in jobs}) == 1 else None
        job_id = _read_state(state, key) or self._submit(jobs, key)
        if state is not None:
            write_atomic(state, json.dumps({"idempotency_key": key, "job": job_id}).encode())
        failures = self._follow(job_id, jobs)
        if state is not None:
            state.unlink(missing_ok=True)
        return failures

    def _submit(self, jobs: list[Job], key: str) -> str:
        boundary = secrets.token_hex(16)
        response = self._call(
            "post",
            "/api/v1/jobs",
            data=_multipart(jobs, self.options, boundary),
            headers={
                "Idempotency-Key": key,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        return str(response.json()["id"])

    def _follow(self, job_id: str, jobs: list[Job]) -> list[tuple[Job, str]]:
        reported: set[int] = set()
        failures: list[tuple[Job, str]] = []
        while True:
            body = self._call("get", f"/api/v1/jobs/{job_id}?per_page=1000").json()
            items = body["items"] + self._more_items(job_id, body)
            for item in items:
                index = int(item["index"])
                if index in reported or index >= len(jobs):
                    continue
                job = jobs[index]
                if item["status"] == "done":
                    self.on_result(job, self._download(job, str(item["image_id"])))
                elif item["status"] in ("failed", "cancelled"):
                    message = item["error"] or "cancelled on the server"
                    failures.append((job, message))
                    self.on_result(job, message)
                else:
                    continue
                reported.add(index)
                self.on_done(job)
            if body["status"] in ("done", "cancelled") and len(reported) == len(items):
                return failures
            time.sleep(POLL)

    def _more_items(self, job_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        more: list[dict[str, Any]] = []
        for page in range(2, -(-int(body["total"]) // 1000) + 1):
            url = f"/api/v1/jobs/{job_id}?per_page=1000&page={page}"
            more += self._call("get", url).json()["items"]
        return more

    def _download(self, job: Job, image_id: str) -> Done:
        info = self._call("get", f"/api/v1/images/{image_id}").json()
        processed = info.get("processed") or {}
        if not job.target.exists():  # written by an earlier run: not fetched again
            data = self._call("get", f"/api/v1/images/{image_id}/processed").content
            write_atomic(job.target, data)
        return Done(
            job,
            int(processed.get("width") or 0),
            int(processed.get("height") or 0),
            0.0,
            info.get("confidence"),
            info.get("needs_review"),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(
                method, self.server + path, timeout=self.timeout, **kwargs
            )
        except requests.RequestException as exc:
            raise DownloadFailed(f"Could not reach {self.server}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text[:200]
            error = InvalidInput if response.status_code < 500 else CutoutError
            raise error(f"The server answered {response.status_code}: {message}")
        return response


def idempotency_key(jobs: list[Job], options: dict[str, Any]) -> str:
    """The same inputs (bytes and order) and options give the same key, on any machine."""
    digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    for job in jobs:
        digest.update(job.source.name.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(_file_sha256(job.source).encode())
    return "cutout-cli-" + digest.hexdigest()[:48]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _multipart(jobs: list[Job], options: dict[str, Any], boundary: str) -> Iterator[bytes]:
    """The request body, made as it is sent: one file chunk in memory at a time."""
    dash = f"--{boundary}\r\n".encode()
    for name, value in options.items():
        if value is None or value is False:
            continue
        shown = "true" if value is True else str(value)
        yield dash + f'Content-Disposition: form-data; name="{name}"\r\n\r\n{shown}\r\n'.encode()
    for job in jobs:
        filename = job.source.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        yield dash + (
            f'Content-Disposition: form-data; name="images"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        with job.source.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _read_state(state: Path | None, key: str) -> str | None:
    if state is None or not state.is_file():
        return None
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return None
    return str(saved["job"]) if saved.get("idempotency_key") == key else None
