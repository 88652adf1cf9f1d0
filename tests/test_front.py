"""The web worker's framing: where a request's head and body end, from bytes in pieces."""

from __future__ import annotations

import pytest

from cutout.front import Chunked, Head, head_end, parse_head


def test_the_head_ends_at_its_blank_line() -> None:
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n") is None
    assert head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nrest") == 27
    assert head_end(b"\r\nGET / HTTP/1.1\n\nrest") == 18  # blank lines before, bare LF


def test_parse_head() -> None:
    head = parse_head(
        b"POST /records/a%20b/edits?x=1 HTTP/1.1\r\nContent-Length: 12\r\n"
        b"EXPECT: 100-Continue\r\n\r\n"
    )
    assert head == Head("POST", "/records/a b/edits", 12, False, True, False)
    chunked = parse_head(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    assert chunked.chunked and not chunked.malformed and chunked.length is None


@pytest.mark.parametrize(
    "head",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Length: \u0665\r\n\r\n".encode(),
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"GET /\r\n\r\n",
    ],
    ids=[
        "two-lengths",
        "signed",
        "arabic-digit",
        "both-framings",
        "chunked-not-last",
        "no-version",
    ],
)
def test_ambiguous_framing_is_left_to_gunicorns_parser(head: bytes) -> None:
    """gunicorn answers these 400; the buffer must not guess where such a body ends."""
    assert parse_head(head).malformed


def test_a_chunked_body_ends_after_its_last_chunk_and_trailers() -> None:
    body = b"5;name=v\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"
    for size in (1, 3, len(body)):  # however the bytes arrive
        chunks = Chunked()
        used = 0
        for at in range(0, len(body) + 4, size):
            used += chunks.feed((body + b"NEXT")[at : at + size])
            if chunks.done:
                break
        assert chunks.done and used == len(body) and chunks.data == 5


@pytest.mark.parametrize("body", [b"zz\r\n", b"-1\r\n", b"1" * 5000])
def test_a_malformed_chunk_is_an_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        Chunked().feed(body)
