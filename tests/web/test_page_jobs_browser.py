"""A drop of more photos than the threshold goes as one batch job, in a real Chromium against
`cutout serve`: the same queue rows, driven by the job, and the cards in the history."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import Photos, missing
from tests.jobs.conftest import small_photos
from tests.live import LiveServer
from tests.web.walkthrough import browser_page

pytestmark = pytest.mark.browser


def test_a_large_drop_is_one_job_with_the_queue_view(tmp_path: Path, photos: Photos) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert chromium is not None
    folder = tmp_path / "drop"
    folder.mkdir()
    for name, data in small_photos(photos, 3):
        (folder / name).write_bytes(data)
    env = {"CUTOUT_PAGE_JOB_THRESHOLD": "2"}
    with LiveServer(tmp_path / "data", env) as server, browser_page(chromium) as page:
        problems: list[str] = []
        page.on("console", lambda m: problems.extend([m.text] if m.type == "error" else []))
        requests_seen: list[str] = []
        page.on("request", lambda r: requests_seen.append(f"{r.method} {r.url}"))
        page.goto(server.url + "/")
        page.set_input_files("#image", sorted(folder.iterdir()))
        page.click("#submit")
        expect(page.locator(".queue-item")).to_have_count(3)
        expect(page.locator(".queue-item[data-state=done]")).to_have_count(3, timeout=120_000)
        expect(page.locator("#queue-summary")).to_have_text("All 3 images generated successfully")
        expect(page.locator(".record")).to_have_count(3, timeout=20_000)
        page.screenshot(path=str(tmp_path.parent / "page-job.png"), full_page=True)
        posts = [r for r in requests_seen if r.startswith("POST ")]
        assert posts == [f"POST {server.url}/jobs"]  # one request for the three photos
        assert problems == [], problems
