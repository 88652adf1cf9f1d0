"""Batch-job throughput: N photos (0.3-2 MP) as one job on `cutout worker` and Redis, against
`cutout remove` on the same folder, in the same run; the web's /health p99 while the job runs,
and the workers' peak memory.

Run by ``make bench`` (``BENCH_JOB_PHOTOS``, default 200). The photos are the CC0 test photos
(``python -m tests.photos``) at random sizes, each marked so none is deduplicated. Each worker
setup runs two forward passes at once, one core each (``SETUPS``: two worker processes, or one
with two OpenVINO streams); the CLI runs its defaults: two
photos in flight, and from 8 photos on a one-thread pass per core (on CPUs without AMX).
Both pay their model load outside the timed part (a warm-up job, a warm-up photo).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

PHOTOS = Path(os.environ.get("CUTOUT_TEST_PHOTOS") or Path.home() / ".cache/cutout/test-photos")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def make_photos(folder: Path, n: int) -> None:
    rng = np.random.default_rng(14)
    sources = [Image.open(p).convert("RGB") for p in sorted(PHOTOS.glob("*.*")) if p.is_file()]
    folder.mkdir(parents=True)
    for i in range(n):
        source = sources[i % len(sources)]
        pixels = rng.uniform(0.3e6, 2.0e6)
        scale = (pixels / (source.width * source.height)) ** 0.5
        size = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
        image = source.resize(size)
        image.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
        image.save(folder / f"p{i:04d}.jpg", "JPEG", quality=88)


def env_for(data: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "USER_"))}
    return {**keep, "CUTOUT_ENV": "development", "CUTOUT_DATA_DIR": str(data),
            "CUTOUT_LOG_LEVEL": "WARNING", "CUTOUT_METRICS_PORT": "0", "USER_LIMIT": "100000",
            **extra}  # fmt: skip


def local_run(folder: Path, out: Path) -> float:
    cutout = [sys.executable, "-m", "cutout", "remove", "-q"]
    warm = out.parent / "warm"
    warm.mkdir()
    subprocess.run([*cutout, next(folder.iterdir()), "-o", warm / "w.png"], check=True)
    started = time.perf_counter()
    subprocess.run([*cutout, str(folder), "-o", str(out)], check=True)
    return time.perf_counter() - started


#: The worker setups timed: name -> (processes, their settings). Each pair runs two forward
#: passes at once on one core each: two processes (two copies of the models), or one process
#: with two OpenVINO streams (one copy).
SETUPS: dict[str, tuple[int, dict[str, str]]] = {
    "2 workers": (2, {"CUTOUT_INFERENCE_THREADS": "1"}),
    "1 worker, 2 streams": (
        1,
        {
            "CUTOUT_INFERENCE_THREADS": "1",
            "CUTOUT_MAX_CONCURRENT": "2",
            "CUTOUT_WORKER_CONCURRENCY": "2",
        },
    ),
}


def job_run(
    folder: Path, work: Path, processes: int, settings: dict[str, str]
) -> tuple[float, list[float], int, int]:
    """The job's seconds, /health latencies while it ran, items done, and the workers' peak
    resident memory together (bytes)."""
    port, redis_port = free_port(), free_port()
    queue = f"redis://127.0.0.1:{redis_port}/0"
    data = work / "data"
    redis = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    env = env_for(data, CUTOUT_QUEUE_URL=queue, CUTOUT_PORT=str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "cutout", "serve"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker_env = {**env, **settings}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "cutout", "worker"],
            env=worker_env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,  # Celery's banner
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/ready")
        made = subprocess.run(
            [sys.executable, "-m", "cutout", "keys", "create", "bench"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        session = requests.Session()
        session.headers["X-Api-Key"] = made.stdout.strip().splitlines()[-1]
        photos = sorted(folder.iterdir())
        _job(session, url, photos[:2], "warm-up")  # both workers load their models
        started = time.perf_counter()
        latencies: list[float] = []
        stop = threading.Event()
        probe = threading.Thread(target=_probe, args=(url + "/health", latencies, stop))
        probe.start()
        body = _job(session, url, photos, "timed")
        elapsed = time.perf_counter() - started
        stop.set()
        probe.join()
        peak = sum(_peak_rss(w.pid) for w in workers)
        return elapsed, latencies, int(body["succeeded"]), peak
    finally:
        for process in [*workers, server]:
            os.killpg(process.pid, signal.SIGTERM)
        for process in [*workers, server]:
            process.wait(timeout=60)
        redis.terminate()
        redis.wait()


def _job(session: requests.Session, url: str, photos: list[Path], label: str) -> dict[str, Any]:
    handles = [p.open("rb") for p in photos]
    try:
        files = [
            ("images", (p.name, h, "image/jpeg")) for p, h in zip(photos, handles, strict=True)
        ]
        answer = session.post(url + "/api/v1/jobs", files=files, timeout=600)
    finally:
        for handle in handles:
            handle.close()
    answer.raise_for_status()
    job_url = url + answer.json()["links"]["self"]
    while True:
        body: dict[str, Any] = session.get(job_url, timeout=30).json()
        if body["status"] == "done":
            print(f"  {label} job: {body['succeeded']} done, {body['failed']} failed", flush=True)
            return body
        time.sleep(0.5)


def _probe(url: str, latencies: list[float], stop: threading.Event) -> None:
    """/health every 100 ms while the job runs (bounded by the job's own length)."""
    with requests.Session() as session:
        while not stop.is_set():
            started = time.perf_counter()
            session.get(url, timeout=10)
            latencies.append(time.perf_counter() - started)
            stop.wait(0.1)


def _peak_rss(pid: int) -> int:
    """VmHWM of *pid*: a worker runs its items in its own process (Celery's solo or threads
    pool), so this is all of its memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def main() -> None:
    n = int(os.environ.get("BENCH_JOB_PHOTOS", "200"))
    if shutil.which("redis-server") is None:
        sys.exit("bench_jobs needs redis-server (make test installs it)")
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        work = Path(tmp)
        folder = work / "photos"
        make_photos(folder, n)
        print(f"batch jobs: {n} photos, 0.3-2 MP; {cpu_name()}, {os.cpu_count()} cores", flush=True)
        local = local_run(folder, work / "local")
        print(f"  cutout remove (local): {local:.1f} s, {n / local:.2f} images/s", flush=True)
        for name, (processes, settings) in SETUPS.items():
            run = work / name.replace(" ", "-").replace(",", "")
            elapsed, latencies, done, peak = job_run(folder, run, processes, settings)
            print(f"  one job, {name} + Redis: {elapsed:.1f} s, {done / elapsed:.2f} images/s, "
                  f"workers' peak RSS {peak / 2**20:.0f} MiB")  # fmt: skip
            print(f"    throughput, job / local: {(done / elapsed) / (n / local):.2f}")
            if len(latencies) >= 2:
                p99 = statistics.quantiles(latencies, n=100)[98] * 1000
                print(f"    /health during the job: p99 {p99:.1f} ms over {len(latencies)} probes")


if __name__ == "__main__":
    main()
