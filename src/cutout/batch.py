"""Batch removal for the CLI: map inputs to outputs, run them in parallel, collect failures."""

from __future__ import annotations

import logging
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.engine.runtimes import cpu_has_amx
from cutout.errors import CutoutError, InvalidInput
from cutout.imaging.compose import EXTENSIONS, FORMATS, OutputFormat, OutputOptions
from cutout.imaging.decode import Limits
from cutout.machine import usable_cores
from cutout.pipeline import remove_background

log = logging.getLogger(__name__)

#: Files picked up when a folder is given. Explicitly named files are always tried: their
#: content, not their name, decides whether they are images.
IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jpe",
    ".png",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
    ".heic",
    ".heif",
    ".avif",
    ".mpo",
}
SUFFIX_FORMATS: dict[str, OutputFormat] = {
    ".png": "png",
    ".webp": "webp",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
}


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path
    format: OutputFormat


@dataclass(frozen=True)
class Done:
    """What one finished job made: the output's size, the time it took, its confidence."""

    job: Job
    width: int
    height: int
    seconds: float
    confidence: float | None
    needs_review: bool | None


#: Folders of at least this many photos run one forward pass per worker at once (see
#: :func:`folder_settings`). Below it the last photo's pass, alone on one core while the other
#: idles, costs more than the streams save: 3 and 5 photos at 2 MP took 1.10x and 1.07x as
#: long, 8 took 0.94x (2 Zen 4 cores, median of 8 interleaved runs).
STREAMS_FROM = 8


def folder_settings(settings: Settings, photos: int, workers: int) -> Settings:
    """*settings* for *photos* photos run by *workers* threads on the local engine.

    One forward pass on all cores waits at every layer for its slowest core; one pass per
    core does not. On 2 Zen 4 cores, two one-thread OpenVINO streams gave ISNet 1.10x the
    throughput of one two-thread stream, and a folder of 24 photos at 2 MP took 0.94x as
    long (29 photos of 0.1-0.5 MP: 0.95x). Each stream holds its own buffers: the process
    peaks about 180 MB higher (487 against 660-672 MB on those 24 photos). Only when neither
    CUTOUT_MAX_CONCURRENT nor CUTOUT_INFERENCE_THREADS was set: any value set, even the
    default's, is the user's choice and kept.

    Not on a CPU with AMX, where it was never measured: the one figure we had there (two
    one-thread job workers at 0.64x one two-thread `cutout remove`) was taken while OpenVINO
    pinned both workers' threads to the same core, so it says nothing about streams.
    """
    cores = usable_cores()
    streams = min(workers, cores)
    chosen = {"CUTOUT_MAX_CONCURRENT", "CUTOUT_INFERENCE_THREADS"} & settings.chosen
    untouched = not chosen and (settings.max_concurrent, settings.inference_threads) == (1, 0)
    wanted = settings.engine == "local" and untouched and streams >= 2 and photos >= STREAMS_FROM
    if not wanted or cpu_has_amx():
        return settings
    return settings.replace(max_concurrent=streams, inference_threads=cores // streams)


def plan_jobs(inputs: Iterable[Path], output: Path | None, fmt: str | None) -> list[Job]:
    """Decide where each photo's cut-out goes, and in which format.

    One file in: ``output`` is the file to write (or a folder to write into); its extension
    gives the format unless ``fmt`` does, and an extension we cannot write, or one that
    contradicts ``fmt``, is refused. Several files or a folder: ``output`` is a folder and each
    result is ``OUTPUT/STEM.EXT``. No ``output``: each result goes beside its input as
    ``STEM.cutout.EXT``. Inputs are never overwritten.

    :raises InvalidInput: the arguments cannot work (the CLI reports a usage error).
    """
    inputs = list(inputs)
    sources = [f for path in inputs for f in _expand(path)]
    single_file = len(inputs) == 1 and inputs[0].is_file()
    if (
        single_file
        and output is not None
        and not output.is_dir()
        and not str(output).endswith(os.sep)
    ):
        return [_checked(Job(sources[0], output, _format_for(output, fmt)))]
    chosen = _format(fmt or "png")
    if output is not None and output.is_file():
        raise InvalidInput(f"{output} is a file; give a folder for several photos.")
    taken: set[Path] = set()
    jobs = []
    for source in sources:
        folder = output if output is not None else source.parent
        stem = source.stem if output is not None else f"{source.stem}.cutout"
        target = _unique(folder, stem, EXTENSIONS[chosen], taken)
        jobs.append(_checked(Job(source, target, chosen)))
    return jobs


def run_jobs(
    jobs: list[Job],
    engine: Engine,
    settings: Settings,
    options: OutputOptions,
    *,
    workers: int,
    on_done: Callable[[Job], None] | None = None,
    on_result: Callable[[Job, Done | str], None] | None = None,
) -> list[tuple[Job, str]]:
    """Process every job; return the failed ones with their one-line reasons, in input order.

    *on_result*, if given, hears about each job as it finishes: its :class:`Done`, or the
    one-line reason it failed.
    """
    limits = Limits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    failures: dict[Job, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            pool.submit(process, job, engine, limits, options): job
            for job in sorted(jobs, key=_aspect)
        }
        for future in as_completed(futures):
            job = futures[future]
            outcome = _outcome(job, future)
            if isinstance(outcome, str):
                failures[job] = outcome
            if on_result:
                on_result(job, outcome)
            if on_done:
                on_done(job)
    return [(job, failures[job]) for job in jobs if job in failures]


def _aspect(job: Job) -> float:
    """The photo's width over its height, from its header (0 if it cannot be read: it fails
    later, with its reason).

    Jobs run in this order. MODNet's input follows the photo's aspect, and OpenVINO keeps what it
    prepared for one input shape only (``engine/runtimes.py``): each change of shape cost 14 ms
    on a Zen 4. Taken by aspect, a folder's photos of one shape come one after another: on the
    29 test photos MODNet's passes took 1.15-1.34 s instead of 1.44-1.48 s (``-j 1``).
    """
    try:
        with warnings.catch_warnings():  # before any worker starts: no other decode to disturb
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(job.source) as image:
                width, height = image.size
    except Exception:  # whatever the file is, its job says why when it runs
        return 0.0
    return width / max(height, 1)


def process(job: Job, engine: Engine, limits: Limits, options: OutputOptions) -> Done:
    """Remove one photo's background and write the result atomically."""
    started = time.perf_counter()
    data = job.source.read_bytes()
    cutout = remove_background(data, engine, limits=limits, options=options)
    write_atomic(job.target, cutout.output.data)
    return Done(
        job,
        cutout.output.width,
        cutout.output.height,
        time.perf_counter() - started,
        cutout.confidence,
        cutout.needs_review,
    )


def _outcome(job: Job, future: Future[Done]) -> Done | str:
    """The job's result, or the one-line reason it failed."""
    try:
        return future.result()
    except CutoutError as exc:
        return str(exc)
    except OSError as exc:  # unreadable input, unwritable output
        return f"{exc.strerror or exc}"
    except Exception as exc:  # a bug must not cost the user the rest of the batch
        log.debug("unexpected failure on %s", job.source, exc_info=True)
        return f"unexpected error ({type(exc).__name__}: {exc})"


def write_atomic(target: Path, data: bytes) -> None:
    """Write *data* to *target* so that readers see either nothing or the whole file.

    The file gets the permissions of any file the user creates (0666 less the umask):
    ``tempfile.mkstemp`` would make it 0600, and the rename would keep that.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp, fd = _new_temp(target)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _new_temp(target: Path) -> tuple[Path, int]:
    """A fresh hidden file beside *target*, created with mode 0666 so the umask applies."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _expand(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    found = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not found:
        raise InvalidInput(f"{path} holds no photos ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    return found


def _format_for(output: Path, fmt: str | None) -> OutputFormat:
    """The format of one output file: its extension's, which must agree with *fmt* if given."""
    suffix = output.suffix.lower()
    if not suffix:
        return _format(fmt or "png")
    by_suffix = SUFFIX_FORMATS.get(suffix)
    if by_suffix is None:
        raise InvalidInput(
            f"cannot write {output.suffix} files; name the output .png, .webp, .jpg or .jpeg."
        )
    if fmt is not None and fmt != by_suffix:
        raise InvalidInput(
            f"{output.name} ends in {output.suffix} but --format {fmt} was given; "
            "change one of them."
        )
    return by_suffix


def _format(name: str) -> OutputFormat:
    for fmt in FORMATS:
        if fmt == name:
            return fmt
    raise InvalidInput(f"Unknown output format {name!r}; use png, webp or jpeg.")


def _unique(folder: Path, stem: str, suffix: str, taken: set[Path]) -> Path:
    """``folder/stem.suffix``, or ``stem-2``, ``stem-3``... when two inputs share a stem."""
    candidate, n = folder / f"{stem}{suffix}", 1
    while candidate in taken:
        n += 1
        candidate = folder / f"{stem}-{n}{suffix}"
    taken.add(candidate)
    return candidate


def _checked(job: Job) -> Job:
    if job.target.resolve() == job.source.resolve():
        raise InvalidInput(f"Refusing to overwrite the input {job.source}.")
    return job
