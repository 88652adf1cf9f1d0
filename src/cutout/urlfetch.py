"""Download an image from a URL a client gave us, without letting the URL reach inside.

Used by every surface that takes a URL (the remove.bg-compatible ``image_url`` and
``bg_image_url``, the native API, the page's URL field). A server that fetches URLs for its
clients is a classic SSRF hole: ``http://169.254.169.254/`` (cloud metadata), ``http://localhost``
(admin ports), ``http://10.0.0.5`` (the cluster). So, for every hop, redirects included:

* only ``http`` and ``https``, no credentials in the URL;
* the host is resolved once and **every** address it resolves to must be public
  (``is_global``, not multicast), unless it lies in a network the operator allowed
  (``CUTOUT_URL_ALLOWED_NETWORKS``; tests allow ``127.0.0.1/32``);
* the connection goes to the address that was checked, not to a second lookup, so DNS
  rebinding cannot swap in a private address between the check and the connect (TLS still
  verifies the certificate against the host name);
* at most ``max_redirects`` redirects, each one checked like the first URL;
* a byte limit (``Content-Length`` first, then counted while streaming) and one deadline for
  the whole download, connect, redirects and every read included: a watchdog shuts the
  socket down when it passes, so a server that accepts and never answers, or drips one
  header byte per second, cannot hold a thread past it (a socket timeout alone restarts
  with every byte);
* few downloads at once: at most ``concurrency`` per process and ``per_client`` per key or
  client address (:data:`GATE`). Beyond, the request is refused at once (503 with
  Retry-After, or 429), never queued: eight downloads from a server that never answers once
  held every web thread, and ``/health`` with them.

Failures are :class:`~cutout.errors.InvalidUrl` (the URL itself is unacceptable),
:class:`~cutout.errors.DownloadFailed` (it could not be fetched),
:class:`~cutout.errors.ImageTooLarge`, :class:`~cutout.errors.DownloadsBusy` or
:class:`~cutout.errors.TooManyDownloads`.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi
import urllib3

from cutout import __version__
from cutout.errors import (
    DownloadFailed,
    DownloadsBusy,
    ImageTooLarge,
    InvalidUrl,
    TooManyDownloads,
)
from cutout.numbers import header_int

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024
TOO_LONG = "Could not download the image: it took too long."
#: Seconds a refused download suggests waiting (most downloads take well under that).
RETRY_AFTER = 2


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout: float = 10.0  # seconds for the whole download, redirects included
    max_redirects: int = 5
    allowed_networks: tuple[IPNetwork, ...] = ()
    concurrency: int = 4  # downloads at once in this process
    per_client: int = 2  # downloads at once per key or client address


@dataclass(frozen=True)
class Fetched:
    data: bytes
    url: str  # after redirects
    content_type: str | None


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``"127.0.0.1/32, 10.1.0.0/16"`` -> networks; raise ValueError on a malformed entry."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


class FetchGate:
    """How many downloads run at once, in all and per client; refuses, never waits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._clients: Counter[str] = Counter()

    @contextmanager
    def slot(self, client: str, policy: FetchPolicy) -> Iterator[None]:
        with self._lock:
            if client and self._clients[client] >= policy.per_client:
                raise TooManyDownloads(
                    f"Too many image downloads at once from you: at most {policy.per_client} "
                    "may run at the same time. Wait for one to finish.",
                    RETRY_AFTER,
                )
            if self._running >= policy.concurrency:
                raise DownloadsBusy(
                    "The server is busy downloading other images. Please try again in a moment.",
                    RETRY_AFTER,
                )
            self._running += 1
            self._clients[client] += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._clients[client] -= 1
                if self._clients[client] <= 0:
                    del self._clients[client]

    @property
    def running(self) -> int:
        return self._running


#: The process's downloads (the caps are per process, whichever app or thread asks).
GATE = FetchGate()


class _Watchdog:
    """Shuts down the download's sockets when its deadline passes, even mid-read."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shutdown(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)  # a blocked recv() returns at once


class _WatchedHTTP(urllib3.connection.HTTPConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.watch(self.sock)


class _WatchedHTTPS(urllib3.connection.HTTPSConnection):
    def __init__(self, *args: Any, watchdog: _Watchdog, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = watchdog

    def connect(self) -> None:
        super().connect()
        self._watchdog.watch(self.sock)


def fetch(
    url: str, policy: FetchPolicy, *, client: str = "", resolve: Resolver | None = None
) -> Fetched:
    """GET *url* under *policy*; follow checked redirects; return the body.

    *client* (a key or an address) is who asks, for the per-client cap.
    """
    with GATE.slot(client, policy):
        watchdog = _Watchdog(policy.timeout)
        try:
            fetched = _fetch(url, policy, resolve or _resolve, watchdog)
        except DownloadFailed:
            if watchdog.expired:  # whatever the socket said when it was shut down
                raise DownloadFailed(TOO_LONG) from None
            raise
        finally:
            watchdog.cancel()
        if watchdog.expired:  # a socket cut short can look like a complete, empty answer
            raise DownloadFailed(TOO_LONG)
        return fetched


def _fetch(url: str, policy: FetchPolicy, resolve: Resolver, watchdog: _Watchdog) -> Fetched:
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        target = _checked_url(url)
        address = _checked_address(target, policy, resolve)
        pool = _pool(target, address, deadline, watchdog)
        response = None
        try:
            response = _request(pool, target)
            if response.status in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if not 200 <= response.status < 300:
                raise DownloadFailed(
                    f"Could not download the image: {_shown(url)} answered HTTP {response.status}."
                )
            data = _read_body(response, policy.max_bytes, deadline)
            return Fetched(data, url, response.headers.get("Content-Type"))
        finally:  # one connection per hop, closed whatever happened
            if response is not None:
                response.close()
            pool.close()
    raise DownloadFailed(
        f"Could not download the image: more than {policy.max_redirects} redirects."
    )


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    policy: FetchPolicy,
    *,
    resolve: Resolver | None = None,
) -> int:
    """POST *body* to *url* (a job's webhook) under the same address checks as :func:`fetch`;
    no redirect is followed. Return the HTTP status. :raises InvalidUrl, DownloadFailed:"""
    target = _checked_url(url)
    address = _checked_address(target, policy, resolve or _resolve)
    watchdog = _Watchdog(policy.timeout)
    pool = _pool(target, address, time.monotonic() + policy.timeout, watchdog)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    sent = {
        "Host": target.netloc.rpartition("@")[2],
        "User-Agent": f"cutout/{__version__} (+webhook)",
        **headers,
    }
    try:
        response = pool.urlopen(
            "POST", path, body=body, headers=sent, redirect=False, retries=False
        )
        response.close()
        return int(response.status)
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadFailed(f"Could not reach {target.hostname}: {_reason(exc)}.") from None
    finally:
        watchdog.cancel()
        pool.close()


def _checked_url(url: str) -> SplitResult:
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidUrl("The image URL is not a valid URL.") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidUrl("The image URL must start with http:// or https://.")
    if not parts.hostname:
        raise InvalidUrl("The image URL has no host name.")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("The image URL must not contain a user name or password.")
    return parts


def _checked_address(target: SplitResult, policy: FetchPolicy, resolve: Resolver) -> str:
    """The address to connect to: every address of the host must be allowed, or none is used."""
    host = target.hostname or ""
    port = target.port or (443 if target.scheme.lower() == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
        except OSError:
            raise DownloadFailed(f"Could not download the image: cannot resolve {host}.") from None
    if not addresses:
        raise DownloadFailed(f"Could not download the image: {host} has no address.")
    for address in addresses:
        if not _allowed(address, policy.allowed_networks):
            raise InvalidUrl(
                f"The image URL points to a private or reserved address ({host}); only public "
                "addresses can be fetched."
            )
    return str(addresses[0])


def _allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """A public address (or one in an allowed network); an IPv6 address that carries an IPv4
    address is judged by that too, since a translator or tunnel may deliver it there."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
            return _allowed(address.ipv4_mapped, allowed)
        embedded = embedded_ipv4(address)
        if embedded and not all(_allowed(v4, allowed) for v4 in embedded):
            return False
        if address in LOCAL_NAT64 and not any(address in n for n in allowed):
            return False  # a translator's local prefix: the IPv4 inside is the site's own
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


#: NAT64's well-known prefix (RFC 6052) and the local-use one (RFC 8215), the 6to4 and Teredo
#: prefixes, and the deprecated IPv4-compatible form ::a.b.c.d: Python calls most of them
#: global whatever IPv4 address they carry, e.g. 64:ff9b::10.0.0.1 and ::127.0.0.1.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_ISATAP = 0x00005EFE  # interface id ::0:5efe:a.b.c.d (or ::200:5efe:..., the "u" bit set)


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """Every IPv4 address *address* carries by a transition mechanism (NAT64, 6to4, Teredo,
    ISATAP, IPv4-compatible), for the same check as a plain IPv4 address."""
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if address in NAT64 or address in LOCAL_NAT64:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in IPV4_COMPATIBLE and value > 1:  # not :: or ::1, which stand for themselves
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if (value >> 32) & 0xFDFFFFFF == _ISATAP:
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def _pool(
    target: SplitResult, address: str, deadline: float, watchdog: _Watchdog
) -> urllib3.HTTPConnectionPool:
    """Connections to *address* that present the URL's host name (SNI, certificate check)."""
    https = target.scheme.lower() == "https"
    host = target.hostname or ""
    port = target.port or (443 if https else 80)
    timeout = urllib3.Timeout(connect=_remaining(deadline), read=_remaining(deadline))
    pool: urllib3.HTTPConnectionPool
    if https:
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            assert_hostname=host,
            server_hostname=host,
        )
        pool.ConnectionCls = functools.partial(_WatchedHTTPS, watchdog=watchdog)  # type: ignore[assignment]
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
        pool.ConnectionCls = functools.partial(_WatchedHTTP, watchdog=watchdog)  # type: ignore[assignment]
    return pool


def _request(pool: urllib3.HTTPConnectionPool, target: SplitResult) -> Any:
    """One GET, with the Host header of the URL (the pool connects to the checked address)."""
    host = target.hostname or ""
    headers = {
        "Host": target.netloc.rpartition("@")[2],
        "User-Agent": f"cutout/{__version__} (+image fetch)",
        "Accept": "image/*, */*;q=0.5",
        "Accept-Encoding": "identity",
    }
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    try:
        return pool.urlopen(
            "GET", path, headers=headers, redirect=False, preload_content=False, retries=False
        )
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadFailed(f"Could not download the image from {host}: {_reason(exc)}.") from None


def _read_body(response: Any, max_bytes: int, deadline: float) -> bytes:
    declared = response.headers.get("Content-Length")
    length = header_int(declared)
    if declared is not None and length is None:
        raise DownloadFailed(
            f"Could not download the image: the server sent an invalid Content-Length "
            f"({declared[:20]!r})."
        )
    if length is not None and length > max_bytes:
        raise ImageTooLarge(_too_large(max_bytes))
    chunks, size = [], 0
    try:
        # read1: one socket read at a time, so the deadline is checked between reads even
        # when a server drips one byte per read-timeout
        while chunk := response.read1(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ImageTooLarge(_too_large(max_bytes))
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise DownloadFailed(TOO_LONG)
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadFailed(f"Could not download the image: {_reason(exc)}.") from None
    return b"".join(chunks)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DownloadFailed(TOO_LONG)
    return left


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib3.exceptions.NewConnectionError):  # subclasses the timeout error
        return "the connection failed"
    if isinstance(exc, urllib3.exceptions.TimeoutError | urllib3.exceptions.ReadTimeoutError):
        return "it took too long"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return "its TLS certificate could not be verified"
    return "the connection failed"


def _too_large(max_bytes: int) -> str:
    return f"The image at that URL is larger than {max_bytes / (1024 * 1024):.1f} MB."


def _shown(url: str) -> str:
    """The URL as it may appear in a message: no query string (it may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
