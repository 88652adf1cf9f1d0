"""The page's batch jobs: a drop of more photos than ``CUTOUT_PAGE_JOB_THRESHOLD`` goes to
the server as one job (the browser's user, no key, no credits), and the page follows it; the
results land in the history, so the tab can be closed meanwhile."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from cutout.extensions import jobs
from cutout.jobs import job_json
from cutout.jobs.service import Upload
from cutout.web.bodies import FORM_OVERHEAD, body_limit
from cutout.web.identity import current_user

bp = Blueprint("web_jobs", __name__)
#: What a page job makes: the page's own output (a PNG cut-out).
PAGE_OPTIONS = {"format": "png", "background": None, "crop": False, "margin": 0, "mask_only": False}


@bp.post("/jobs")
@body_limit(lambda s: s.job_max_bytes + FORM_OVERHEAD)
def create_job() -> ResponseReturnValue:
    sources = (Upload(f.filename or "photo", f.stream) for f in request.files.getlist("images"))
    job = jobs().service.submit(current_user(), None, sources, dict(PAGE_OPTIONS))
    return jsonify(job_json(job)), 202


@bp.get("/jobs/<string:job_id>")
def get_job(job_id: str) -> ResponseReturnValue:
    service = jobs().service
    job = service.get(current_user(), job_id)
    body = job_json(job, service.eta_seconds(job))
    body["items"] = [
        {"index": i.index, "status": i.status, "image_id": i.image_id, "error": i.error}
        for i in service.all_items(job.id)
    ]
    return jsonify(body)
