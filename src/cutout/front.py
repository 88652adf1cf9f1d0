"""The web worker: gunicorn's threads, fed only whole requests.

gunicorn's threaded worker hands a connection to a thread as soon as a byte arrives; the
thread then reads the rest itself, blocking. Ten clients sending one header line every two
seconds (or a declared 1 MB body, one byte every two seconds) held every thread, and
``/health`` waited 20 s. gunicorn's answer is a buffering proxy in front; people run the
container with ``-p 5000:5000`` and Kubernetes sends traffic straight to it, so the buffering
is here, in the worker's own event loop (:class:`BufferingWorker`):

* every connection is read without blocking by the loop that accepts it, until its request is
  whole: request line, headers and body (``Content-Length``, or chunked up to its last chunk);
  only then does a thread get it, and the thread's parser reads from the buffer, never from
  the client;
* the head must arrive within ``CUTOUT_CLIENT_HEADER_TIMEOUT`` seconds and the whole request
  within ``CUTOUT_CLIENT_BODY_TIMEOUT``, else 408 and the connection closes;
* a body is refused before it is read when its declared length is over its endpoint's limit
  (:mod:`cutout.web.bodies`): the app answers its usual 413 from the headers alone, and the
  connection closes. A chunked body is cut off at that limit (413);
* the bytes being received by one process are capped (``CUTOUT_CLIENT_BUFFER_MB``, reserved
  from the declared length): beyond, 503 with Retry-After; bodies over
  ``CUTOUT_CLIENT_SPOOL_KB`` wait in a temporary file, not in memory.

Everything after the buffer is gunicorn's gthread worker unchanged: the thread pool, keep-alive,
graceful shutdown (SIGTERM: requests being received or run are finished, idle connections
closed), the access log and the app's metrics. TLS connections (gunicorn's ``certfile``) are
not buffered: the bytes on the wire are encrypted; terminate TLS in front of the app.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from gunicorn.workers.gthread import TConn, ThreadWorker

#: One recv(); and how much one connection may read per wake-up, so the others get their turn.
READ_SIZE = 64 * 1024
PER_WAKEUP = 1024 * 1024
#: Request line and headers: gunicorn's own limits allow 8 KB lines; this is their sum, bounded.
MAX_HEAD = 64 * 1024
MAX_CHUNK_LINE = 4096
STOP_LINGER = 2.0  # seconds a stopping worker waits for an idle connection's first byte
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
SCAN_INTERVAL = 0.5  # seconds between two looks at the deadlines
#: After a refusal (408, 413, 431, 503) sent while the client may still be sending, and after
#: a response with ``Connection: close``: how long and how much of the client's input is read
#: and discarded, on the poller, before the socket closes. Closing with
#: unread input makes the kernel answer with a reset, which can destroy the refusal before the
#: client reads it (RFC 9112, section 9.6, "tear-down"); a short drain lets it arrive.
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 << 20  # read and dropped, never kept: the cost is the client's bandwidth


@dataclass(frozen=True)
class Head:
    """What the framing of one request needs from its head."""

    method: str
    path: str
    length: int | None  # Content-Length; None without one
    chunked: bool
    expects_continue: bool
    malformed: bool  # left to gunicorn's parser, which answers 400


def head_end(buffer: bytes | bytearray) -> int | None:
    """Index just past the blank line that ends the head, or None while it has not come."""
    start = len(buffer) - len(bytes(buffer).lstrip(b"\r\n"))  # blank lines before are allowed
    crlf = buffer.find(b"\r\n\r\n", start)
    lf = buffer.find(b"\n\n", start)
    ends = [i + 4 for i in [crlf] if i >= 0] + [i + 2 for i in [lf] if i >= 0]
    return min(ends) if ends else None


def parse_head(raw: bytes) -> Head:
    lines = [line.rstrip(b"\r") for line in raw.lstrip(b"\r\n").split(b"\n")]
    parts = lines[0].split(b" ")
    method = parts[0].decode("latin-1")
    target = parts[1].decode("latin-1") if len(parts) == 3 else "/"
    lengths: list[bytes] = []
    codings: list[bytes] = []
    expects = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        key, value = name.strip().lower(), value.strip()
        if not colon:
            continue
        if key == b"content-length":
            lengths.append(value)
        elif key == b"transfer-encoding":
            codings += [c.strip().lower() for c in value.split(b",")]
        elif key == b"expect":
            expects = value.lower() == b"100-continue"
    malformed = len(parts) != 3 or len(lengths) > 1
    length = None
    if lengths:
        # ASCII digits only (int() takes "+1", "1_0" and other scripts' digits)
        if lengths[0].isdigit() and lengths[0].isascii():
            length = int(lengths[0])
        else:
            malformed = True
    chunked = bool(codings) and codings[-1] == b"chunked"
    if codings and (not chunked or lengths):
        malformed = True  # other codings, or both framings: smuggling material
    path = unquote(urlsplit(target).path or "/")
    return Head(method, path, length, chunked, expects, malformed)


class Chunked:
    """Finds where a chunked body ends, fed its bytes in pieces; counts its data bytes."""

    def __init__(self) -> None:
        self.line = bytearray()
        self.left = 0  # data bytes (and their CRLF) still to come in the current chunk
        self.trailer = False
        self.data = 0
        self.done = False

    def feed(self, piece: bytes) -> int:
        """How many bytes of *piece* belong to the body (all of them unless it ended).

        Raises ValueError on a malformed chunk.
        """
        at = 0
        while at < len(piece) and not self.done:
            if self.left:
                take = min(self.left, len(piece) - at)
                self.left -= take
                at += take
                continue
            newline = piece.find(b"\n", at)
            if newline < 0:
                self.line += piece[at:]
                at = len(piece)
            else:
                self.line += piece[at : newline + 1]
                at = newline + 1
                self._line(bytes(self.line).rstrip(b"\r\n"))
                self.line.clear()
            if len(self.line) > MAX_CHUNK_LINE:
                raise ValueError("chunk line too long")
        return at

    def _line(self, line: bytes) -> None:
        if self.trailer:
            self.done = not line
            return
        size = line.split(b";", 1)[0].strip()
        if not size or not all(c in b"0123456789abcdefABCDEF" for c in size):
            raise ValueError("bad chunk size")
        n = int(size, 16)
        if n == 0:
            self.trailer = True
        else:
            self.data += n
            self.left = n + 2


class Source:
    """What the thread's parser reads instead of the socket: the buffered requests, in order,
    and then end-of-file (never the client: a thread must not wait on one)."""

    def __init__(self) -> None:
        self.files: list[IO[bytes]] = []

    def add(self, spool: IO[bytes]) -> None:
        spool.seek(0)
        self.files.append(spool)

    def recv(self, size: int) -> bytes:
        while self.files:
            data = self.files[0].read(size)
            if data:
                return data
            self.files.pop(0).close()
        return b""

    def close(self) -> None:
        for spool in self.files:
            spool.close()
        self.files.clear()


class BufferedConn(TConn):  # type: ignore[misc]  # gunicorn has no type hints
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.source = Source()
        self.leftover = b""  # pipelined bytes past the request handed over
        self.reserved = 0  # bytes of the process's buffer budget held by its request
        self.close_after = False  # handed over without its body: no keep-alive after
        #: The worker's non-blocking lingering close, for gunicorn's ``close(graceful=True)``.
        self.linger: Callable[[BufferedConn], None] | None = None

    def init(self) -> None:
        fresh = not self.initialized
        super().init()
        if fresh and self.parser is not None and not self.is_http2:
            self.parser.unreader.sock = self.source

    def close(self, graceful: bool = False) -> None:
        """Close; *graceful* (gunicorn's after a response with ``Connection: close``) lingers
        on the worker's poller. gunicorn's own graceful close drains in the loop's thread for
        up to 2 s: ten clients that asked for ``Connection: close`` and then neither read nor
        closed stalled every other connection for 16 s (measured)."""
        self.source.close()
        if graceful and self.linger is not None:
            self.linger(self)
            return
        super().close(False)


@dataclass(frozen=True)
class Limits:
    header_timeout: float
    body_timeout: float
    buffer_bytes: int
    spool_bytes: int


@dataclass
class Incoming:
    """One request being received."""

    conn: BufferedConn
    deadline: float
    idle: bool = True  # no byte yet
    started: float = 0.0
    head: bytearray = field(default_factory=bytearray)
    framing: Head | None = None
    spool: IO[bytes] | None = None
    body_left: int = 0
    chunks: Chunked | None = None
    limit: int = 0


#: What to do with a request: None (read on), "ready", "handover" (without its body, then
#: close), or an error answer (status, code, message).
Outcome = str | tuple[int, str, str] | None
ERROR_TITLES = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


class BufferingWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's gthread worker whose threads only ever see whole requests (see above)."""

    def init_process(self) -> None:
        from cutout.config import Settings

        settings = Settings.from_env()
        self.limits = Limits(
            header_timeout=settings.client_header_timeout,
            body_timeout=settings.client_body_timeout,
            buffer_bytes=settings.client_buffer_mb * 1024 * 1024,
            spool_bytes=settings.client_spool_kb * 1024,
        )
        self.incoming: dict[BufferedConn, Incoming] = {}
        self.lingering: dict[BufferedConn, float] = {}  # refused, draining: the deadline
        self.buffered = 0
        self.next_scan = 0.0
        self.body_limit: Callable[[str, str], int] = lambda method, path: self.limits.buffer_bytes
        _drop_server_header()
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        from flask import Flask

        if isinstance(self.wsgi, Flask):
            from cutout.web.bodies import limit_for_path

            self.body_limit = partial(limit_for_path, self.wsgi)

    # -- connections in: buffered before a thread sees them ---------------------------------

    def accept(self, listener: Any) -> None:
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, sock, address, listener.getsockname())
        conn.linger = self._linger
        if self.cfg.is_ssl:  # encrypted bytes: gunicorn's own way (see the module's notes)
            sock.setblocking(True)
            self.enqueue_req(conn)
            return
        self._receive(conn, self.limits.header_timeout)

    def on_client_socket_readable(self, conn: BufferedConn, client: Any) -> None:
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        if self.cfg.is_ssl:
            self.enqueue_req(conn)
            return
        self._receive(conn, self.limits.header_timeout)

    def _receive(self, conn: BufferedConn, idle_timeout: float) -> None:
        state = Incoming(conn, deadline=time.monotonic() + idle_timeout)
        self.incoming[conn] = state
        leftover, conn.leftover = conn.leftover, b""
        if leftover and self._feed(state, leftover):
            return
        conn.sock.setblocking(False)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: BufferedConn, client: Any) -> None:
        state = self.incoming[conn]
        got = 0
        while got < PER_WAKEUP:
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(state)
                return
            if not data:  # the client left before its request was whole
                self._drop(state)
                return
            got += len(data)
            if self._feed(state, data, registered=True):
                return

    def _feed(self, state: Incoming, data: bytes, registered: bool = False) -> bool:
        """Take *data*; act on the outcome. True when the request left the buffer."""
        try:
            outcome = self._take(state, data)
        except OSError:
            outcome = (503, "busy", "The server cannot buffer this request now.")
        if outcome is None:
            return False
        if registered:
            self.poller.unregister(state.conn.sock)
        del self.incoming[state.conn]
        if isinstance(outcome, tuple):
            self._refuse(state, *outcome)
        else:
            self._hand_over(state, close_after=outcome == "handover")
        return True

    def _take(self, state: Incoming, data: bytes) -> Outcome:
        now = time.monotonic()
        if state.idle:
            state.idle, state.started = False, now
            state.deadline = now + self.limits.header_timeout
        if state.framing is None:
            return self._take_head(state, data, now)
        return self._take_body(state, data)

    def _take_head(self, state: Incoming, data: bytes, now: float) -> Outcome:
        state.head += data
        end = head_end(state.head)
        if end is None:
            if len(state.head) > MAX_HEAD:
                return (431, "headers_too_large", "The request's headers are too large.")
            return None
        raw, rest = bytes(state.head[:end]), bytes(state.head[end:])
        state.head.clear()
        framing = state.framing = parse_head(raw)
        state.deadline = state.started + self.limits.body_timeout
        # closed by Source once read, or by _drop
        state.spool = tempfile.SpooledTemporaryFile(max_size=self.limits.spool_bytes)  # noqa: SIM115
        if framing.malformed:
            state.spool.write(raw)
            return "handover"
        state.limit = self.body_limit(framing.method, framing.path)
        if framing.length is not None and framing.length > state.limit:
            state.spool.write(raw)  # the app answers 413 from the headers alone
            return "handover"
        declared = len(raw) + (framing.length or 0)
        if not self._reserve(state.conn, declared):
            return (503, "busy", "The server is receiving too much at once; retry shortly.")
        if framing.expects_continue and (framing.length or framing.chunked) and not rest:
            raw = _without_expect(raw)  # answered here: the app must not answer it again
            _send(state.conn, CONTINUE)
        state.spool.write(raw)
        if framing.chunked:
            state.chunks = Chunked()
        else:
            state.body_left = framing.length or 0
        return self._take_body(state, rest) if rest or not state.chunks else self._body_done(state)

    def _take_body(self, state: Incoming, data: bytes) -> Outcome:
        assert state.spool is not None
        if state.chunks is not None:
            try:
                used = state.chunks.feed(data)
            except ValueError:
                return (400, "bad_request", "The request's chunked body is malformed.")
            if state.chunks.data > state.limit:
                return (413, "body_too_large", "The request body is too large.")
            if not self._reserve(state.conn, used):
                return (503, "busy", "The server is receiving too much at once; retry shortly.")
        else:
            used = min(state.body_left, len(data))
            state.body_left -= used
        state.spool.write(data[:used])
        state.conn.leftover += data[used:]
        return self._body_done(state)

    def _body_done(self, state: Incoming) -> Outcome:
        if state.chunks is not None:
            return "ready" if state.chunks.done else None
        return "ready" if state.body_left == 0 else None

    def _reserve(self, conn: BufferedConn, size: int) -> bool:
        if self.buffered + size > self.limits.buffer_bytes:
            return False
        self.buffered += size
        conn.reserved += size
        return True

    def _release(self, conn: BufferedConn) -> None:
        self.buffered -= conn.reserved
        conn.reserved = 0

    def _hand_over(self, state: Incoming, *, close_after: bool) -> None:
        conn = state.conn
        assert state.spool is not None
        conn.source.add(state.spool)
        conn.close_after = close_after
        conn.data_ready = True  # gthread must not wait on the socket: the bytes are here
        conn.sock.setblocking(True)
        self.enqueue_req(conn)

    def _refuse(self, state: Incoming, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": code, "message": message}).encode()
        head = (
            f"HTTP/1.1 {status} {ERROR_TITLES[status]}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        )
        if status == 503:
            head += "Retry-After: 2\r\n"
        _send(state.conn, (head + "\r\n").encode() + body)
        self.log.info("refused a request being received (%s %s)", status, code)
        # Imported here: gunicorn's master imports this module before it sets up the
        # metrics folder, and prometheus_client picks its storage when first imported.
        from cutout.metrics import UNREAD

        UNREAD.labels(code).inc()
        self._drop(state, linger=True)

    def _drop(self, state: Incoming, *, linger: bool = False) -> None:
        conn = state.conn
        if self.incoming.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        if state.spool is not None:
            state.spool.close()
        self._release(conn)
        self.nr_conns -= 1
        if linger:
            self._linger(conn)
        else:
            conn.close()

    def _linger(self, conn: BufferedConn) -> None:
        """Half-close after a refusal or a last response, then drain the client's input for a
        moment (see ``LINGER_SECONDS``): the answer is followed by a FIN, not a reset."""
        conn.linger = None  # from here on, closing closes
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn, [0]))
        except (OSError, ValueError, KeyError):
            conn.close()
            return
        self.lingering[conn] = time.monotonic() + LINGER_SECONDS

    def _drain(self, conn: BufferedConn, taken: list[int], _sock: Any) -> None:
        try:
            piece = conn.sock.recv(64 * 1024)
        except BlockingIOError:
            return
        except OSError:
            piece = b""
        taken[0] += len(piece)
        if not piece or taken[0] > LINGER_BYTES:
            self._end_linger(conn)

    def _end_linger(self, conn: BufferedConn) -> None:
        if self.lingering.pop(conn, None) is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            conn.close()

    # -- after the thread: release, keep-alive, pipelining ---------------------------------

    def _keepalive_after(self, conn: BufferedConn, keepalive: bool) -> bool:
        if conn.close_after:
            return False
        return bool(super()._keepalive_after(conn, keepalive))

    def finish_request(self, conn: BufferedConn, fs: Any) -> None:
        self._release(conn)
        conn.source.close()  # the thread is done with the request's bytes
        super().finish_request(conn, fs)
        if conn.leftover and conn in self.keepalived_conns:  # a pipelined request waits
            self.poller.unregister(conn.sock)
            self.keepalived_conns.remove(conn)
            self._receive(conn, self.limits.header_timeout)

    # -- deadlines ---------------------------------------------------------------------------

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        # The loop comes here after every wake-up: look at every connection twice a second
        # at most, not once per event under a flood of them.
        if now < self.next_scan:
            return
        self.next_scan = now + SCAN_INTERVAL
        for conn, until in list(self.lingering.items()):
            if until <= now:
                self._end_linger(conn)
        for state in list(self.incoming.values()):
            if not self.alive and state.idle:  # stopping: no new requests, as keep-alive
                state.deadline = min(state.deadline, now + STOP_LINGER)
            if state.deadline > now:
                continue
            if state.idle:
                self._drop(state)  # nothing sent: close quietly, as keep-alive does
            else:
                self._refuse(state, 408, "request_timeout", "The request took too long to arrive.")


def _drop_server_header() -> None:
    """gunicorn writes ``Server: gunicorn`` into every response and has no setting to stop it;
    naming the server and its version only helps an attacker pick exploits, so drop the line."""
    from gunicorn.http import wsgi

    if getattr(wsgi.Response, "_cutout_no_server", False):
        return
    defaults = wsgi.Response.default_headers

    def default_headers(response: Any) -> list[str]:
        return [line for line in defaults(response) if not line.startswith("Server:")]

    wsgi.Response.default_headers = default_headers
    wsgi.Response._cutout_no_server = True


def _without_expect(raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    return b"\n".join(line for line in lines if not line.lower().startswith(b"expect:"))


def _send(conn: BufferedConn, data: bytes) -> None:
    """A short answer, without blocking: it fits the socket's buffer, or the client is gone."""
    with contextlib.suppress(OSError):
        conn.sock.send(data)
