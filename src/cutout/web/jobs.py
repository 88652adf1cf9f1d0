"""The page's batch jobs: a large drop goes to the server as one job (cookie + CSRF).

``POST /jobs`` takes the photos as repeated multipart ``images`` files and answers 202 with the
job; ``GET /jobs/<id>`` gives it back with every item, for the queue. Both are thin views over
the same :class:`~cutout.jobs.service.JobService` as ``/api/v1/jobs``: the job belongs to the
page's user, so each finished item is a record of the history, under ``USER_LIMIT``; there is
no key, so no credits. The page sends a job only above ``CUTOUT_PAGE_JOB_THRESHOLD`` photos
(``static/queue.js``); fewer go one request each, as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from cutout.extensions import jobs
from cutout.jobs import job_json
from cutout.jobs.service import Upload
from cutout.service import clean_quality
from cutout.storage.jobs import Job, JobItem
from cutout.web.bodies import FORM_OVERHEAD, body_limit
from cutout.web.identity import current_user

bp = Blueprint("page_jobs", __name__)
#: The page's output: what a single upload from the page makes (a full-size PNG cut-out), in
#: the quality mode chosen on the page (the form's ``quality``).
PAGE_OPTIONS: dict[str, Any] = {
    "format": "png",
    "background": None,
    "crop": False,
    "margin": 0,
    "mask_only": False,
}


@bp.post("/jobs")
@body_limit(lambda s: s.job_max_bytes + FORM_OVERHEAD)
def create_job() -> ResponseReturnValue:
    """Store the dropped photos as one job of the page's user; the queue follows it."""
    service = jobs().service
    options = {**PAGE_OPTIONS, "quality": clean_quality(request.form.get("quality"))}
    job = service.submit(current_user(), None, _uploads(), options)
    response = jsonify(_page_json(job, []))
    response.status_code = 202
    return response


def _uploads() -> Iterator[Upload]:
    """Each photo, streamed to the store, under its file name (its record gets the stem, as
    the page's single uploads do: the runner makes the record's name)."""
    for upload in request.files.getlist("images"):
        yield Upload(upload.filename or "photo", upload.stream)


@bp.get("/jobs/<string:job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    """The job and all its items: a page's job is at most CUTOUT_JOB_MAX_ITEMS photos."""
    service = jobs().service
    job = service.get(current_user(), job_id)
    return jsonify(_page_json(job, list(service.all_items(job.id))))


def _page_json(job: Job, items: list[JobItem]) -> dict[str, Any]:
    body = job_json(job, jobs().service.eta_seconds(job))
    body.pop("links")  # the API's paths need a key; the page reads this route
    body["items"] = [
        {
            "index": i.index,
            "name": i.name,
            "status": i.status,
            "image_id": i.image_id,
            "error": i.error,
        }
        for i in items
    ]
    return body
