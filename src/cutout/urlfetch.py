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
  the whole download, so a slow drip cannot hold a thread forever.

Failures are :class:`~cutout.errors.InvalidUrl` (the URL itself is unacceptable),
:class:`~cutout.errors.DownloadFailed` (it could not be fetched) or
:class:`~cutout.errors.ImageTooLarge`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

import certifi
import urllib3

from cutout import __version__
from cutout.errors import DownloadFailed, ImageTooLarge, InvalidUrl
from cutout.numbers import header_int

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
REDIRECTS = {301, 302, 303, 307, 308}
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int
    timeout: float = 15.0  # seconds for the whole download, redirects included
    max_redirects: int = 5
    allowed_networks: tuple[IPNetwork, ...] = ()


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


def fetch(url: str, policy: FetchPolicy, *, resolve: Resolver | None = None) -> Fetched:
    """GET *url* under *policy*; follow checked redirects; return the body."""
    resolve = resolve or _resolve
    deadline = time.monotonic() + policy.timeout
    for _ in range(policy.max_redirects + 1):
        target = _checked_url(url)
        address = _checked_address(target, policy, resolve)
        pool = _pool(target, address, deadline)
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
    pool = _pool(target, address, time.monotonic() + policy.timeout)
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


def _pool(target: SplitResult, address: str, deadline: float) -> urllib3.HTTPConnectionPool:
    """Connections to *address* that present the URL's host name (SNI, certificate check)."""
    https = target.scheme.lower() == "https"
    host = target.hostname or ""
    port = target.port or (443 if https else 80)
    timeout = urllib3.Timeout(connect=_remaining(deadline), read=_remaining(deadline))
    if https:
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            assert_hostname=host,
            server_hostname=host,
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)


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
                raise DownloadFailed("Could not download the image: it took too long.")
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadFailed(f"Could not download the image: {_reason(exc)}.") from None
    return b"".join(chunks)


def _resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DownloadFailed("Could not download the image: it took too long.")
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
