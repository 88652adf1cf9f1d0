"""Untrusted text: names people give records and keys, shown on pages and terminals.

A name is stored as text and shown again: on the page (escaped by the templates), in JSON, and
on an operator's terminal (``cutout keys list``), where control characters and escape
sequences would act rather than show, and bidirectional overrides would make a name read
differently from what it holds.
"""

from __future__ import annotations

import re

#: C0/C1 controls and DEL, lone surrogates, and the bidirectional embeddings, overrides and
#: isolates (U+202A-U+202E, U+2066-U+2069).
UNSAFE_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """*text* for a terminal: every unsafe character written as its escape (``\\x1b``)."""
    return UNSAFE_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
