"""What one removal costs in memory, estimated from its pixel count before decoding.

Admission (:class:`cutout.engine.base.Admission`) reserves this estimate from the process's
memory budget (``CUTOUT_MEMORY_BUDGET_MB``) before a photo is decoded, so the sum of what runs
at once stays within it, whatever the files weigh on disk: a flat 7000x7000 PNG is 62 KB but
decodes to 150 MB, and the pipeline works on several full-size buffers (RGB, alpha, the
refinement's float planes, the RGBA output).

The constants are measured, not guessed, by ``scripts/measure_memory.py``: peak RSS growth of
one removal in a process that has already served one (MALLOC_ARENA_MAX=2, as the server runs),
for JPEG photos, flat PNGs and flat PNGs with alpha from 1 to 49 MP, and then of one upload
through the real server. Re-run it when the pipeline changes (another model, a new
refinement step) and paste its output here. Figures of the last run are in the README
("Running it in production").
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from cutout.imaging.compose import OutputOptions

MB = 1024 * 1024
#: Last measurement (the fused pipeline: INT8 ISNet + MODNet on OpenVINO, Zen 4,
#: MALLOC_ARENA_MAX=2, `make measure-memory`), peak RSS growth, JPEG photo / flat PNG / flat
#: PNG with alpha:
#:
#:   size    pipeline alone        one upload to the server   3 uploads, one at a time
#:   1 MP     36 /  37 /  37 MB      36 /  24 /  24 MB
#:   6 MP    109 /  84 /  94 MB      47 /  52 /  79 MB
#:   12 MP   161 / 137 / 150 MB     125 / 114 / 151 MB          180 /   - / 169 MB
#:   24 MP   342 / 256 / 314 MB     291 / 226 / 290 MB          371 /   - / 290 MB
#:   36 MP   461 / 374 / 448 MB     413 / 328 / 431 MB
#:   49 MP   620 / 510 / 610 MB     327 / 209 / 336 MB          725 /   - / 546 MB
#:
#: Removals that follow each other on different threads do not fully reuse each other's
#: freed memory (glibc keeps it per arena): hence the burst's 725 MB at 49 MP. The constants
#: are the least-squares line over the costliest figure per size, raised until every figure
#: lies under it (51 MB + 14.42 bytes per pixel), rounded up. (The single-model pipeline
#: before MODNet and INT8 measured 84 MB + 16.6 bytes per pixel the same way.)
FIXED_BYTES = 51 * MB
BYTES_PER_PIXEL = 14.5


def estimate(width: int, height: int) -> int:
    """Bytes one removal of a *width* x *height* image needs at its peak."""
    return int(FIXED_BYTES + BYTES_PER_PIXEL * width * height)


#: What the ``best`` quality mode costs beyond :func:`estimate` (the mirrored ISNet pass: its
#: input tensor, output and the averaged mask, all at the model's resolution, so a constant),
#: measured as the peak RSS growth of three best removals after three balanced ones in one
#: process (MALLOC_ARENA_MAX=2, Zen 4; a soft photo, so the mirrored pass runs): +20 MB at
#: 1 MP, +0 at 12 MP (where the refinement's peak dominates). Rounded up.
BEST_EXTRA_BYTES = 24 * MB


def quality_cost(quality: str | None) -> int:
    """Bytes the quality mode *quality* needs beyond :func:`estimate` (None: the default,
    which ``CUTOUT_QUALITY=best`` servers must budget for in ``CUTOUT_MEMORY_BUDGET_MB``)."""
    return BEST_EXTRA_BYTES if quality == "best" else 0


def largest_pixels(budget: int) -> int:
    """The largest image (in pixels) whose removal fits in *budget* bytes on its own."""
    return max(0, int((budget - FIXED_BYTES) / BYTES_PER_PIXEL))


#: A server process's resident memory with its models loaded and warmed, before any photo:
#: 448 MiB for the image's command (INT8 ISNet + MODNet, Zen 4; docs/deploy "Memory per
#: replica"), rounded up. Each further forward-pass slot with a stream of its own
#: (CUTOUT_INFERENCE_THREADS set, CUTOUT_MAX_CONCURRENT above 1) holds about 100 MiB more
#: (stop 28: 440 -> 542 MiB once warmed).
PROCESS_BYTES = 450 * MB
STREAM_BYTES = 100 * MB
#: What remains of a process's share of the memory limit, divided by this, is its fitted
#: budget: the Kubernetes limits were set at the measured burst plus 20% (docs/deploy).
HEADROOM = 1.2
#: The smallest budget fitted: a 1 MP photo's removal. Below it the limit cannot even hold the
#: models, and the warning says so.
SMALLEST_BUDGET = 66 * MB


def fitted_budget(
    budget: int, *, chosen: bool, processes: int, streams: int, limit: int | None
) -> tuple[int, str | None]:
    """The memory budget one process admits removals against, and a warning, if any.

    *budget* is CUTOUT_MEMORY_BUDGET_MB in bytes; *chosen*, whether it was set. *processes*
    share the container's memory *limit* (None: no limit), each with its models and *streams*
    forward-pass streams. A default budget is lowered to fit the limit: left at 1024 MB in a
    1 GiB container, a burst of large uploads would be killed by the kernel instead of
    answered with 503s. A chosen budget is kept, with a warning when it does not fit.
    """
    if limit is None:
        return budget, None
    resident = PROCESS_BYTES + max(0, streams - 1) * STREAM_BYTES
    fits = int((limit / max(1, processes) - resident) / HEADROOM)
    need = f"{processes} process(es) of about {resident // MB} MB with their models"
    if chosen:
        if budget <= fits:
            return budget, None
        return budget, (
            f"CUTOUT_MEMORY_BUDGET_MB={budget // MB} may not fit the memory limit of "
            f"{limit // MB} MB ({need}; about {max(0, fits) // MB} MB each fits): a burst of "
            "large uploads could be killed by the kernel."
        )
    if budget <= fits:
        return budget, None
    fitted = max(fits, SMALLEST_BUDGET)
    warning = (
        f"Memory budget lowered to {fitted // MB} MB per process to fit the memory limit of "
        f"{limit // MB} MB ({need}); photos above {largest_pixels(fitted) / 1e6:.0f} MP get "
        "413. Set CUTOUT_MEMORY_BUDGET_MB to choose."
    )
    if fits < SMALLEST_BUDGET:
        warning += " The limit is too small for the models themselves."
    return fitted, warning


#: What one more decoded picture costs beyond a removal (a background picture): decoded with
#: its alpha (4 bytes per pixel), converted to RGB (3) and scaled, rounded up.
DECODE_BYTES_PER_PIXEL = 8
#: What the canvases of an output cost beyond the removal's own buffers, per output pixel:
#: remove.bg's crop margins and ``position`` make canvases larger than the photo (RGB and
#: alpha), the compositor flattens them (RGBA) and the encoder keeps a copy.
RENDER_BYTES_PER_PIXEL = 12


def decode_cost(width: int, height: int) -> int:
    """Bytes decoding one more picture of *width* x *height* may need at its peak."""
    return int(DECODE_BYTES_PER_PIXEL * width * height)


def render_cost(pixels: int) -> int:
    """Bytes the output canvases of *pixels* may need beyond the removal itself."""
    return int(RENDER_BYTES_PER_PIXEL * pixels)


#: What the output's encoding costs beyond the PNG cut-out the constants above were measured
#: on, per pixel of the photo (peak RSS growth of one removal in a fresh process, as
#: make measure-memory does; Intel Xeon, 2 cores, stop 22). A flattened output (JPEG, a
#: background colour, refined edges) estimates the foreground's colours strip by strip onto the
#: backdrop: a JPEG of a 6 / 16 / 25 MP photo peaked at 110 / 209 / 348 MB against PNG's
#: 80 / 192 / 308, below the line above, so 4 bytes per pixel is margin for the server's own
#: buffers (it was 175 / 321 / 484 MB while full-size foreground and composite images were
#: built, and a 16 MP JPEG overshot its reservation in CI). A transparent WebP gives libwebp an
#: RGBA copy and its own working set (method 4: 464 MB for a 16 MP picture on its own):
#: 201 / 492-507 / 758 MB at 6 / 16 / 25 MP in a fresh process, 11-15 bytes per pixel over the
#: line; through the server, with freed memory returned before the request
#: (``release_free_memory``), a 16 MP WebP grew the worker by up to 538 MB, 16.6 bytes per
#: pixel over the line, so 22.
FLATTEN_BYTES_PER_PIXEL = 4
WEBP_BYTES_PER_PIXEL = 22


def output_cost(pixels: int, *, format: str, flattened: bool, mask_only: bool = False) -> int:
    """Bytes encoding an output of *pixels* costs beyond the removal's estimate."""
    if mask_only:
        return 0
    if flattened or format == "jpeg":
        return int(FLATTEN_BYTES_PER_PIXEL * pixels)
    if format == "webp":
        return int(WEBP_BYTES_PER_PIXEL * pixels)
    return 0


def options_cost(options: OutputOptions, pixels: int) -> int:
    """:func:`output_cost` of the compositor's *options*."""
    flattened = options.background is not None or options.refine_edges
    return output_cost(
        pixels, format=options.format, flattened=flattened, mask_only=options.mask_only
    )


#: A touch-up's replay beyond the decode and compose of the export it shares its estimate
#: with: the alpha as float32 tiles (4 bytes per pixel) and the strokes' working arrays.
#: Measured by tests/web/test_live_worst.py: 300 strokes near the bound on a 16 MP record
#: grew the worker by 205-320 MB against the 272 MB of the removal's line alone (the replay
#: itself holds 105 MB of arrays at its peak; before stop 22 it held 212 MB and the request
#: once grew 440 MB, over its 394 MB reservation).
TOUCH_UP_BYTES_PER_PIXEL = 8


def touch_up_cost(pixels: int) -> int:
    """Bytes replaying strokes on a *pixels* alpha needs beyond :func:`estimate`."""
    return int(TOUCH_UP_BYTES_PER_PIXEL * pixels)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return trim


def release_free_memory() -> None:
    """Give the memory freed by earlier requests back to the operating system (glibc's
    ``malloc_trim``), so that a request's peak is its own working set: freed chunks kept in
    another thread's arena, or holes too small for this request's arrays, would otherwise
    stay resident beside it and push the process past its budget."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
