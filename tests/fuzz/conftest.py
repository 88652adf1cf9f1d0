"""The fuzzing campaign's settings and its tally, printed at the end of the run.

Bounded in `make test`: the decoder gets FUZZ_CASES cases (default 400), the web app and the
CLI a fraction, since every input that still decodes runs the real model (~1 s). `make fuzz`
sets FUZZ_CASES=10000 and draws new inputs on every run; `make test` replays a fixed
derandomized sequence, so CI stays deterministic.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from _pytest.terminal import TerminalReporter
from hypothesis import HealthCheck, settings

from tests.conftest import ROOT, Photos
from tests.fuzz.mutate import Seed, seeds

CASES = int(os.environ.get("FUZZ_CASES", "400"))
FULL = CASES > 400
#: The real model runs for every input that still decodes (about one in six), so in `make test`
#: the surfaces that include it get 50 cases each; `make fuzz` gives them all FUZZ_CASES.
MODEL_CASES = int(os.environ.get("FUZZ_MODEL_CASES", str(CASES if FULL else 50)))

settings.register_profile(
    "fuzz",
    deadline=None,  # a case that decodes runs the model; time is bounded by pytest-timeout
    derandomize=not FULL,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

FAILURES = ROOT / "artifacts" / "fuzz"
#: What each surface did with its cases, e.g. TALLY["http"]["201"] += 1.
TALLY: dict[str, Counter[str]] = {}


def tally(surface: str, outcome: str) -> None:
    TALLY.setdefault(surface, Counter())[outcome] += 1


@contextmanager
def kept_if_failing(name: str, payload: bytes) -> Iterator[None]:
    """Save an input that fails the test under artifacts/fuzz/, to replay it by hand.

    Hypothesis reports the failing example too, but a failure that depends on state can make
    its replay differ ("Flaky"); the saved file is the input exactly as it was sent.
    """
    try:
        yield
    except BaseException:
        digest = hashlib.sha256(payload).hexdigest()[:16]
        FAILURES.mkdir(parents=True, exist_ok=True)
        (FAILURES / f"{digest}-{name}.bin").write_bytes(payload)
        raise


@pytest.fixture(scope="session")
def seed_pool(photos: Photos) -> list[Seed]:
    return seeds(photos.named("coffee"), photos.named("horse"))


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    for surface, counts in sorted(TALLY.items()):
        total = sum(counts.values())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"fuzz {surface}: {total} cases ({detail})")
