"""Shared fixtures: isolated settings, the real model, the real test photos."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout.config import Settings
from cutout.engine import local_engine
from cutout.engine.fetch import is_installed
from cutout.engine.local import LocalEngine
from cutout.engine.registry import get_spec

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CUTOUT_TESTDATA", ROOT.parent / "shared" / "testdata"))
IN_CI = bool(os.environ.get("CI"))


def missing(reason: str) -> None:
    """Fail under CI (where everything must be present), skip elsewhere, saying why."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path
    kind: str  # "binary" or "alpha"


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not (TESTDATA / "images").is_dir():
        missing(f"test photos not found at {TESTDATA}; set CUTOUT_TESTDATA")
    return TESTDATA


@pytest.fixture(scope="session")
def samples(testdata: Path) -> list[Sample]:
    """Every photo with its ground truth; the kind is read from the mask itself.

    (manifest.csv lags behind the folder: it lists GT01 but not GT02-GT09.)
    """
    found = []
    for image in sorted((testdata / "images").iterdir()):
        mask = testdata / "masks" / f"{image.stem}.png"
        with Image.open(mask) as m:
            values = np.unique(np.asarray(m))
        kind = "binary" if set(values.tolist()) <= {0, 255} else "alpha"
        found.append(Sample(image.stem, image, mask, kind))
    assert len(found) >= 29, f"expected 29 test photos in {testdata}, found {len(found)}"
    return found


@pytest.fixture(scope="session")
def model_settings() -> Settings:
    """Default settings, but for where models live (the dir `make install` filled)."""
    keep = ("CUTOUT_MODEL_DIR", "XDG_CACHE_HOME")
    return Settings.from_env(
        environ={k: os.environ[k] for k in keep if k in os.environ}, dotenv_path=None
    )


@pytest.fixture(scope="session")
def real_engine(model_settings: Settings) -> LocalEngine:
    """The real default model on the runtime `auto` picks, loaded once per test session."""
    if not is_installed(get_spec(model_settings.model), model_settings.model_dir):
        missing(f"model not installed in {model_settings.model_dir}; run `make install`")
    return local_engine(model_settings)


@pytest.fixture
def settings(tmp_path: Path, model_settings: Settings) -> Settings:
    """Settings for one test: its own data dir, the shared model dir, nothing from .env."""
    return Settings.from_env(
        environ={
            "CUTOUT_DATA_DIR": str(tmp_path / "data"),
            "CUTOUT_MODEL_DIR": str(model_settings.model_dir),
            "CUTOUT_ENV": "testing",
        },
        dotenv_path=None,
    )


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep a developer's CUTOUT_* exports (other than paths) out of the tests."""
    for key in list(os.environ):
        if key.startswith("CUTOUT_") and key not in ("CUTOUT_MODEL_DIR", "CUTOUT_TESTDATA"):
            monkeypatch.delenv(key)
    yield
