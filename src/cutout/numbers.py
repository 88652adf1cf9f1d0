"""Numbers from requests and remote servers: ASCII digits only, or a 400 naming the field.

Python reads far more than ``0-9`` as digits: ``int("١٢")`` is 12 (Arabic-Indic), ``"²".isdigit()``
is true but ``int("²")`` raises, and the regular expression ``\\d`` matches every decimal
digit of Unicode. A check with one rule and a conversion with another gave 500s (a superscript
``max_side``, a ``Content-Length`` header from a downloaded URL), and other digits were taken
silently. Every number parsed from a request or from a remote server goes through here.
"""

from __future__ import annotations

import math
import re

from cutout.errors import InvalidParameter

_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)


def parse_int(text: str, name: str) -> int:
    """*text* (surrounding spaces allowed) as a whole number. :raises InvalidParameter:"""
    stripped = text.strip()
    if not _INT.fullmatch(stripped):
        raise InvalidParameter(
            f"{name} must be a whole number written with the digits 0-9.", f"invalid_{name}"
        )
    return int(stripped)


def parse_float(text: str, name: str) -> float:
    """*text* as a finite number (``1``, ``0.5``, ``.5``, ``1e3``). :raises InvalidParameter:"""
    stripped = text.strip()
    if not _FLOAT.fullmatch(stripped) or not math.isfinite(value := float(stripped)):
        raise InvalidParameter(
            f"{name} must be a number written with the digits 0-9.", f"invalid_{name}"
        )
    return value


def header_int(text: str | None) -> int | None:
    """A remote server's numeric header (Content-Length, Retry-After): None when absent, and
    None for anything but plain ASCII digits, which the caller then treats as absent."""
    if text is None or not _INT.fullmatch(text.strip()) or text.strip()[0] in "+-":
        return None
    return int(text.strip())
