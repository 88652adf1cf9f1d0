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

MB = 1024 * 1024
#: Last measurement (ISNet on OpenVINO bf16, Zen 4, MALLOC_ARENA_MAX=2), peak RSS growth,
#: JPEG photo / flat PNG / flat PNG with alpha:
#:
#:   size    pipeline alone        one upload to the server   3 uploads, one at a time
#:   1 MP      9 /  14 /  10 MB      25 /  19 /  24 MB
#:   12 MP   135 /  94 / 109 MB     162 /  78 /  95 MB          137 /   - / 121 MB
#:   24 MP   270 / 192 / 251 MB     250 / 201 / 210 MB          313 /   - / 302 MB
#:   49 MP   542 / 448 / 569 MB     513 / 448 / 545 MB          860 /   - / 561 MB
#:
#: Removals that follow each other on different threads do not fully reuse each other's
#: freed memory (glibc keeps it per arena): hence the burst's 860 MB at 49 MP. The constants
#: are the least-squares line over the costliest figure per size, raised until every figure
#: lies under it (84 MB + 16.6 bytes per pixel), rounded up.
FIXED_BYTES = 84 * MB
BYTES_PER_PIXEL = 16.7


def estimate(width: int, height: int) -> int:
    """Bytes one removal of a *width* x *height* image needs at its peak."""
    return int(FIXED_BYTES + BYTES_PER_PIXEL * width * height)


def largest_pixels(budget: int) -> int:
    """The largest image (in pixels) whose removal fits in *budget* bytes on its own."""
    return max(0, int((budget - FIXED_BYTES) / BYTES_PER_PIXEL))
