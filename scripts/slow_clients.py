"""Measure /health while slow clients and hanging URL downloads are open, on a live server.

    python scripts/slow_clients.py                          # this checkout's `cutout serve`
    python scripts/slow_clients.py --python OTHER/bin/python  # another checkout's (before/after)
    python scripts/slow_clients.py --worker gthread          # plain gthread, for comparison

Prints the p50/p99/max of /health (new connection each, 10 s timeout: a probe that gets no
answer counts 10 s) with 50 slow-header and 50 slow-body connections open, then with 10
`POST /from-url` downloads from a server that never answers.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.live import LiveServer
from tests.slowclients import SlowClients, p99
from tests.test_urlfetch import SilentServer
from tests.web.test_live import browser_session


def latencies(url: str, count: int) -> list[float]:
    import requests

    took = []
    for _ in range(count):
        started = time.monotonic()
        try:
            requests.get(url + "/health", timeout=10).raise_for_status()
            took.append(time.monotonic() - started)
        except requests.RequestException:
            took.append(10.0)
        time.sleep(0.02)
    return took


def show(name: str, took: list[float]) -> None:
    ordered = sorted(took)
    p50, worst = ordered[len(ordered) // 2], ordered[-1]
    print(f"{name}: /health p50 {p50 * 1000:.1f} ms, p99 {p99(took) * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms ({len(took)} probes)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--worker", help="gunicorn worker class to force (e.g. gthread)")
    parser.add_argument("--probes", type=int, default=40)
    args = parser.parse_args()
    env = {"CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32", "CUTOUT_URL_DOWNLOADS_PER_CLIENT": "10"}
    if args.worker:
        env["GUNICORN_CMD_ARGS"] = f"--worker-class {args.worker}"
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"CPU: {cpu}; server: {args.python} {args.worker or '(configured worker)'}")
    with tempfile.TemporaryDirectory() as folder:
        server = LiveServer(Path(folder) / "data", env, [args.python, "-m", "cutout", "serve"])
        with server:
            show("idle", latencies(server.url, args.probes))
            with SlowClients("127.0.0.1", server.port, headers=50, bodies=50):
                time.sleep(2.5)
                show("50 slow headers + 50 slow bodies", latencies(server.url, args.probes))
        server = LiveServer(Path(folder) / "data2", env, [args.python, "-m", "cutout", "serve"])
        with server, SilentServer() as silent, ThreadPoolExecutor(10) as pool:
            session, token = browser_session(server.url)

            def from_url(i: int) -> tuple[int, float]:
                started = time.monotonic()
                response = session.post(
                    server.url + "/from-url",
                    json={"url": f"{silent.url}/{i}.png"},
                    headers={"X-CSRFToken": token},
                    timeout=60,
                )
                return response.status_code, time.monotonic() - started

            running = [pool.submit(from_url, i) for i in range(10)]
            time.sleep(0.3)
            show("10 hanging URL downloads", latencies(server.url, args.probes))
            outcomes = sorted(f.result() for f in running)
            print("  downloads (status, seconds):", [(s, round(t, 1)) for s, t in outcomes])


if __name__ == "__main__":
    main()
