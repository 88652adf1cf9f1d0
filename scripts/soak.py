"""`make soak`: N upload/delete cycles against a live server, and the RSS curve of its tree.

Starts ``cutout serve`` (gunicorn, the real model, SQLite in a temporary folder, the image's
settings: MALLOC_ARENA_MAX=2, one worker, 8 threads), then runs SOAK_CYCLES cycles (default
300) of: upload a real test photo (the ten COCO photos in turn, as JSON), download the cut-out,
delete the record. After every cycle it samples the resident memory of the whole process tree
(the gunicorn master and its workers) from /proc, and prints the curve every SOAK_EVERY cycles
(default 10), then a summary: first, lowest, highest and last figure, and the slope of a line
fitted over the second half (a leak shows as a steady slope once the allocator has warmed up).

Exit status 1 if any request failed or a file was left behind; memory is reported, not judged.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

CYCLES = int(os.environ.get("SOAK_CYCLES", "300"))
EVERY = int(os.environ.get("SOAK_EVERY", "10"))
MB = 1024 * 1024


def tree_rss(pid: int) -> int:
    """Resident memory of *pid* and all its descendants, bytes."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        total += int(match.group(1)) * 1024 if match else 0
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CUTOUT_ENV": "development",
        "CUTOUT_DATA_DIR": str(data_dir),
        "CUTOUT_PORT": str(port),
        "CUTOUT_LOG_LEVEL": "WARNING",
        "CUTOUT_METRICS_PORT": "0",
        "USER_LIMIT": "10",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cutout", "serve"], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/ready", timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the server did not become ready:\n{log.read_text()}")


def cycle(session: requests.Session, url: str, token: str, photo: Path, n: int) -> None:
    upload = session.post(
        url + "/",
        headers={"Accept": "application/json"},
        data={"name": f"soak {n}", "csrf_token": token},
        files={"image": (photo.name, photo.read_bytes())},
        timeout=300,
    )
    if upload.status_code != 201:
        raise SystemExit(f"cycle {n}: upload answered {upload.status_code}: {upload.text}")
    record = upload.json()
    if session.get(url + record["processed_url"], timeout=60).status_code != 200:
        raise SystemExit(f"cycle {n}: the cut-out could not be read")
    gone = session.delete(
        f"{url}/remove/{record['_id']}", headers={"X-CSRFToken": token}, timeout=60
    )
    if gone.status_code != 200:
        raise SystemExit(f"cycle {n}: delete answered {gone.status_code}")


def main() -> None:
    testdata = Path(os.environ.get("CUTOUT_TESTDATA", "../shared/testdata"))
    photos = sorted((testdata / "images").glob("coco_*.jpg"))
    if not photos:
        raise SystemExit(f"no test photos in {testdata}/images; set CUTOUT_TESTDATA")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        process = start(data_dir, port, Path(tmp) / "server.log")
        url = f"http://127.0.0.1:{port}"
        try:
            session = requests.Session()
            match = re.search(r'name="csrf-token" content="([^"]+)"', session.get(url + "/").text)
            assert match
            token = match.group(1)
            idle = tree_rss(process.pid)
            print(f"server ready: process tree {idle / MB:.0f} MB; {CYCLES} cycles", flush=True)
            print(f"{'cycle':>6} {'RSS MB':>8} {'s/cycle':>8}")
            samples: list[int] = []
            started = last = time.monotonic()
            for n in range(1, CYCLES + 1):
                cycle(session, url, token, photos[n % len(photos)], n)
                samples.append(tree_rss(process.pid))
                if n % EVERY == 0 or n == CYCLES:
                    now = time.monotonic()
                    print(
                        f"{n:>6} {samples[-1] / MB:>8.0f} {(now - last) / EVERY:>8.2f}", flush=True
                    )
                    last = now
            elapsed = time.monotonic() - started
            left = sorted(p.name for p in (data_dir / "images").iterdir())
        finally:
            process.terminate()
            process.wait(30)
    summarize(idle, samples, elapsed)
    if left:
        raise SystemExit(f"files left behind after deleting every record: {left}")


def summarize(idle: int, samples: list[int], elapsed: float) -> None:
    mb = np.array(samples, dtype=np.float64) / MB
    half = len(mb) // 2
    slope = np.polyfit(np.arange(half, len(mb)), mb[half:], 1)[0] * 100 if half > 1 else 0.0
    print(
        f"\nidle {idle / MB:.0f} MB; after cycle 1 {mb[0]:.0f} MB; lowest {mb.min():.0f} MB; "
        f"highest {mb.max():.0f} MB; last {mb[-1]:.0f} MB"
    )
    print(f"second half: {slope:+.1f} MB per 100 cycles; {len(mb)} cycles in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
