"""Probes: ``/health`` (the seed's liveness check) and ``/ready`` (store answers, model loaded)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from cutout import extensions
from cutout.errors import StorageError

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> ResponseReturnValue:
    """Liveness: the process serves requests. Deliberately checks nothing else."""
    return jsonify(status="Healthy")


@bp.get("/ready")
def ready() -> ResponseReturnValue:
    """Readiness: 200 when the store answers and the model is loaded, else 503 saying why."""
    store = extensions.store()
    loader = extensions.engine_loader()
    problems = []
    try:
        store.ping()
    except StorageError as exc:
        problems.append(f"store: {exc}")
    if not loader.ready:
        problems.append(f"engine: {loader.error or 'loading'}")
    if problems:
        return jsonify(status="Unavailable", problems=problems), 503
    return jsonify(status="Ready")
