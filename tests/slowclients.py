"""Slow clients (slowloris) against a live server, and how fast ``/health`` answers meanwhile."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

import requests


class SlowClients:
    """*headers* connections sending one header line every *interval* seconds, and *bodies*
    connections declaring a 1 MB body and sending one byte of it every *interval* seconds."""

    def __init__(
        self, host: str, port: int, *, headers: int, bodies: int, interval: float = 2.0
    ) -> None:
        self.address = (host, port)
        self.counts = (headers, bodies)
        self.interval = interval
        self.socks: list[tuple[socket.socket, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.closed = 0  # connections the server closed on them

    def __enter__(self) -> SlowClients:
        headers, bodies = self.counts
        for i in range(headers):
            sock = socket.create_connection(self.address, timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\n")
            self.socks.append((sock, f"X-Slow-{i}: a\r\n".encode()))
        for _ in range(bodies):
            sock = socket.create_connection(self.address, timeout=5)
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: slow\r\nAccept: application/json\r\n"
                b"Content-Type: multipart/form-data; boundary=x\r\n"
                b"Content-Length: 1048576\r\n\r\n"
            )
            self.socks.append((sock, b"x"))
        self.thread.start()
        return self

    def _drip(self) -> None:
        while not self.stop.wait(self.interval):
            for sock, piece in self.socks:
                try:
                    sock.sendall(piece)
                except OSError:
                    self.closed += 1

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop.set()
        self.thread.join()
        for sock, _ in self.socks:
            with contextlib.suppress(OSError):
                sock.close()


def health_latencies(url: str, count: int, pause: float = 0.02) -> list[float]:
    """Seconds each of *count* ``GET /health`` took (new connection each; 30 s at most)."""
    took = []
    for _ in range(count):
        started = time.monotonic()
        try:
            requests.get(url + "/health", timeout=30).raise_for_status()
        except requests.RequestException:
            took.append(30.0)
        else:
            took.append(time.monotonic() - started)
        time.sleep(pause)
    return took


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
