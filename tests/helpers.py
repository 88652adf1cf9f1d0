"""Small helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import io
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> Any:
    """The module ``scripts/NAME.py`` (scripts are not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo_folder(folder: Path, photos: Iterable[Path]) -> Path:
    """Make *folder* and copy *photos* into it, under their own names."""
    folder.mkdir()
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    return folder


def synthetic_photo(width: int = 320, height: int = 240) -> Image.Image:
    """A smooth colourful RGB picture with a bright disc: enough structure for codecs."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / 17.0)
    g = 128 + 100 * np.cos(y / 23.0)
    b = np.where(
        (x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(width, height) / 4) ** 2, 250.0, 40.0
    )
    return Image.fromarray(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def matrix_icc_profile(
    red: tuple[float, float, float],
    green: tuple[float, float, float],
    blue: tuple[float, float, float],
    gamma: float = 2.2,
) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile with the given primaries (D50 XYZ).

    Tests use it to tag pixels as "not sRGB" and check that decoding converts them.
    """
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = b"test profile\0"
    desc = (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(text))
        + text
        + b"\0" * 8
        + b"\0" * 2
        + b"\0"
        + b"\0" * 67
    )
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


class LocalServer:
    """A real HTTP server on 127.0.0.1 in a thread, answering with *routes*.

    ``routes`` maps ``(method, path)`` to a callable receiving the request handler and returning
    ``(status, headers, body)``. It stands in for services we do not own (the npm registry, a
    model host, the paid ObjectCut API). Requests are recorded in ``requests``.
    """

    def __init__(self, routes: dict[tuple[str, str], Responder]) -> None:
        import http.server
        import threading

        server_self = self
        self.routes = routes
        self.requests: list[Recorded] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length) if length else b""
                server_self.requests.append(
                    Recorded(self.command, self.path, dict(self.headers), body)
                )
                responder = server_self.routes.get((self.command, self.path.split("?")[0]))
                status, headers, payload = (
                    responder(self, body) if responder else (404, {}, b"not found")
                )
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            do_GET = do_POST = _handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Any, bytes], tuple[int, dict[str, str], bytes]]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
