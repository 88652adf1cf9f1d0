"""A person's whole visit, in a real Chromium: upload, see the cut-out, rename, download,
delete, fill the quota. Asserts every step and screenshots it.

Two callers: the browser test (with real photos from ../shared/testdata; screenshots go to
``artifacts/``, never into the repository, because those photos are research-use only) and
``python -m tests.web.walkthrough`` which runs the same visit with generated, licence-free
pictures to make the README's screenshots in ``docs/screenshots/``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from playwright.sync_api import Page, expect, sync_playwright

from tests.live import LiveServer

SUBMIT_AND_READ_STATE = """() => {
  const button = document.getElementById("submit");
  button.click();
  return {progress: !document.getElementById("progress").hidden, disabled: button.disabled,
          busy: document.getElementById("upload-form").getAttribute("aria-busy")};
}"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class Photos:
    """Three photos: the first is renamed, downloaded and deleted; the others fill the quota."""

    first: tuple[str, Path]
    second: tuple[str, Path]
    third: tuple[str, Path]


@contextmanager
def browser_page(chromium: str) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = browser.new_context(
            viewport={"width": 1200, "height": 900}, accept_downloads=True
        )
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def walkthrough(page: Page, url: str, photos: Photos, shots: Path, downloads: Path) -> None:
    """The visit, against a server with USER_LIMIT=2."""
    shots.mkdir(parents=True, exist_ok=True)

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    page.goto(url + "/")
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#quota")).to_contain_text("0 of 2 images used")
    shot("01-home-empty")

    name, path = photos.first
    page.fill("#name", name)
    page.set_input_files("#image", str(path))
    expect(page.locator("#preview")).to_be_visible()
    shot("02-upload-preview")
    # Clicked from script, which returns before the next page loads (the model takes about a
    # second): the page must say it is working, and refuse a second submit meanwhile.
    state = page.evaluate(SUBMIT_AND_READ_STATE)
    assert state == {"progress": True, "disabled": True, "busy": "true"}, state
    expect(page.locator(".flash-success span")).to_have_text("Image generated successfully")
    card = page.locator(".record").first
    expect(card.locator(".record-name")).to_have_text(name)
    expect(card.locator("img.processed")).to_be_visible()
    page.wait_for_function("document.querySelector('img.processed').naturalWidth > 0")
    expect(page.locator("#quota")).to_contain_text("1 of 2 images used")
    shot("03-upload-success")

    renamed = f"{name} (final)"
    expect(card.locator(".rename-form")).to_be_hidden()
    card.get_by_role("button", name="Rename").click()
    expect(card.locator(".record-name")).to_be_hidden()
    card.locator(".rename-form input").fill(renamed)
    shot("04-renaming")
    card.locator(".rename-form input").press("Enter")
    expect(card.locator(".record-name")).to_have_text(renamed)
    page.reload()
    expect(page.locator(".record-name").first).to_have_text(renamed)

    with page.expect_download() as info:
        page.locator(".record").first.get_by_role("link", name="Download PNG").click()
    assert info.value.suggested_filename == f"{renamed}.png"
    saved = downloads / "download.png"
    info.value.save_as(saved)
    with Image.open(saved) as cutout, Image.open(path) as original:
        assert cutout.mode == "RGBA" and cutout.size == original.size

    page.locator(".record").first.get_by_role("button", name="Delete").click()
    expect(page.locator("#confirm-delete")).to_be_visible()
    shot("05-delete-confirm")
    page.locator("#confirm-yes").click()
    expect(page.locator(".record")).to_have_count(0)
    expect(page.locator("#empty-state")).to_be_visible()
    expect(page.locator("#quota")).to_contain_text("0 of 2 images used")
    page.reload()
    expect(page.locator(".record")).to_have_count(0)

    for name, path in (photos.second, photos.third):
        upload(page, name, path)
    expect(page.locator(".record")).to_have_count(2)
    shot("06-history")
    upload(page, "One too many", photos.first[1])
    expect(page.locator(".flash-danger span")).to_have_text(
        "Max limit reached. Please remove a record."
    )
    expect(page.locator(".record")).to_have_count(2)
    shot("07-limit-reached")


def upload(page: Page, name: str, photo: Path) -> None:
    page.fill("#name", name)
    page.set_input_files("#image", str(photo))
    page.click("#submit")
    page.wait_for_load_state("load")


# -- licence-free pictures for the README -----------------------------------------------------


def _backdrop(
    size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int], seed: int
) -> Image.Image:
    width, height = size
    y = np.linspace(0, 1, height)[:, None, None]
    pixels = (np.array(top) * (1 - y) + np.array(bottom) * y) * np.ones((1, width, 1))
    pixels += np.random.default_rng(seed).normal(0, 3, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def mug_photo() -> Image.Image:
    """A blue mug on a wooden table, with a shadow: a generated product shot."""
    size = (1200, 900)
    image = _backdrop(size, (214, 222, 230), (150, 128, 104), 1)
    table = Image.new("L", size, 0)
    ImageDraw.Draw(table).rectangle((0, 558, 1200, 900), fill=255)
    image = Image.composite(_backdrop(size, (170, 120, 80), (120, 80, 50), 2), image, table)
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse((380, 640, 860, 720), fill=150)
    image = Image.composite(
        Image.new("RGB", size, (60, 45, 35)), image, shadow.filter(ImageFilter.GaussianBlur(18))
    )
    body = Image.new("L", size, 0)
    draw = ImageDraw.Draw(body)
    draw.rounded_rectangle((420, 300, 760, 690), radius=40, fill=255)
    draw.ellipse((700, 380, 880, 600), fill=255)
    draw.ellipse((740, 430, 830, 550), fill=0)
    x = np.linspace(0, 1, size[0])[None, :, None]
    shade = np.array([30, 110, 200]) * (0.55 + 0.6 * np.sin(np.pi * (x - 0.25).clip(0, 1) * 1.2))
    colour = Image.fromarray((shade.clip(0, 255) * np.ones((size[1], 1, 1))).astype(np.uint8))
    image = Image.composite(colour, image, body.filter(ImageFilter.GaussianBlur(1.2)))
    rim = Image.new("L", size, 0)
    ImageDraw.Draw(rim).ellipse((420, 285, 760, 330), fill=255)
    return Image.composite(
        Image.new("RGB", size, (235, 240, 245)), image, rim.filter(ImageFilter.GaussianBlur(1))
    )


def plant_photo() -> Image.Image:
    """A potted plant against a wall: thin stems and many leaves."""
    image = _backdrop((900, 1200), (238, 232, 220), (205, 196, 180), 3)
    draw = ImageDraw.Draw(image)
    rng = np.random.default_rng(4)
    for _ in range(40):
        angle, reach = rng.uniform(-2.6, -0.5), rng.uniform(150, 380)
        x, y = 450 + reach * np.cos(angle), 620 + reach * np.sin(angle)
        draw.line((450, 640, x, y), fill=(40, 90, 40), width=5)
        green = (int(rng.uniform(40, 90)), int(rng.uniform(120, 170)), 60)
        draw.ellipse((x - 48, y - 22, x + 48, y + 22), fill=green)
    draw.polygon([(300, 640), (600, 640), (560, 960), (340, 960)], fill=(190, 90, 60))
    draw.rectangle((290, 620, 610, 670), fill=(205, 105, 70))
    return image.filter(ImageFilter.GaussianBlur(0.8))


def main(out: Path) -> None:
    """Make the README screenshots: ``python -m tests.web.walkthrough [docs/screenshots]``."""
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("Debian's chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mug, plant = folder / "mug.jpg", folder / "plant.jpg"
        mug_photo().save(mug, quality=92)
        plant_photo().save(plant, quality=92)
        photos = Photos(("Blue mug", mug), ("Potted plant", plant), ("Blue mug, again", mug))
        with (
            LiveServer(folder / "data", {"USER_LIMIT": "2"}) as server,
            browser_page(chromium) as page,
        ):
            walkthrough(page, server.url, photos, out, folder)
    print(f"screenshots written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
