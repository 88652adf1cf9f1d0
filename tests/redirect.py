"""Run a remove.bg client that hard-codes ``https://api.remove.bg`` against our server, unchanged.

Many published clients have the URL baked in. Their users redirect them the way any HTTPS
client is redirected: a hosts entry (or DNS record) for ``api.remove.bg`` pointing at a TLS
front for our server, with a certificate the client trusts (``NODE_EXTRA_CA_CERTS``,
``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``). This module does exactly that, sealed off:

* :func:`redirected` runs the client in a fresh network namespace (``unshare --net --mount``,
  root only) whose only interface is loopback and whose ``/etc/hosts`` maps ``api.remove.bg``
  to 127.0.0.1. Nothing the client does can leave the machine.
* In there, port 443 relays to a Unix socket (:func:`_inner_main`, run as ``python -m
  tests.redirect``), since a Unix socket is the one door between the two namespaces. Other
  local ports the client must reach (a site with photos) get plain doors the same way.
* Outside, :class:`TlsFront` accepts on that socket, terminates TLS with a certificate for
  ``api.remove.bg`` signed by a throw-away CA (made by the ``openssl`` command), and relays the
  plain HTTP bytes to the live server. The server sees exactly what the client sent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

HOST = "api.remove.bg"
_LEAF_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=serverAuth\n"
    f"subjectAltName=DNS:{HOST}\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\n"
)


def can_isolate() -> str | None:
    """Why :func:`redirected` cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a network namespace needs root"
    for tool in ("unshare", "ip", "mount", "openssl"):
        if shutil.which(tool) is None:
            return f"the {tool} command is missing"
    probe = subprocess.run(["unshare", "--net", "--mount", "--", "true"], capture_output=True)
    return f"unshare failed: {probe.stderr.decode()[:200]}" if probe.returncode else None


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a leaf certificate for api.remove.bg: ``(ca.pem, leaf.pem, leaf.key)``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    leaf, leaf_key, csr, ext = (folder / n for n in ("leaf.pem", "leaf.key", "leaf.csr", "x.ext"))
    ext.write_text(_LEAF_EXTENSIONS)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2"],
        ["req", *ec, "-keyout", leaf_key, "-out", csr, "-subj", f"/CN={HOST}"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial"],
    ]
    commands[0] += ["-subj", "/CN=cutout test CA", "-addext", ca_ext[0], "-addext", ca_ext[1]]
    commands[2] += ["-out", leaf, "-days", "2", "-extfile", ext]
    for argv in commands:
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True, timeout=30)
    return ca, leaf, leaf_key


class TlsFront:
    """api.remove.bg's TLS in front of our server on 127.0.0.1:*upstream_port*, on a Unix
    socket; and plain doors to the *passthrough* ports (a site serving photos for URL inputs,
    which some clients fetch themselves first)."""

    def __init__(self, upstream_port: int, folder: Path, passthrough: Sequence[int] = ()) -> None:
        self.upstream_port = upstream_port
        self.folder = folder
        self.ca, leaf, key = make_certificates(folder)
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(leaf, key)
        # A short folder of its own: a Unix socket's path must fit in 108 bytes.
        self.sockets = Path(tempfile.mkdtemp(prefix="rbg-"))
        self.passthrough = tuple(passthrough)
        self.connections = 0  # a test checks it: a client that went elsewhere is noticed
        self._servers = [self._door("443.sock", self._serve_tls)]
        for port in self.passthrough:
            self._servers.append(self._door(f"{port}.sock", partial(_forward, port=port)))

    def _door(
        self, name: str, serve: Callable[[socket.socket], None]
    ) -> socketserver.ThreadingUnixStreamServer:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                serve(self.request)

        server = socketserver.ThreadingUnixStreamServer(str(self.sockets / name), Handler)
        server.daemon_threads = True
        return server

    @property
    def client_env(self) -> dict[str, str]:
        """What makes the usual TLS stacks trust the front's certificate."""
        ca = str(self.ca)
        return {"NODE_EXTRA_CA_CERTS": ca, "REQUESTS_CA_BUNDLE": ca, "SSL_CERT_FILE": ca}

    def __enter__(self) -> TlsFront:
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        shutil.rmtree(self.sockets, ignore_errors=True)

    def _serve_tls(self, client: socket.socket) -> None:
        client.settimeout(120)
        self.connections += 1
        with self.tls.wrap_socket(client, server_side=True) as inner:
            _forward(inner, port=self.upstream_port)


def _forward(client: socket.socket, *, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as upstream:
        _relay(client, upstream)


def redirected(
    front: TlsFront, argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run *argv* in a sealed network namespace where api.remove.bg is *front*."""
    hosts = front.folder / "hosts"
    hosts.write_text(f"127.0.0.1 localhost {HOST}\n::1 localhost\n")
    here = str(Path(__file__).resolve().parents[1])
    ports = ",".join(map(str, (443, *front.passthrough)))
    inner = [sys.executable, "-m", "tests.redirect", str(front.sockets), ports, str(hosts), *argv]
    return subprocess.run(
        ["unshare", "--net", "--mount", "--fork", "--", *inner],
        env={**env, **front.client_env, "PYTHONPATH": here},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _inner_main(sockets: str, ports: str, hosts: str, argv: list[str]) -> int:
    """Inside the namespace: loopback up, the hosts entry, each port to its door; the client."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)  # this namespace only
    for port in ports.split(","):
        listener = socket.create_server(("127.0.0.1", int(port)))
        door = str(Path(sockets) / f"{port}.sock")
        threading.Thread(target=_accept, args=(listener, door), daemon=True).start()
    return subprocess.run(argv).returncode


def _accept(listener: socket.socket, door: str) -> None:
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_to_unix, args=(conn, door), daemon=True).start()


def _to_unix(conn: socket.socket, door: str) -> None:
    with conn, socket.socket(socket.AF_UNIX) as upstream:
        upstream.connect(door)
        _relay(conn, upstream)


def _relay(a: socket.socket, b: socket.socket) -> None:
    back = threading.Thread(target=_pump, args=(b, a), daemon=True)
    back.start()
    _pump(a, b)
    back.join(timeout=120)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until *source* closes, then end *sink*'s sending half."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError, ValueError):
        sink.shutdown(socket.SHUT_WR)


if __name__ == "__main__":
    sys.exit(_inner_main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
