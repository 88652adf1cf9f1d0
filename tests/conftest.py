"""Shared fixtures: isolated settings, the real model, the real test photos."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout.config import Settings
from cutout.engine import local_engine, required_models
from cutout.engine.files import is_installed
from cutout.engine.fused import FusedEngine
from cutout.engine.quantize import int8_path
from cutout.engine.runtimes import cpu_has_bf16
from cutout.imaging.decode import Limits, load_image
from cutout.pipeline import full_alpha, model_input
from cutout.quality import Score, bare_alpha, score
from tests import photos as fetch_photos
from tests.remembered import remembering

ROOT = Path(__file__).resolve().parents[1]
#: The research-licensed data beside the repository (never copied into it): test photos with
#: ground truth, and remove.bg's OpenAPI description.
SHARED = ROOT.parent / "shared"
TESTDATA = Path(os.environ.get("CUTOUT_TESTDATA") or SHARED / "testdata")
REMOVEBG_SPEC = SHARED / "docs" / "specs" / "removebg-openapi.json"
#: The CC0 test photos (tests/photos.py; `make test` fetches them).
PHOTOS = fetch_photos.default_folder()
IN_CI = bool(os.environ.get("CI"))
#: The skip reasons of data a fresh clone may lack: they skip even under CI (the licence keeps
#: them out of the repository, so nothing can install them; the summary at the end of the run
#: lists what did not run).
NO_TESTDATA = (
    f"needs the licensed test photos with ground truth, not found at {TESTDATA} "
    "(../shared/testdata; set CUTOUT_TESTDATA to their folder)"
)
NO_SPEC = (
    f"needs remove.bg's OpenAPI description, not found at {REMOVEBG_SPEC} (../shared/docs/specs)"
)


def precision() -> str:
    """How OpenVINO runs the models' float layers here: "bf16" on CPUs with AVX-512 BF16 or
    AMX (the Zen 4 and the Xeon the quality thresholds were first set on; their INT8 layers
    use VNNI), "f32" on the others (AVX2 only, such as a Zen 3). The INT8 build calibrates and
    runs with that arithmetic, so the 29 photos' scores differ a little between the two: the
    quality tests keep a measured threshold for each (stop 29)."""
    return "bf16" if cpu_has_bf16() else "f32"


def missing(reason: str) -> None:
    """Fail under CI (where everything the project installs must be present), skip elsewhere,
    saying why."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def require_testdata() -> Path:
    """The licensed test photos' folder, or a skip saying where they were looked for."""
    if not (TESTDATA / "images").is_dir():
        pytest.skip(NO_TESTDATA)
    return TESTDATA


def require_removebg_spec() -> Path:
    if not REMOVEBG_SPEC.is_file():
        pytest.skip(NO_SPEC)
    return REMOVEBG_SPEC


def cc0_photo(name: str) -> Path:
    """One CC0 test photo by file name (for helpers outside fixtures)."""
    if not fetch_photos.present(PHOTOS):
        missing(f"the CC0 test photos are not in {PHOTOS}; `make test` fetches them "
                "(python -m tests.photos)")  # fmt: skip
    return PHOTOS / name


def cc0_jpeg(stem: str) -> Path:
    """A CC0 photo saved as a JPEG (quality 90), as phones and cameras deliver photos; made once
    beside the originals."""
    path = PHOTOS / "jpeg" / f"{stem}.jpg"
    if not path.is_file():
        source = next(p for p in PHOTOS.iterdir() if p.stem == stem and p.is_file())
        path.parent.mkdir(exist_ok=True)
        part = path.with_suffix(".part")
        with Image.open(cc0_photo(source.name)) as image:
            image.convert("RGB").save(part, "JPEG", quality=90)
        part.replace(path)
    return path


class Photos(list[Path]):
    """The colour CC0 photos, portrait first (astronaut, chelsea the cat, coffee, rocket);
    every photo by its stem with :meth:`named` (also camera, greyscale, and horse, RGBA)."""

    COLOUR = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")

    def __init__(self, folder: Path) -> None:
        super().__init__(folder / name for name in self.COLOUR)
        self.folder = folder

    def named(self, stem: str) -> Path:
        found = [p for p in self.folder.iterdir() if p.stem == stem]
        assert found, f"no test photo {stem!r} in {self.folder}"
        return found[0]


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    mask: Path
    kind: str  # "binary" or "alpha"


@pytest.fixture(scope="session")
def testdata() -> Path:
    return require_testdata()


@pytest.fixture(scope="session")
def photos() -> Photos:
    """The CC0 photos from the scikit-image wheel: what most tests run the model on."""
    cc0_photo(Photos.COLOUR[0])
    return Photos(PHOTOS)


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
def real_engine(model_settings: Settings) -> FusedEngine:
    """The product's default engine (INT8 ISNet fused with MODNet on the runtime `auto`
    picks), loaded once per test session."""
    for spec in required_models(model_settings):
        if not is_installed(spec, model_settings.model_dir):
            missing(
                f"model {spec.name} not installed in {model_settings.model_dir}; run `make install`"
            )
    for spec in required_models(model_settings):
        if int8_path(spec, model_settings.model_dir) is None:
            missing(f"the INT8 {spec.name} is not built; run `make install` (`models fetch`)")
    engine = local_engine(model_settings)
    assert isinstance(engine, FusedEngine)
    return engine


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


@dataclass(frozen=True)
class Evaluated:
    """One test photo through the product's engine, scored three ways against its truth."""

    sample: Sample
    bare: Score  # the main model's mask, bilinear to full size, nothing else
    today: Score  # the main model alone through the refinement (the pipeline before fusion)
    fused: Score  # the product: fused with MODNet, then refined
    confidence: float
    uncertain_share: float  # the baseline: share of the cut-out's alpha in (0.05, 0.95)


@pytest.fixture(scope="session")
def remembering_engine(real_engine: FusedEngine) -> FusedEngine:
    """The real engine, each forward pass run once per distinct input (tests/remembered.py):
    for the checks that score the same photos in several quality modes."""
    return remembering(real_engine)


@pytest.fixture(scope="session")
def web_engine(real_engine: FusedEngine) -> FusedEngine:
    """The real engine, each distinct photo's passes run once per session (tests/remembered.py),
    for the in-process web and API tests: they check views, storage and errors on the same few
    photos, not the model. Its own memory, so that they do not push out the quality photos'."""
    return remembering(real_engine, keep=32)


@pytest.fixture(scope="session")
def evaluated(remembering_engine: FusedEngine, samples: list[Sample]) -> list[Evaluated]:
    """Every test photo through the real engine (computed once, for quality and confidence)."""
    limits = Limits(max_bytes=50 * 2**20, max_pixels=50_000_000)
    results = []
    for sample in samples:
        photo = load_image(sample.image.read_bytes(), limits)
        image = model_input(photo)
        parts = remembering_engine.parts(image)
        alpha = full_alpha(photo, parts.fused)
        a = np.asarray(alpha, np.float32) / 255.0
        with Image.open(sample.mask) as truth:
            results.append(
                Evaluated(
                    sample,
                    bare=score(bare_alpha(parts.main, photo.size), truth),
                    today=score(full_alpha(photo, parts.main), truth),
                    fused=score(alpha, truth),
                    confidence=parts.confidence,
                    uncertain_share=float(np.mean((a > 0.05) & (a < 0.95))),
                )
            )
    return results


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End the run with how many tests were skipped and why, grouped by reason, so that a
    contributor sees what did not run (a fresh clone without ../shared skips the tests that
    need the licensed photos or remove.bg's spec)."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons = Counter(_skip_reason(report) for report in skipped)
    terminalreporter.section(f"{len(skipped)} skipped, and why")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:5d}  {reason}")


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")
