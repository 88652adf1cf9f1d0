"""Slow clients and slow servers against ``cutout serve`` as shipped: the threads stay free.

Slowloris (headers or a body dripped a byte at a time) held every gunicorn thread; so did URL
downloads from a server that never answers. Each test measures ``/health`` while the attack
runs, and a control run of plain gthread shows the attack is real (so the test can fail).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.live import LiveServer
from tests.slowclients import SlowClients, health_latencies, p99
from tests.test_urlfetch import SilentServer
from tests.web.test_live import browser_session

HEADER_TIMEOUT = 8  # long enough to measure while the slow clients are connected
BODY_TIMEOUT = 9


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "CUTOUT_CLIENT_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "CUTOUT_CLIENT_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "CUTOUT_CLIENT_BUFFER_MB": "64",
        "CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32",
        "CUTOUT_URL_TIMEOUT": "3",
        "CUTOUT_URL_DOWNLOADS_PER_CLIENT": "10",  # one address here: show the process's cap
    }
    with LiveServer(tmp_path_factory.mktemp("slow") / "data", env) as running:
        yield running


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_responses_do_not_name_the_server(server: LiveServer) -> None:
    for path in ("/health", "/", "/no-such-page"):
        response = requests.get(server.url + path, timeout=10)
        assert "Server" not in response.headers, path
        assert response.headers.get("Permissions-Policy"), path


def test_fifty_slow_headers_and_fifty_slow_bodies_leave_health_fast(server: LiveServer) -> None:
    with SlowClients("127.0.0.1", server.port, headers=50, bodies=50) as slow:
        time.sleep(2.5)  # each has dripped at least once
        took = health_latencies(server.url, 150)
        assert slow.closed == 0  # they were all still connected while /health was measured
        print(f"/health with 100 slow clients: p99 {p99(took) * 1000:.1f} ms, max "
              f"{max(took) * 1000:.1f} ms")  # fmt: skip
        assert p99(took) < 0.2
        # and each gets a 408 when its time is up, not a thread
        header_sock, _ = slow.socks[0]
        body_sock, _ = slow.socks[-1]
        header_sock.settimeout(HEADER_TIMEOUT + 5)
        body_sock.settimeout(BODY_TIMEOUT + 5)
        assert answer(header_sock).startswith(b"HTTP/1.1 408")
        assert answer(body_sock).startswith(b"HTTP/1.1 408")


def test_a_refused_body_gets_its_answer_while_the_client_keeps_sending(
    server: LiveServer,
) -> None:
    """The 413 comes from the headers, before the body is read. Closing then, with the
    client's bytes unread, reset the connection: the client's upload broke with EPIPE, and a
    reset can destroy the 413 before it is read. The server now half-closes and drains."""
    for attempt in range(3):
        sock = connect(server)
        sock.sendall(
            b"PUT /update/abc HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        for _ in range(128):  # 8 MB at loopback speed, as an uploading client would
            sock.sendall(b"x" * 65536)  # EPIPE / ECONNRESET here was the fault
        assert answer(sock).startswith(b"HTTP/1.1 413"), attempt
        sock.close()


def test_clients_that_ask_to_close_and_then_hang_do_not_stall_the_others(
    server: LiveServer,
) -> None:
    """gunicorn closes after a ``Connection: close`` response by draining the socket in the
    event loop's own thread, for up to 2 s: ten clients that asked for it and then neither
    read nor closed held every other connection for 16 s. The drain is on the poller now."""
    hanging = []
    for _ in range(10):
        sock = connect(server)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        hanging.append(sock)  # never read, never closed
    time.sleep(0.2)
    took = health_latencies(server.url, 20)
    print(f"/health with 10 hanging Connection: close clients: max {max(took) * 1000:.1f} ms")
    assert max(took) < 0.5, took
    for sock in hanging:
        sock.close()


def test_plain_gthread_is_starved_by_the_same_clients(tmp_path: Path) -> None:
    """The control: without the buffering worker, twenty slow headers hold every thread."""
    env = {"GUNICORN_CMD_ARGS": "--worker-class gthread", "CUTOUT_LOG_LEVEL": "INFO"}
    with LiveServer(tmp_path / "data", env) as plain:
        with (
            SlowClients("127.0.0.1", plain.port, headers=20, bodies=0),
            pytest.raises(requests.Timeout),
        ):
            time.sleep(1)
            requests.get(plain.url + "/health", timeout=3)
        assert "Using worker: gthread" in plain.log.read_text()


def test_framing_of_what_reaches_the_threads(server: LiveServer) -> None:
    # two requests in one packet (pipelining): both answered, in order
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /ready HTTP/1.1\r\nHost: a\r\n"
                     b"Connection: close\r\n\r\n")  # fmt: skip
        both = answer(sock)
    assert both.count(b"HTTP/1.1 200") == 2 and both.index(b"Healthy") < both.index(b"Ready")
    # a body over its endpoint's limit is refused from its length, before it is sent
    with connect(server) as sock:
        sock.sendall(b"PUT /update/abc HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 5000000\r\n\r\n")  # fmt: skip
        refused = answer(sock)
    assert refused.startswith(b"HTTP/1.1 413") and b"body_too_large" in refused
    # chunked: cut off at the limit
    with connect(server) as sock:
        sock.sendall(b"PUT /update/abc HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"8000\r\n" + b"x" * 0x8000 + b"\r\n")
        assert answer(sock).startswith(b"HTTP/1.1 413")
    # Expect: 100-continue is answered before the body is sent, once
    with connect(server) as sock:
        sock.sendall(b"POST /health HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")  # fmt: skip
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abcd")
        rest = answer(sock)
    assert rest.startswith(b"HTTP/1.1 405") and b"100 Continue" not in rest


def test_the_bytes_being_received_are_capped(server: LiveServer) -> None:
    """Reserved from the declared length: 64 MB per process here, so 70 MB waits for none."""
    with connect(server) as first, connect(server) as second:
        for sock in (first, second):
            sock.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; "
                         b"boundary=x\r\nContent-Length: 25000000\r\n\r\n")  # fmt: skip
        time.sleep(0.3)
        with connect(server) as third:
            third.sendall(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Type: multipart/form-data; "
                          b"boundary=x\r\nContent-Length: 20000000\r\n\r\n")  # fmt: skip
            refused = answer(third)
    assert refused.startswith(b"HTTP/1.1 503") and b"Retry-After: " in refused


def test_downloads_from_a_server_that_never_answers_leave_health_fast(
    server: LiveServer,
) -> None:
    session, token = browser_session(server.url)

    def from_url(i: int) -> tuple[int, float, str | None]:
        started = time.monotonic()
        response = session.post(
            server.url + "/from-url",
            json={"url": f"{silent.url}/{i}.png"},
            headers={"X-CSRFToken": token},
            timeout=30,
        )
        return response.status_code, time.monotonic() - started, response.headers.get("Retry-After")

    with SilentServer() as silent, ThreadPoolExecutor(10) as pool:
        started = time.monotonic()
        outcomes = list(pool.map(from_url, range(10)))
    assert time.monotonic() - started < 3 + 3  # CUTOUT_URL_TIMEOUT, and a margin
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses == [400] * 4 + [503] * 6, outcomes  # 4 downloads at most per process
    assert all(took < 1 for status, took, _ in outcomes if status == 503)
    assert all(after for status, _, after in outcomes if status == 503)
    assert all(3 - 0.5 < took < 3 + 3 for status, took, _ in outcomes if status == 400)

    # /health while downloads hang
    with SilentServer() as silent, ThreadPoolExecutor(10) as pool:
        running = [pool.submit(from_url, i) for i in range(10)]
        time.sleep(0.3)
        took = health_latencies(server.url, 60, pause=0.01)
        for future in running:
            future.result()
    print(f"/health with 10 hanging URL downloads: p99 {p99(took) * 1000:.1f} ms")
    assert p99(took) < 0.2
