"""What every surface shares, apart from the factory: extension objects and accessors.

Blueprints (the page, the studio, the APIs, the probes) import from here, never from
:mod:`cutout.app`: the factory imports the blueprints, so a blueprint importing the factory
would close an import circle, and every new surface would deepen it. The factory fills
``app.extensions`` under the names below; the accessors read them for the running app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app
from flask_wtf.csrf import CSRFProtect

if TYPE_CHECKING:
    from cutout.apikeys import KeyService
    from cutout.config import Settings
    from cutout.engine.loader import EngineLoader
    from cutout.jobs import Jobs
    from cutout.service import ImageService
    from cutout.storage.base import ImageStore
    from cutout.studio import Studio

#: CSRF protection of the cookie routes; the key-authenticated API blueprints are exempt.
csrf = CSRFProtect()

SERVICE = "cutout.service"
STUDIO = "cutout.studio"
STORE = "cutout.store"
ENGINE = "cutout.engine"
KEYS = "cutout.keys"
JOBS = "cutout.jobs"


def settings() -> Settings:
    """The running app's settings."""
    value: Settings = current_app.config["CUTOUT"]
    return value


def image_service() -> ImageService:
    """The running app's :class:`ImageService`: what every surface's views call."""
    svc: ImageService = current_app.extensions[SERVICE]
    return svc


def studio() -> Studio:
    svc: Studio = current_app.extensions[STUDIO]
    return svc


def store() -> ImageStore:
    value: ImageStore = current_app.extensions[STORE]
    return value


def engine_loader() -> EngineLoader:
    loader: EngineLoader = current_app.extensions[ENGINE]
    return loader


def key_service() -> KeyService:
    service: KeyService = current_app.extensions[KEYS]
    return service


def jobs() -> Jobs:
    """The running app's batch-job system (:mod:`cutout.jobs`)."""
    value: Jobs = current_app.extensions[JOBS]
    return value


def close_app(app: Flask) -> None:
    """Stop the app's background threads (the job system's, started by its first request) and
    then close its store. For code that builds an app for a moment (the docs' OpenAPI, tests)
    and removes its data folder afterwards: a thread still running would write into it."""
    jobs_system: Jobs | None = app.extensions.get(JOBS)
    if jobs_system is not None:
        jobs_system.close()
    app.extensions[STORE].close()
