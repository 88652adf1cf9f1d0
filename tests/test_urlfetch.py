"""The SSRF-safe URL fetcher, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cutout.errors import DownloadFailed, DownloadsBusy, ImageTooLarge, InvalidUrl, TooManyDownloads
from cutout.urlfetch import GATE, FetchPolicy, _allowed, fetch, parse_networks
from tests.helpers import LocalServer

LOOPBACK = parse_networks("127.0.0.1/32")
ALLOW_LOOPBACK = FetchPolicy(max_bytes=1024, timeout=5, allowed_networks=LOOPBACK)


def ok(body: bytes, content_type: str = "image/png") -> Any:
    return lambda handler, _body: (200, {"Content-Type": content_type}, body)


def redirect(location: str) -> Any:
    return lambda handler, _body: (302, {"Location": location}, b"")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer({}) as running:
        yield running


def test_fetches_from_an_allowed_network(server: LocalServer) -> None:
    server.routes[("GET", "/a.png")] = ok(b"PNGDATA")

    got = fetch(f"{server.url}/a.png?x=1", ALLOW_LOOPBACK)

    assert got.data == b"PNGDATA" and got.content_type == "image/png"
    assert server.requests[0].path == "/a.png?x=1"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[fd00:ec2::254]",  # AWS metadata over IPv6
        "[fe80::1]",
    ],
)
def test_private_and_reserved_addresses_are_refused_by_default(host: str) -> None:
    policy = FetchPolicy(max_bytes=1024)
    with pytest.raises(InvalidUrl, match="private or reserved address"):
        fetch(f"http://{host}:8080/x.png", policy)


#: IPv6 forms that carry a private IPv4 address, which Python calls global.
EMBEDDING_PRIVATE_IPV4 = [
    "64:ff9b::10.0.0.1",  # NAT64, well-known prefix
    "64:ff9b::7f00:1",  # NAT64 to 127.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64 to 169.254.169.254
    "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "::10.0.0.1",  # IPv4-compatible (deprecated)
    "::127.0.0.1",
    "2600::5efe:10.0.0.1",  # ISATAP interface id
    "2600::200:5efe:192.168.0.1",
]


@pytest.mark.parametrize("address", EMBEDDING_PRIVATE_IPV4)
def test_ipv6_addresses_carrying_a_private_ipv4_address_are_refused(address: str) -> None:
    with pytest.raises(InvalidUrl, match="private or reserved address"):
        fetch(f"http://[{address}]:8080/x.png", FetchPolicy(max_bytes=1024))

    def resolve(host: str, port: int) -> list[str]:
        return [address]

    with pytest.raises(InvalidUrl, match="private or reserved address"):
        fetch("http://images.example/x.png", FetchPolicy(max_bytes=10), resolve=resolve)


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"])
def test_ipv6_forms_of_a_public_ipv4_address_pass_the_check(address: str) -> None:
    assert _allowed(ipaddress.ip_address(address), ())


def test_an_allowed_network_lets_its_embedded_form_through() -> None:
    allowed = parse_networks("10.0.0.0/8")
    assert _allowed(ipaddress.ip_address("64:ff9b::10.0.0.1"), allowed)
    assert not _allowed(ipaddress.ip_address("64:ff9b::192.168.0.1"), allowed)


def test_a_host_name_that_resolves_to_a_private_address_is_refused() -> None:
    def resolve(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one bad address spoils the host

    with pytest.raises(InvalidUrl, match=r"private or reserved address \(images\.example\)"):
        fetch("https://images.example/x.png", FetchPolicy(max_bytes=10), resolve=resolve)


def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    server: LocalServer,
) -> None:
    """No second DNS lookup (rebinding): we connect to what was checked, sending the name."""
    server.routes[("GET", "/x.png")] = ok(b"ok")
    port = server.url.rsplit(":", 1)[1]
    lookups: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    got = fetch(f"http://images.example:{port}/x.png", ALLOW_LOOPBACK, resolve=resolve)

    assert got.data == b"ok" and lookups == ["images.example"]
    assert server.requests[0].headers["Host"] == f"images.example:{port}"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "must start with http"),
        ("ftp://example.com/a.png", "must start with http"),
        ("gopher://example.com/", "must start with http"),
        ("http:///nohost", "no host name"),
        ("http://user:secret@example.com/a.png", "user name or password"),
        ("http://example.com:99999/a.png", "not a valid URL"),
        ("not a url", "must start with http"),
    ],
)
def test_unacceptable_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidUrl, match=message):
        fetch(url, FetchPolicy(max_bytes=10))


def test_redirects_are_followed_and_each_hop_is_checked(server: LocalServer) -> None:
    server.routes[("GET", "/start")] = redirect("/final.png")
    server.routes[("GET", "/final.png")] = ok(b"final")
    assert fetch(f"{server.url}/start", ALLOW_LOOPBACK).data == b"final"

    port = server.url.rsplit(":", 1)[1]
    server.routes[("GET", "/sneaky")] = redirect(f"http://127.0.0.2:{port}/final.png")
    with pytest.raises(InvalidUrl, match="private or reserved"):
        fetch(f"{server.url}/sneaky", ALLOW_LOOPBACK)
    server.routes[("GET", "/metadata")] = redirect("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(InvalidUrl, match="private or reserved"):
        fetch(f"{server.url}/metadata", ALLOW_LOOPBACK)


def test_too_many_redirects(server: LocalServer) -> None:
    server.routes[("GET", "/loop")] = redirect("/loop")
    with pytest.raises(DownloadFailed, match="more than 5 redirects"):
        fetch(f"{server.url}/loop", ALLOW_LOOPBACK)


def test_http_errors_say_the_status_but_not_the_query(server: LocalServer) -> None:
    with pytest.raises(DownloadFailed, match=r"/missing\.png answered HTTP 404\.$") as info:
        fetch(f"{server.url}/missing.png?token=s3cret", ALLOW_LOOPBACK)
    assert "s3cret" not in str(info.value)


def test_a_declared_length_over_the_limit_is_refused_before_reading(server: LocalServer) -> None:
    server.routes[("GET", "/big.png")] = ok(b"x" * 2048)
    with pytest.raises(ImageTooLarge, match="larger than"):
        fetch(f"{server.url}/big.png", ALLOW_LOOPBACK)


class RawServer:
    """Answers every connection with *payload* written in pieces, *pause* seconds apart."""

    def __init__(self, pieces: list[bytes], pause: float = 0.0) -> None:
        self.pieces, self.pause = pieces, pause
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    for piece in self.pieces:
                        conn.sendall(piece)
                        time.sleep(self.pause)
                except OSError:
                    pass

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_an_undeclared_length_is_counted_while_streaming() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n"
    with RawServer([head] + [b"y" * 512] * 4) as raw, pytest.raises(ImageTooLarge):
        fetch(raw.url + "/stream.png", ALLOW_LOOPBACK)


def test_a_slow_drip_hits_the_deadline() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n"
    policy = FetchPolicy(max_bytes=10_000, timeout=1.0, allowed_networks=LOOPBACK)
    started = time.monotonic()
    with RawServer([head] + [b"z"] * 1000, pause=0.05) as raw, pytest.raises(DownloadFailed):
        fetch(raw.url + "/slow.png", policy)
    assert time.monotonic() - started < 3


def test_a_refused_connection_is_a_download_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    with pytest.raises(DownloadFailed, match="connection failed"):
        fetch(f"http://127.0.0.1:{port}/a.png", ALLOW_LOOPBACK)


def test_an_unresolvable_host_is_a_download_failure() -> None:
    def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror("no such host")

    with pytest.raises(DownloadFailed, match=r"cannot resolve nowhere\.example"):
        fetch("http://nowhere.example/a.png", FetchPolicy(max_bytes=10), resolve=resolve)


def test_parse_networks() -> None:
    assert parse_networks(" 127.0.0.1/32, 10.0.0.0/8 ,") == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert parse_networks("") == ()
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


class SilentServer:
    """Accepts connections and never answers; with *drip*, sends one header byte every
    *drip* seconds and never ends the headers."""

    def __init__(self, drip: float | None = None) -> None:
        self.drip = drip
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            if self.drip is not None:
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                conn.sendall(b"X")
                time.sleep(self.drip or 0)
        except OSError:
            return

    def __enter__(self) -> SilentServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("drip", [None, 0.2], ids=["never-answers", "drips-headers"])
def test_the_deadline_covers_the_whole_download(drip: float | None) -> None:
    """A socket timeout restarts with every byte: a server dripping its headers held a
    thread for as long as it liked. The deadline is the whole download's."""
    policy = FetchPolicy(max_bytes=10_000, timeout=1.0, allowed_networks=LOOPBACK)
    with SilentServer(drip) as silent:
        started = time.monotonic()
        with pytest.raises(DownloadFailed, match="took too long"):
            fetch(silent.url + "/a.png", policy)
        assert time.monotonic() - started < 1.5


def test_downloads_beyond_the_caps_are_refused_at_once() -> None:
    policy = FetchPolicy(
        max_bytes=10_000, timeout=2.0, allowed_networks=LOOPBACK, concurrency=3, per_client=2
    )
    outcomes: dict[str, str] = {}

    def run(name: str, client: str) -> None:
        try:
            fetch(silent.url + "/a.png", policy, client=client)
        except Exception as exc:
            outcomes[name] = type(exc).__name__

    with SilentServer() as silent:
        running = [
            threading.Thread(target=run, args=(name, client))
            for name, client in (("a1", "key:a"), ("a2", "key:a"), ("b1", "key:b"))
        ]
        for thread in running:
            thread.start()
        time.sleep(0.3)  # the three hold their slots, waiting on the silent server
        started = time.monotonic()
        with pytest.raises(TooManyDownloads) as too_many:
            fetch(silent.url + "/a.png", policy, client="key:a")
        with pytest.raises(DownloadsBusy) as busy:
            fetch(silent.url + "/a.png", policy, client="key:c")
        refused_in = time.monotonic() - started
        for thread in running:
            thread.join()
    assert refused_in < 0.1
    assert too_many.value.retry_after > 0 and busy.value.retry_after > 0
    assert outcomes == {"a1": "DownloadFailed", "a2": "DownloadFailed", "b1": "DownloadFailed"}
    assert GATE.running == 0  # every slot given back
