"""End to end in a real browser: Debian's Chromium driven by Playwright, against `cutout serve`.

Each step leaves a screenshot in ``artifacts/screenshots/`` (the README's pictures come from
there). Without a Chromium the test skips, except under CI, where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect, sync_playwright

from tests.conftest import ROOT, Sample, missing
from tests.live import LiveServer

pytestmark = pytest.mark.browser

SHOTS = Path(os.environ.get("CUTOUT_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert path is not None
    return path


@pytest.fixture
def page(chromium: str, tmp_path: Path) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = browser.new_context(
            viewport={"width": 1200, "height": 900}, accept_downloads=True
        )
        yield context.new_page()
        context.close()
        browser.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def upload(page: Page, name: str, photo: Path) -> None:
    page.fill("#name", name)
    page.set_input_files("#image", str(photo))
    page.click("#submit")
    page.wait_for_load_state("load")


def test_upload_rename_download_delete_and_limit(
    page: Page, tmp_path: Path, samples: list[Sample]
) -> None:
    p = page
    photos = {s.name: s.image for s in samples}
    doll, flower, shoe = (
        photos["alphamatting_GT03"],
        photos["alphamatting_GT01"],
        photos["coco_toaster08_000000232348"],
    )
    with LiveServer(tmp_path / "data", {"USER_LIMIT": "2"}) as server:
        p.goto(server.url + "/")
        expect(p.locator("#empty-state")).to_be_visible()
        expect(p.locator("#quota")).to_contain_text("0 of 2 images used")
        shot(p, "01-home-empty")

        p.fill("#name", "Doll with red hair")
        p.set_input_files("#image", str(doll))
        expect(p.locator("#preview")).to_be_visible()
        shot(p, "02-upload-preview")
        p.click("#submit")
        expect(p.locator(".flash-success span")).to_have_text("Image generated successfully")
        card = p.locator(".record").first
        expect(card.locator(".record-name")).to_have_text("Doll with red hair")
        processed = card.locator("img.processed")
        expect(processed).to_be_visible()
        p.wait_for_function("document.querySelector('img.processed').naturalWidth > 0")
        expect(p.locator("#quota")).to_contain_text("1 of 2 images used")
        shot(p, "03-upload-success")

        expect(card.locator(".rename-form")).to_be_hidden()
        card.get_by_role("button", name="Rename").click()
        expect(card.locator(".record-name")).to_be_hidden()
        card.locator(".rename-form input").fill("Doll, studio shot")
        shot(p, "04-renaming")
        card.locator(".rename-form input").press("Enter")
        expect(card.locator(".record-name")).to_have_text("Doll, studio shot")
        p.reload()
        expect(p.locator(".record-name").first).to_have_text("Doll, studio shot")
        shot(p, "05-renamed")

        with p.expect_download() as info:
            p.locator(".record").first.get_by_role("link", name="Download PNG").click()
        download = info.value
        assert download.suggested_filename == "Doll, studio shot.png"
        saved = tmp_path / "download.png"
        download.save_as(saved)
        with Image.open(saved) as cutout, Image.open(doll) as original:
            assert cutout.mode == "RGBA" and cutout.size == original.size

        p.locator(".record").first.get_by_role("button", name="Delete").click()
        expect(p.locator("#confirm-delete")).to_be_visible()
        shot(p, "06-delete-confirm")
        p.locator("#confirm-yes").click()
        expect(p.locator(".record")).to_have_count(0)
        expect(p.locator("#empty-state")).to_be_visible()
        expect(p.locator("#quota")).to_contain_text("0 of 2 images used")
        p.reload()
        expect(p.locator(".record")).to_have_count(0)

        upload(p, "Gerbera", flower)
        upload(p, "Toaster", shoe)
        expect(p.locator(".record")).to_have_count(2)
        shot(p, "07-history")
        upload(p, "One too many", doll)
        expect(p.locator(".flash-danger span")).to_have_text(
            "Max limit reached. Please remove a record."
        )
        expect(p.locator(".record")).to_have_count(2)
        shot(p, "08-limit-reached")
