"""End to end in a real browser: Debian's Chromium driven by Playwright, against `cutout serve`.

The visits are in :mod:`tests.web.walkthrough`; they run here on real photos from
``../shared/testdata``. Every state is screenshotted into ``artifacts/screenshots/`` and checked
with axe-core (fetched from the npm registry by ``make test``; the report lands in
``artifacts/axe.json``). Without a Chromium or axe-core the tests skip, except under CI, where
they fail.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, Sample, missing
from tests.web.walkthrough import Photos, Report, run_visits

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "artifacts"
SHOTS = Path(os.environ.get("CUTOUT_SCREENSHOTS", ARTIFACTS / "screenshots"))


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert found is not None
    return found


def axe_script() -> Path:
    path = Path(os.environ.get("CUTOUT_AXE_JS", ROOT / "build" / "axe-core" / "axe.min.js"))
    if not path.is_file():
        missing(f"axe-core is not at {path} (`make axe` fetches it from the npm registry)")
    return path


def test_the_page_as_a_studio_with_and_without_script(
    tmp_path: Path, samples: list[Sample]
) -> None:
    """Several photos at once, paste, URL, before/after, the studio (view, backgrounds, brush,
    downloads), a phone's width, and the seed's form without JavaScript; axe on every state."""
    photos = {s.name: s.image for s in samples}
    broken = tmp_path / "holiday-notes.jpg"
    broken.write_bytes(b"these are notes, not a photo\n")
    visit = Photos(
        subject=photos["alphamatting_GT03"],
        others=(
            photos["coco_toaster08_000000232348"],
            photos["alphamatting_GT01"],
            photos["coco_vase00_000000262631"],
        ),
        broken=broken,
        pasted=photos["coco_cat07_000000094336"],
        from_url=photos["coco_fire-hydrant05_000000255718"],
        background=photos["berkeley_291000"],
    )
    report = Report()
    try:
        run_visits(chromium(), visit, SHOTS, tmp_path, axe=axe_script(), report=report)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        report.write(ARTIFACTS / "axe.json")
    assert report.axe, "axe ran on no state"
    print(f"\naxe on {len(report.axe)} states; measured: {report.measured}")
