"""Batch jobs on the native API: ``/api/v1/jobs`` (thin views over :mod:`cutout.jobs`).

Routes live on the native blueprint, so they are key-authenticated, rate-limited and in the
generated OpenAPI document like the images routes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import IO, Any

from flask import Flask, Response, jsonify, request, stream_with_context
from flask.typing import ResponseReturnValue
from pydantic import ValidationError

from cutout import extensions
from cutout.api import models
from cutout.api.auth import current_key, keys, presented_secret
from cutout.api.native import IDEMPOTENCY, _first_problem, bp
from cutout.api.openapi import Operation, operation
from cutout.api.openapi import Response as Doc
from cutout.errors import InvalidInput
from cutout.jobs import Jobs, job_json
from cutout.jobs.service import Source, Upload, Url, sources_from_zip
from cutout.jobs.webhook import webhook_secret
from cutout.storage.jobs import Job
from cutout.storage.keys import StoredResponse
from cutout.web.bodies import FORM_OVERHEAD, body_limit

JOB_NOT_FOUND = Doc("No such job, or it is not this key's user's.", models.ErrorBody)
OPTION_FIELDS = ("format", "background", "crop", "margin", "mask_only", "quality")


def init_app(app: Flask) -> None:
    """Build the app's job system; its threads start with the first request."""
    from cutout.jobs import for_web

    built = for_web(
        app.config["CUTOUT"], app.extensions[extensions.SERVICE], app.extensions[extensions.KEYS]
    )
    app.extensions[extensions.JOBS] = built
    app.before_request(built.start)
    app.extensions[extensions.STORE].on_close.append(built.close)


def jobs() -> Jobs:
    value: Jobs = extensions.jobs()
    return value


@bp.post("/jobs")
@operation(
    Operation(
        summary="Start a batch job: many photos, processed by workers",
        description=(
            "Photos as repeated multipart `images` files, a `.zip` as `archive`, repeated "
            '`urls` fields, or JSON `{"urls": [...]}`, with the output options of '
            "POST /images. Each finished item is an ordinary image of the key's user (one "
            "credit, within USER_LIMIT). A photo whose bytes and options this user already "
            "had processed is not computed again."
        ),
        json_body=models.JobFromJson,
        form_body=models.JobUpload,
        headers=IDEMPOTENCY,
        responses={
            202: Doc("Accepted; poll links.self.", models.Job, headers={"Location": "The job."}),
            400: Doc("A parameter or the archive is not acceptable.", models.ErrorBody),
            409: Doc("The Idempotency-Key is in use.", models.ErrorBody),
            413: Doc("Too many photos or bytes for one job.", models.ErrorBody),
        },
    )
)
@body_limit(lambda s: s.job_max_bytes + FORM_OVERHEAD, json_values=4 * 10_000)
def create_job() -> ResponseReturnValue:
    key = current_key()
    fields, sources, files = _job_request()
    idempotency_key = request.headers.get("Idempotency-Key", "").strip()
    if len(idempotency_key) > 255:
        raise InvalidInput("The Idempotency-Key header is at most 255 characters.")
    if not idempotency_key:
        return _accepted(_submit(key.user_id, key.id, fields, sources))
    store = keys().store
    fingerprint = _fingerprint(fields, files)
    stored = store.begin_idempotent(key.user_id, "job:" + idempotency_key, fingerprint, time.time())
    if stored is not None:
        response = Response(stored.body, stored.status, mimetype="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        job_id = json.loads(stored.body).get("id", "")
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return response
    try:
        response = _accepted(_submit(key.user_id, key.id, fields, sources))
    except BaseException:
        store.abandon_idempotent(key.user_id, "job:" + idempotency_key)
        raise
    store.finish_idempotent(
        key.user_id, "job:" + idempotency_key, StoredResponse(202, response.get_data(True))
    )
    return response


def _job_request() -> tuple[dict[str, Any], Iterator[Source], list[tuple[str, IO[bytes]]]]:
    """The validated fields, the photos (lazily: stored as they are read) and the files."""
    if request.is_json:
        body = request.get_json()
        try:
            parsed = models.JobFromJson.model_validate(body if isinstance(body, dict) else None)
        except ValidationError as exc:
            raise InvalidInput(_first_problem(exc)) from None
        fields = parsed.model_dump(mode="json")
        return fields, iter([Url(u) for u in parsed.urls]), []
    form = {name: request.form.get(name) for name in OPTION_FIELDS if name in request.form}
    form["webhook_url"] = request.form.get("webhook_url") or None
    try:
        parsed_form = models.JobFromJson.model_validate({**form, "urls": ["-"]})
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    fields = parsed_form.model_dump(mode="json")
    fields["urls"] = request.form.getlist("urls")
    files = [(f.filename or "photo", f.stream) for f in request.files.getlist("images")]
    archive = request.files.get("archive")
    if archive is not None:
        files.append(("archive.zip", archive.stream))
    return fields, _sources(files, archive is not None, fields["urls"]), files


def _sources(
    files: list[tuple[str, IO[bytes]]], archive: bool, urls: list[str]
) -> Iterator[Source]:
    photos = files[:-1] if archive else files
    for name, stream in photos:
        yield Upload(name, stream)
    if archive:
        yield from sources_from_zip(files[-1][1])
    for url in urls:
        yield Url(url)


def _fingerprint(fields: dict[str, Any], files: list[tuple[str, IO[bytes]]]) -> str:
    """What makes two job requests "the same": the fields and every file's name and bytes
    (hashed as streamed, then rewound for storing)."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for name, stream in files:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        while chunk := stream.read(256 * 1024):
            digest.update(chunk)
        stream.seek(0)
        digest.update(b"\0")
    return digest.hexdigest()


def _submit(user_id: str, key_id: str, fields: dict[str, Any], sources: Iterator[Source]) -> Job:
    options = {name: fields.get(name) for name in OPTION_FIELDS}
    webhook = fields.get("webhook_url") or None
    if webhook and not webhook.lower().startswith(("http://", "https://")):
        raise InvalidInput("webhook_url must start with http:// or https://.")
    secret = presented_secret()
    return jobs().service.submit(
        user_id,
        key_id,
        sources,
        options,
        webhook_url=webhook,
        webhook_secret=webhook_secret(secret) if webhook and secret else None,
    )


def _accepted(job: Job) -> Response:
    response = jsonify(job_json(job, jobs().service.eta_seconds(job)))
    response.status_code = 202
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return response


@bp.get("/jobs")
@operation(
    Operation(
        summary="The key's user's jobs, newest first (the last 100)",
        responses={200: Doc("The jobs.", models.JobList)},
    )
)
def list_jobs() -> ResponseReturnValue:
    service = jobs().service
    found = service.jobs.list_jobs(current_key().user_id)
    return jsonify(items=[job_json(j, service.eta_seconds(j)) for j in found])


@bp.get("/jobs/<string:job_id>")
@operation(
    Operation(
        summary="A job, with one page of its items",
        query=models.ItemPage,
        responses={
            200: Doc("The job.", models.JobDetail),
            400: Doc("Bad page.", models.ErrorBody),
            404: JOB_NOT_FOUND,
        },
    )
)
def get_job(job_id: str) -> ResponseReturnValue:
    try:
        page = models.ItemPage.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise InvalidInput(_first_problem(exc)) from None
    service = jobs().service
    job = service.get(current_key().user_id, job_id)
    items = service.jobs.list_items(
        job.id, offset=(page.page - 1) * page.per_page, limit=page.per_page
    )
    body = job_json(job, service.eta_seconds(job))
    body["items"] = [
        {
            "index": i.index,
            "name": i.name,
            "status": i.status,
            "attempts": i.attempts,
            "image_id": i.image_id,
            "error": i.error,
            "error_code": i.error_code,
            "seconds": _seconds(i.started_at, i.finished_at),
        }
        for i in items
    ]
    body.update(page=page.page, per_page=page.per_page)
    return jsonify(body)


def _seconds(started: float | None, finished: float | None) -> float | None:
    """An item's time on the server, first start to end (retries included), for
    ``cutout remove --server --json``."""
    if started is None or finished is None:
        return None
    return round(max(0.0, finished - started), 3)


@bp.get("/jobs/<string:job_id>/results.zip")
@operation(
    Operation(
        summary="The finished items' cut-outs as a zip, streamed (also while the job runs)",
        responses={200: Doc("A zip.", media_types=("application/zip",)), 404: JOB_NOT_FOUND},
    )
)
def job_results(job_id: str) -> ResponseReturnValue:
    chunks = jobs().service.results_zip(current_key().user_id, job_id)
    response = Response(stream_with_context(chunks), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="job-{job_id}.zip"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.delete("/jobs/<string:job_id>")
@operation(
    Operation(
        summary="Cancel a job: items not started are cancelled, finished ones stay",
        responses={200: Doc("The job, cancelled.", models.Job), 404: JOB_NOT_FOUND},
    )
)
def cancel_job(job_id: str) -> ResponseReturnValue:
    service = jobs().service
    job = service.cancel(current_key().user_id, job_id)
    return jsonify(job_json(job, service.eta_seconds(job)))
