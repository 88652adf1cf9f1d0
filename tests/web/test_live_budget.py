"""A burst of large images against the real server keeps its memory within the budget
(issue 9, fault 5): gunicorn, the real model, flat PNGs that weigh nothing on the wire.

The same burst with an unbounded budget is the control: it must go over, or the test could
not fail.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image, ImageDraw

from cutout.memory import MB, estimate
from tests.helpers import encode
from tests.live import LiveServer, proc_status, reset_peak
from tests.web.test_live import browser_session

SIZE = (5000, 4000)  # 20 MP, with its own alpha: the costliest kind measured
BURST = 3  # as many as may run at once (CUTOUT_MAX_CONCURRENT): 4 until stop 30
BUDGET_MB = 600  # one such removal fits (~420 MB estimated), two do not


def flat_rgba_png() -> bytes:
    image = Image.new("RGBA", SIZE, (200, 180, 160, 0))
    ImageDraw.Draw(image).ellipse((0, 0, *SIZE), fill=(90, 120, 200, 255))
    return encode(image, "PNG")


def burst(tmp_path: Path, budget_mb: int) -> tuple[list[int], int, int]:
    """Upload BURST images at once; statuses, the worker's RSS before and its peak growth."""
    env = {
        "CUTOUT_MEMORY_BUDGET_MB": str(budget_mb),
        "CUTOUT_MAX_CONCURRENT": "3",  # the whole burst could run at once but for the budget
        "CUTOUT_MAX_QUEUE": "8",
        "CUTOUT_QUEUE_TIMEOUT": "300",
        "USER_LIMIT": "20",
    }
    data = flat_rgba_png()
    with LiveServer(tmp_path / f"data-{budget_mb}", env) as server:
        session, token = browser_session(server.url)

        def upload(name: str, payload: bytes) -> int:
            return session.post(
                server.url + "/",
                headers={"Accept": "application/json"},
                data={"name": name, "csrf_token": token},
                files={"image": ("flat.png", payload, "image/png")},
                timeout=600,
            ).status_code

        assert upload("warm-up", encode(Image.new("RGB", (640, 480)), "JPEG")) == 201
        (worker,) = server.workers()
        before = proc_status(worker, "VmRSS")
        reset_peak(worker)
        with ThreadPoolExecutor(BURST) as pool:
            statuses = list(pool.map(upload, [f"big {i}" for i in range(BURST)], [data] * BURST))
        growth = proc_status(worker, "VmHWM") - before
        requests.get(server.url + "/health", timeout=10)
    return statuses, before, growth


def test_a_burst_of_large_images_stays_within_the_memory_budget(tmp_path: Path) -> None:
    assert 2 * estimate(*SIZE) > BUDGET_MB * MB > estimate(*SIZE)
    statuses, _, growth = burst(tmp_path, BUDGET_MB)
    assert statuses == [201] * BURST  # all done, one after the other: none refused
    assert growth <= BUDGET_MB * MB, f"peak growth {growth / MB:.0f} MB over {BUDGET_MB} MB"

    _, _, unbounded = burst(tmp_path, 100_000)  # the control: the same burst, no budget
    assert unbounded > BUDGET_MB * MB, f"the control only grew {unbounded / MB:.0f} MB"
