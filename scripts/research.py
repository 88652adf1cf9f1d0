"""What the research scripts share (run as ``python scripts/NAME.py``: this folder is then on
``sys.path``, so they ``import research``). Nothing here is imported by the package."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from PIL import Image

Candidate = TypeVar("Candidate")


def truth_kind(truth: Image.Image) -> str:
    """``binary`` for a mask of only 0 and 255, ``soft`` for a matte."""
    return "binary" if set(np.unique(np.asarray(truth)).tolist()) <= {0, 255} else "soft"


def leave_one_out(
    candidates: Sequence[Candidate], errors: Callable[[Candidate], Sequence[float]]
) -> list[Candidate]:
    """For each photo *i*, the candidate whose *errors* (one per photo, the same order for
    every candidate) have the lowest mean over the other photos; ties go to the earlier
    candidate."""
    table = {i: list(errors(c)) for i, c in enumerate(candidates)}
    count = len(table[0])
    return [
        candidates[
            min(table, key=lambda c: float(np.mean([e for j, e in enumerate(table[c]) if j != i])))
        ]
        for i in range(count)
    ]
