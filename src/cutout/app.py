"""The application factory: settings in, a wired Flask app out. Nothing happens at import."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from cutout import extensions, metrics, pipeline
from cutout.config import Settings
from cutout.engine import build_engine, required_models
from cutout.engine.base import Admission, Engine
from cutout.engine.files import model_path
from cutout.engine.fused import FusedEngine
from cutout.engine.loader import EngineLoader
from cutout.engine.runtimes import stream_count
from cutout.errors import ConfigError
from cutout.imaging.compose import OutputOptions
from cutout.imaging.decode import Limits
from cutout.logs import RequestId, configure_logging
from cutout.machine import memory_limit
from cutout.memory import fitted_budget
from cutout.metrics import MeteredStore
from cutout.service import ImageService
from cutout.storage import open_store
from cutout.storage.base import ImageStore
from cutout.storage.sweeper import Sweeper
from cutout.studio import Studio
from cutout.web import bodies

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    store: ImageStore | None = None,
) -> Flask:
    """Build the app from *settings* (default: environment and ``.env``).

    *engine* and *store* replace the configured ones; tests use this seam to inject failures.
    A missing model is an error here, at start, naming the command that fetches it.
    """
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, json_logs=settings.json_logs)
    app = Flask(__name__, static_folder="web/static", template_folder="web/templates")
    app.config.update(
        SECRET_KEY=secret_key(settings),
        # The ceiling; every request gets its endpoint's own limit (cutout.web.bodies).
        MAX_CONTENT_LENGTH=bodies.two_uploads(settings),
        MAX_FORM_MEMORY_SIZE=bodies.base64_upload(settings),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session cookie
        WTF_CSRF_SSL_STRICT=False,  # Referer checks break behind proxies; the token suffices
        TESTING=settings.env == "testing",
        CUTOUT=settings,
    )
    _wrap(app, settings)
    extensions.csrf.init_app(app)
    loader = EngineLoader.ready_with(engine) if engine else start_engine(settings)
    metered = MeteredStore(store or open_store(settings))
    app.extensions[extensions.STORE] = metered
    if settings.sweep_interval > 0:  # per process: each gunicorn worker runs its own
        sweeper = Sweeper(metered, settings.sweep_interval).start()
        metered.on_close.append(sweeper.stop)
    app.extensions[extensions.ENGINE] = loader
    budget = memory_budget(settings, processes=settings.web_workers)  # gunicorn's workers
    service = build_service(settings, metered, loader, budget)
    app.extensions[extensions.SERVICE] = service
    app.extensions[extensions.STUDIO] = Studio(images=service, fetch_policy=settings.fetch_policy)
    pipeline.on_stage = metrics.observe_stage
    metrics.init_app(app, budget=budget)
    _register(app)
    return app


def _wrap(app: Flask, settings: Settings) -> None:
    """WSGI middleware: forwarded headers as configured, then (outermost) the request id."""
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    app.wsgi_app = RequestId(app.wsgi_app)  # type: ignore[method-assign]


def memory_budget(settings: Settings, processes: int) -> int:
    """What one of *processes* sharing this container admits removals against: the setting,
    or the default fitted to the container's memory limit (:func:`cutout.memory.fitted_budget`;
    the reason is logged)."""
    budget, warning = fitted_budget(
        settings.memory_budget_bytes,
        chosen="CUTOUT_MEMORY_BUDGET_MB" in settings.chosen,
        processes=processes,
        streams=stream_count(settings.inference_threads, settings.max_concurrent),
        limit=memory_limit(),
    )
    if warning:
        log.warning(warning)
    return budget


def build_service(
    settings: Settings, store: ImageStore, loader: EngineLoader, budget: int
) -> ImageService:
    """The image service every surface (and `cutout worker`) runs removals through."""
    return ImageService(
        store=store,
        engine=loader.get,
        # One more removal than forward-pass slots: it decodes, refines and encodes while
        # another runs the model. Waiting requests hold only their upload, not a decoded photo.
        # The budget bounds what the admitted ones may cost together (cutout.memory).
        admission=Admission(
            slots=settings.max_concurrent + 1,
            max_waiting=settings.max_queue,
            timeout=settings.queue_timeout,
            budget=budget,
            observer=metrics.AdmissionMetrics(),
        ),
        limits=Limits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels),
        user_limit=settings.user_limit,
        output=OutputOptions(png_compression=settings.png_compression),
    )


def _register(app: Flask) -> None:
    from cutout import api, health
    from cutout.web import errors, identity, jobs, keys, request, security, studio, views

    request.init_app(app)
    bodies.init_app(app)
    security.init_app(app)
    identity.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(studio.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(jobs.bp)  # the page's jobs; the job system itself: api.init_app
    api.init_app(app)


def start_engine(settings: Settings) -> EngineLoader:
    """Check the model is there now (fail fast), then compile it in the background."""
    start_engine_check(settings)
    return EngineLoader(
        lambda: loaded_engine(settings),
        timeout=settings.queue_timeout,
        on_loaded=metrics.MODEL_LOAD.set,
    ).start()


def loaded_engine(settings: Settings) -> Engine:
    """:func:`build_engine`, returned once the default quality mode's models are all compiled
    (MODNet compiles on a thread of its own) and have each run once, so ``/ready`` means the
    first request neither waits nor pays the runtime's first-pass allocations."""
    engine = build_engine(settings)
    if isinstance(engine.inner, FusedEngine):
        # waits for MODNet; raises what its compilation raised
        engine.inner.warm_up(settings.max_concurrent)
    return engine


def start_engine_check(settings: Settings) -> None:
    """Raise :class:`ModelNotFetched` (naming the fetch command) if a local model is missing."""
    if settings.engine == "local":
        for spec in required_models(settings):
            model_path(spec, settings.model_dir)


def secret_key(settings: Settings, *, announce: bool = True) -> str:
    """APP_SECRET_KEY; required in production, generated (and kept) in development.

    A generated key is announced once per process tree (*announce*; gunicorn's workers are
    forked from the master that already said it).
    """
    if settings.secret_key:
        return settings.secret_key
    if settings.env == "production":
        raise ConfigError(
            "APP_SECRET_KEY is not set. Set it to a long random string, e.g. the output of "
            "`python -c 'import secrets; print(secrets.token_hex(32))'`, or set "
            "CUTOUT_ENV=development to have one generated."
        )
    if settings.env == "testing":
        return secrets.token_hex(32)
    return _development_key(settings.data_dir / "dev-secret-key", announce=announce)


_announced: set[Path] = set()


def _development_key(path: Path, *, announce: bool) -> str:
    """A random key kept in the data dir, so a restart does not orphan everyone's history."""
    if announce and path not in _announced:
        _announced.add(path)
        made = "" if path.is_file() else "new "
        log.warning("APP_SECRET_KEY is not set: using a %sdevelopment key kept in %s", made, path)
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key
