"""End to end in a real browser: Debian's Chromium driven by Playwright, against `cutout serve`.

The visit itself is in :mod:`tests.web.walkthrough`. Each step leaves a screenshot in
``artifacts/screenshots/`` (look at them after a run). Without a Chromium the test skips,
except under CI, where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT, Sample, missing
from tests.live import LiveServer
from tests.web.walkthrough import Photos, browser_page, walkthrough

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("CUTOUT_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))


def test_upload_rename_download_delete_and_limit(tmp_path: Path, samples: list[Sample]) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert chromium is not None
    photos = {s.name: s.image for s in samples}
    visit = Photos(
        ("Doll with red hair", photos["alphamatting_GT03"]),
        ("Gerbera", photos["alphamatting_GT01"]),
        ("Toaster", photos["coco_toaster08_000000232348"]),
    )
    with (
        LiveServer(tmp_path / "data", {"USER_LIMIT": "2"}) as server,
        browser_page(chromium) as page,
    ):
        walkthrough(page, server.url, visit, SHOTS, tmp_path)
