"""Measure what one removal costs in memory, by pixel count, and fit the admission estimate.

`python scripts/measure_memory.py` (needs the model and CUTOUT_TESTDATA). For each size and
kind of input, a fresh process loads the engine, runs one warm-up removal (so the model's own
buffers and thread pools already exist, as in a server that has served a request), loads the
upload's bytes, then resets its peak-RSS mark (``/proc/self/clear_refs``) and runs exactly what
``ImageService`` does for an upload: decode, model, refine, compose and encode the PNG, and
re-encode the original when browsers cannot show it. The peak RSS growth (``VmHWM`` minus the
RSS before) is the cost of that removal. Processes run with ``MALLOC_ARENA_MAX=2``, as the
server does.

Then the same inputs go through the real server (``cutout serve``, gunicorn, one worker): the
worker's peak-RSS mark is reset before each upload (``POST /``) and read after it, so the
request's own buffers (the multipart body, the upload's bytes, the stored files) count too.

Last, a *burst*: three uploads at once, for the costliest kinds at the larger sizes, into a
fresh server whose budget admits one at a time; the worker's peak growth over its idle RSS.
Removals that follow each other on different threads do not reuse each other's freed memory
perfectly (glibc keeps it per arena), so this is the figure the budget must really bound.

Then it fits ``cost = FIXED + PER_PIXEL * pixels`` to the costliest measurement at each size
(least squares), raises FIXED until every measurement lies under the line, and prints the
constants for ``cutout/memory.py``. Re-run it whenever the pipeline changes (another model, a new
refinement): the admission control is only as good as these two numbers.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image, ImageDraw

from cutout.memory import estimate

MEGAPIXELS = [float(x) for x in os.environ.get("MEASURE_MP", "1,6,12,24,36,49").split(",")]
BURST_MEGAPIXELS = [float(x) for x in os.environ.get("MEASURE_BURST_MP", "12,24,49").split(",")]
KINDS = ("jpeg-photo", "png-flat", "png-flat-rgba")
BURST_KINDS = ("jpeg-photo", "png-flat-rgba")
BURST = 3

CHILD = r"""
import gc, json, sys
from pathlib import Path
from PIL import Image
from cutout.config import Settings
from cutout.engine import local_engine
from cutout.imaging.compose import OutputOptions
from cutout.imaging.decode import Limits
from cutout.pipeline import remove_background
from cutout.service import _original

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

settings = Settings.from_env()
engine = local_engine(settings)
limits = Limits(max_bytes=10**10, max_pixels=10**10)
options = OutputOptions(png_compression=settings.png_compression)
warm = Path(sys.argv[2]).read_bytes()
remove_background(warm, engine, limits=limits, options=options)
data = Path(sys.argv[1]).read_bytes()
gc.collect()
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
cutout = remove_background(data, engine, limits=limits, options=options)
_original(data, cutout.photo)
peak = status("VmHWM")
width, height = cutout.photo.size
print(json.dumps({"before": before, "peak": peak, "pixels": width * height}))
"""


def make_input(kind: str, megapixels: float, folder: Path, source: Image.Image) -> Path:
    scale = (megapixels * 1e6 / (source.width * source.height)) ** 0.5
    size = (round(source.width * scale), round(source.height * scale))
    path = folder / f"{kind}-{megapixels:g}.{'jpg' if kind.startswith('jpeg') else 'png'}"
    if kind == "jpeg-photo":
        source.resize(size, Image.Resampling.BICUBIC).save(path, "JPEG", quality=92)
    elif kind == "png-flat":  # fault 5's input: tiny on disk, huge in memory
        Image.new("RGB", size, (200, 180, 160)).save(path, "PNG")
    else:  # its own alpha: the decoder keeps a channel more, the pipeline honours it
        image = Image.new("RGBA", size, (200, 180, 160, 0))
        ImageDraw.Draw(image).ellipse((0, 0, *size), fill=(90, 120, 200, 255))
        image.save(path, "PNG")
    return path


def measure(path: Path, warm: Path) -> dict[str, int]:
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(warm)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=600,
    )
    measured: dict[str, int] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def rss_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


class Server:
    """``cutout serve`` with one worker and no memory budget to speak of, on a free port."""

    def __init__(self, data_dir: Path, budget_mb: float = 100_000) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "CUTOUT_ENV": "development",
            "CUTOUT_DATA_DIR": str(data_dir),
            "CUTOUT_PORT": str(self.port),
            "CUTOUT_LOG_LEVEL": "WARNING",
            "CUTOUT_MAX_UPLOAD_MB": "400",
            "CUTOUT_MEMORY_BUDGET_MB": str(budget_mb),
            "CUTOUT_MAX_QUEUE": "8",
            "CUTOUT_QUEUE_TIMEOUT": "600",
            "CUTOUT_METRICS_PORT": "0",
            "USER_LIMIT": "1000",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cutout", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(self.url + "/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        self.worker = children(self.process.pid)[0]
        self.session = requests.Session()
        page = self.session.get(self.url + "/").text
        match = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert match
        self.token = match.group(1)

    def upload(self, path: Path) -> dict[str, int]:
        """Upload *path*; the worker's RSS before and its peak during the request."""
        return self.burst(path, 1)

    def burst(self, path: Path, count: int) -> dict[str, int]:
        """Upload *path* *count* times at once; the worker's RSS before and its peak."""
        before = rss_status(self.worker, "VmRSS")
        Path(f"/proc/{self.worker}/clear_refs").write_text("5")
        with ThreadPoolExecutor(count) as pool:
            records = list(pool.map(lambda _: self._post(path), range(count)))
        peak = rss_status(self.worker, "VmHWM")
        for record in records:
            self.session.delete(
                f"{self.url}/remove/{record['_id']}",
                headers={"X-CSRFToken": self.token},
                timeout=60,
            )
        pixels = records[0]["original"]["width"] * records[0]["original"]["height"]
        return {"before": before, "peak": peak, "pixels": pixels}

    def _post(self, path: Path) -> dict[str, Any]:
        response = self.session.post(
            self.url + "/",
            headers={"Accept": "application/json"},
            data={"name": path.stem, "csrf_token": self.token},
            files={"image": (path.name, path.read_bytes())},
            timeout=900,
        )
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()
        return record


@contextmanager
def server(data_dir: Path, budget_mb: float = 100_000) -> Iterator[Server]:
    running = Server(data_dir, budget_mb)
    try:
        yield running
    finally:
        running.process.terminate()
        running.process.wait(30)


def fit(points: list[tuple[int, int]]) -> tuple[float, float]:
    """Least squares ``cost = a + b * pixels``, then ``a`` raised to bound every point."""
    pixels = np.array([p for p, _ in points], dtype=np.float64)
    costs = np.array([c for _, c in points], dtype=np.float64)
    b, a = np.polyfit(pixels, costs, 1)
    a += float(np.max(costs - (a + b * pixels)))
    return float(a), float(b)


def report(name: str, m: dict[str, int]) -> int:
    growth = m["peak"] - m["before"]
    print(
        f"{name:<30}{m['pixels']:>12,}{m['before'] / 2**20:>10.0f}MB"
        f"{growth / 2**20:>8.0f}MB{growth / m['pixels']:>8.1f}",
        flush=True,
    )
    return growth


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    with Image.open(testdata / "images" / "alphamatting_GT03.png") as photo:
        source = photo.convert("RGB")
    worst: dict[float, tuple[int, int]] = {}

    def keep(megapixels: float, pixels: int, growth: int) -> None:
        if growth > worst.get(megapixels, (0, 0))[1]:
            worst[megapixels] = (pixels, growth)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = folder / "warm.jpg"
        source.resize((320, 240)).save(warm, "JPEG")
        inputs = {
            (kind, mp): make_input(kind, mp, folder, source) for mp in MEGAPIXELS for kind in KINDS
        }
        print(f"{'input (pipeline alone)':<30}{'pixels':>12}{'RSS before':>12}{'growth':>10}"
              f"{'B/px':>8}")  # fmt: skip
        for (_, mp), path in inputs.items():
            m = measure(path, warm)
            keep(mp, m["pixels"], report(path.name, m))
        print(f"\n{'input (upload to the server)':<30}")
        with server(folder / "data") as running:
            running.upload(warm)  # the model's first run, and the user's cookie
            for (_, mp), path in inputs.items():
                m = running.upload(path)
                keep(mp, m["pixels"], report(path.name, m))
        print(f"\n{'burst of 3, one at a time':<30}")
        for mp in BURST_MEGAPIXELS:
            with Image.open(inputs[(BURST_KINDS[0], mp)]) as image:
                one = estimate(*image.size)
            with server(folder / f"burst-{mp:g}", budget_mb=1.5 * one / 2**20) as running:
                running.upload(warm)
                for kind in BURST_KINDS:
                    path = inputs[(kind, mp)]
                    m = running.burst(path, BURST)
                    keep(mp, m["pixels"], report(path.name, m))
    a, b = fit(list(worst.values()))
    print(f"\nfit on the costliest measurement per size: cost = {a / 2**20:.0f} MB + {b:.2f} B/px")
    print("for src/cutout/memory.py:")
    print(f"FIXED_BYTES = {int(np.ceil(a / 2**20))} * MB")
    print(f"BYTES_PER_PIXEL = {np.ceil(b * 10) / 10:.1f}")


if __name__ == "__main__":
    main()
