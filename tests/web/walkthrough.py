"""People's visits, in a real Chromium: every step asserted, screenshotted and checked by axe.

Two callers: the browser tests (real photos from ../shared/testdata; screenshots and the axe
report go to ``artifacts/``, never into the repository, because those photos are research-use
only) and ``python -m tests.web.walkthrough [docs/screenshots]``, which runs the same visits on
generated, licence-free pictures to make the README's screenshots.

The visits, against one server with ``USER_LIMIT=3`` that may fetch from 127.0.0.1:

* :meth:`Visit.studio_visit`, JavaScript on: several photos dropped at once (one broken, one
  over the limit), the before/after slider from the keyboard, rename and delete, a pasted
  image, image URLs, then the studio on one record: zoom and pan, backdrops, backgrounds
  (colour, picture, blur) checked in the downloaded files, the brush (erase, undo/redo,
  restore from the keyboard, reset) checked in the downloaded alpha, every download option,
  and the page at a 375 px phone width;
* :meth:`Visit.no_script_visit`, JavaScript off: the seed's form and flash messages.
"""

from __future__ import annotations

import base64
import io
import json
import mimetypes
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    ViewportSize,
    expect,
    sync_playwright,
)

from tests.helpers import LocalServer
from tests.live import LiveServer

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
USER_LIMIT = 3
LIMIT_MESSAGE = "Max limit reached. Please remove a record."
SUCCESS = "Image generated successfully"
NOT_AN_IMAGE = "The file is not an image we can read"
PHONE: ViewportSize = {"width": 375, "height": 812}
AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ["violations"]});
  return result.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
                                        nodes: v.nodes.map((n) => n.target.join(" "))}));
}"""


@dataclass(frozen=True)
class Photos:
    """The pictures of a visit. File names become record names, so they are part of the test."""

    subject: Path  # the studio works on this one: a clear subject in the middle
    others: tuple[Path, Path, Path]  # dropped with it; the last one does not fit the limit
    broken: Path  # not an image at all
    pasted: Path  # put on the clipboard (as PNG) and pasted
    from_url: Path  # served over HTTP for the URL field
    background: Path  # the picture put behind the subject


@dataclass
class Report:
    """What a visit found: axe violations by page state, and console trouble."""

    axe: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        found = {"axe": self.axe, "problems": self.problems, "measured": self.measured}
        path.write_text(json.dumps(found, indent=1))


@contextmanager
def chromium(executable: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def browser_page(executable: str) -> Iterator[Page]:
    """One page in a fresh context (1200x900, downloads allowed), for short browser tests."""
    with chromium(executable) as browser:
        context = browser.new_context(
            viewport={"width": 1200, "height": 900}, accept_downloads=True
        )
        try:
            yield context.new_page()
        finally:
            context.close()


@contextmanager
def photo_server(photo: Path) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 with *photo* at ``/photos/<name>``; yields its URL."""
    data = photo.read_bytes()
    kind = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
    path = f"/photos/{quote(photo.name)}"
    routes = {("GET", path): lambda _h, _b: (200, {"Content-Type": kind}, data)}
    with LocalServer(routes) as server:
        yield server.url + path


class Visit:
    """One browser context on the server, with the checks every step shares."""

    def __init__(
        self,
        browser: Browser,
        url: str,
        shots: Path,
        downloads: Path,
        report: Report,
        *,
        axe: Path | None,
        javascript: bool = True,
        viewport: ViewportSize | None = None,
        storage_state: Any = None,
    ) -> None:
        self.url, self.shots, self.downloads, self.report = url, shots, downloads, report
        self.javascript = javascript
        shots.mkdir(parents=True, exist_ok=True)
        downloads.mkdir(parents=True, exist_ok=True)
        self.context: BrowserContext = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 900},
            accept_downloads=True,
            java_script_enabled=javascript,
            storage_state=storage_state,
            has_touch=viewport == PHONE,
            is_mobile=viewport == PHONE,
        )
        # axe is a script: with JavaScript off it cannot run (and the markup is the same page's,
        # checked with JavaScript on), so those states get screenshots only.
        self.axe = axe is not None and javascript
        if axe is not None and javascript:
            # An init script arrives through the DevTools protocol, so the page's CSP (which
            # forbids inline and foreign scripts) does not block it, and nothing is weakened.
            self.context.add_init_script(path=str(axe))
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: report.problems.append(f"page error: {exc}"))

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.report.problems.append(f"CSP: {message.text}")

    def close(self) -> None:
        self.context.close()

    # -- shared checks ----------------------------------------------------------------------

    def shot(self, name: str, *, full_page: bool = True) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=full_page)

    def check(self, state: str, shot: str | None = None, *, full_page: bool = True) -> None:
        """Screenshot *state* and run axe on it: no serious or critical violations."""
        if shot and self.javascript:  # pictures loaded, as a person would see them
            self.page.wait_for_function(
                "() => [...document.images].every(i => i.loading === 'lazy' || i.complete)"
            )
        elif shot:  # no script to ask with: the load event comes after the (eager) images
            self.page.wait_for_load_state("load")
        if shot:
            self.shot(shot, full_page=full_page)
        assert not self.report.problems, self.report.problems
        if not self.axe:
            return
        violations = self.page.evaluate(AXE_RUN)
        self.report.axe[state] = violations
        bad = [v for v in violations if v["impact"] in ("serious", "critical")]
        assert not bad, f"axe, {state}: {json.dumps(bad, indent=1)}"

    def no_horizontal_scroll(self) -> None:
        widths = self.page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]"
        )
        assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"

    def download(self, trigger: Locator, name: str) -> Path:
        with self.page.expect_download() as info:
            trigger.click()
        saved = self.downloads / name
        info.value.save_as(saved)
        assert info.value.suggested_filename == name, info.value.suggested_filename
        return saved

    def card(self, name: str) -> Locator:
        return self.page.locator(".record").filter(
            has=self.page.locator(".record-name", has_text=re.compile(f"^{re.escape(name)}$"))
        )

    # -- getting photos in --------------------------------------------------------------------

    def drop(self, paths: list[Path]) -> None:
        """Drop *paths* on the drop zone, as a file manager would (a real DataTransfer)."""
        files = [
            {
                "name": p.name,
                "type": mimetypes.guess_type(p.name)[0] or "application/octet-stream",
                "data": base64.b64encode(p.read_bytes()).decode(),
            }
            for p in paths
        ]
        self.page.evaluate(
            """(files) => {
              const transfer = new DataTransfer();
              for (const f of files) {
                const bytes = Uint8Array.from(atob(f.data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], f.name, {type: f.type}));
              }
              const zone = document.getElementById("dropzone");
              for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true,
                                                        dataTransfer: transfer}));
              }
            }""",
            files,
        )

    def wait_for_queue(self, count: int) -> None:
        expect(self.page.locator(".queue-item")).to_have_count(count)
        finished = ".queue-item[data-state=done], .queue-item[data-state=failed]"
        expect(self.page.locator(finished)).to_have_count(count, timeout=120_000)

    def queue_item(self, label: str) -> Locator:
        return self.page.locator(".queue-item").filter(
            has=self.page.locator(".queue-name", has_text=label)
        )

    # -- the visits ---------------------------------------------------------------------------

    def studio_visit(self, photos: Photos, photo_url: str) -> None:
        self.home()
        self.drop_several(photos)
        self.compare_by_keyboard(photos.subject.stem)
        self.rename_and_delete(photos)
        self.paste(photos.pasted)
        self.from_url(photo_url, photos.from_url.stem)
        studio = StudioSteps(self, photos.subject)
        studio.open_and_view()
        studio.backgrounds(photos.background)
        studio.touch_up()
        studio.downloads()
        self.page.keyboard.press("Escape")
        expect(self.page.locator("#studio")).to_be_hidden()

    def home(self) -> None:
        self.page.goto(self.url + "/")
        expect(self.page.locator("#empty-state")).to_be_visible()
        expect(self.page.locator("#quota")).to_contain_text(f"0 of {USER_LIMIT} images used")
        expect(self.page.locator("#image-label")).to_have_text("Photos")
        self.check("home, empty", "01-home")

    def drop_several(self, photos: Photos) -> None:
        """Five files at once: one is not an image, the fourth photo does not fit the limit."""
        subject, first, second, third = photos.subject, *photos.others
        self.drop([subject, photos.broken, first, second, third])
        expect(self.page.locator("#dropzone-text")).to_contain_text("5 photos chosen")
        expect(self.page.locator("#submit")).to_have_text(re.compile("Remove 5 backgrounds"))
        self.check("five photos chosen", "02-photos-chosen")
        self.page.click("#submit")
        expect(self.page.locator(".queue-item[data-state=processing]").first).to_be_visible()
        self.shot("03-queue-running")
        self.wait_for_queue(5)
        for done in (subject, first, second):
            expect(self.queue_item(done.name)).to_have_attribute("data-state", "done")
        broken = self.queue_item(photos.broken.name)
        expect(broken).to_have_attribute("data-state", "failed")
        expect(broken.locator(".queue-reason")).to_contain_text(NOT_AN_IMAGE)
        over = self.queue_item(third.name)
        expect(over).to_have_attribute("data-state", "failed")
        expect(over.locator(".queue-reason")).to_have_text(LIMIT_MESSAGE)
        expect(self.page.locator("#queue-summary")).to_have_text(
            "3 of 5 images generated successfully; 2 failed (see below)."
        )
        assert self.page.eval_on_selector("#queue-progress", "p => [p.value, p.max]") == [5, 5]
        expect(self.page.locator(".record")).to_have_count(3)
        for done in (subject, first, second):  # each named after its file
            expect(self.card(done.stem)).to_have_count(1)
        expect(self.page.locator("#quota")).to_contain_text(f"3 of {USER_LIMIT} images used")
        self.check("queue finished, with failures", "04-queue-done")

    def compare_by_keyboard(self, name: str) -> None:
        """The before/after slider: a real range input, moved with the keyboard."""
        card = self.card(name)
        pair, slider = card.locator(".pair"), card.locator(".compare-range")
        expect(slider).to_have_accessible_name(f"Before and after: {name}")
        slider.focus()
        position = "p => getComputedStyle(p).getPropertyValue('--pos').trim()"
        for key, value in (("End", "100"), ("Home", "0"), ("ArrowRight", "1"), ("ArrowRight", "2")):
            slider.press(key)
            expect(slider).to_have_value(value)
            assert pair.evaluate(position) == f"{value}%"
        expect(slider).to_have_attribute("aria-valuetext", "2% original, 98% cut-out")
        for _ in range(3):
            slider.press("PageUp")
        assert int(slider.input_value()) > 20
        # With the mouse: a press anywhere on the picture moves the divide there.
        box = pair.bounding_box()
        assert box is not None
        self.page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + box["height"] / 2)
        assert abs(int(slider.input_value()) - 25) <= 3, slider.input_value()
        # The history shows thumbnails, not the full-size images.
        for img in card.locator("img").all():
            assert "/thumbnail/" in (img.get_attribute("src") or "")
            assert img.evaluate("i => i.complete && i.naturalWidth > 0 && i.naturalWidth <= 640")
        self.check("history with before/after sliders", "05-history-compare")

    def rename_and_delete(self, photos: Photos) -> None:
        first, second = photos.others[0].stem, photos.others[1].stem
        card = self.card(first)
        card.get_by_role("button", name="Rename").click()
        card.locator(".rename-form input").fill(f"{first} (renamed)")
        self.check("renaming in place", "06-renaming")
        card.locator(".rename-form input").press("Enter")
        expect(self.card(f"{first} (renamed)")).to_have_count(1)
        self.page.reload()
        expect(self.card(f"{first} (renamed)")).to_have_count(1)
        for name in (f"{first} (renamed)", second):
            self.card(name).get_by_role("button", name="Delete").click()
            expect(self.page.locator("#confirm-delete")).to_be_visible()
            if name == second:
                self.check("delete confirmation", "07-delete-confirm")
            self.page.locator("#confirm-yes").click()
            expect(self.card(name)).to_have_count(0)
        expect(self.page.locator(".record")).to_have_count(1)
        expect(self.page.locator("#quota")).to_contain_text(f"1 of {USER_LIMIT} images used")

    def paste(self, photo: Path) -> None:
        """A real Ctrl+V with an image on the clipboard, the focus nowhere in particular."""
        buffer = io.BytesIO()
        with Image.open(photo) as image:
            image.convert("RGB").save(buffer, "PNG")  # the async clipboard carries PNG only
        self.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.url)
        self.page.evaluate(
            """async (data) => {
              const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
              const blob = new Blob([bytes], {type: "image/png"});
              await navigator.clipboard.write([new ClipboardItem({"image/png": blob})]);
              document.activeElement?.blur();
            }""",
            base64.b64encode(buffer.getvalue()).decode(),
        )
        self.page.keyboard.press("Control+V")
        item = self.page.locator(".queue-item").last
        expect(item.locator(".queue-name")).to_contain_text("Pasted image")
        expect(item).to_have_attribute("data-state", "done", timeout=120_000)
        expect(self.page.locator(".record .record-name").first).to_contain_text("Pasted image")
        expect(self.page.locator("#quota")).to_contain_text(f"2 of {USER_LIMIT} images used")
        self.check("pasted image done", "08-pasted")

    def from_url(self, url: str, name: str) -> None:
        """A private address is refused with the reason; a reachable image becomes a record."""
        for address in ("http://10.1.2.3/photo.jpg", url):
            self.page.fill("#image-url", address)
            self.page.click("#url-submit")
            expect(self.queue_item(address)).not_to_have_attribute(
                "data-state", re.compile("waiting|processing"), timeout=120_000
            )
        refused = self.queue_item("http://10.1.2.3/photo.jpg")
        expect(refused).to_have_attribute("data-state", "failed")
        expect(refused.locator(".queue-reason")).to_contain_text("private or reserved address")
        expect(self.queue_item(url)).to_have_attribute("data-state", "done")
        expect(self.card(name)).to_have_count(1)
        expect(self.page.locator("#quota")).to_contain_text(f"3 of {USER_LIMIT} images used")
        self.check("image URLs: one refused, one done", "09-from-url")

    def touch_drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """A finger on the screen (real touch events, through the DevTools protocol)."""
        cdp = self.context.new_cdp_session(self.page)
        steps = [start] + [
            (start[0] + (end[0] - start[0]) * i / 8, start[1] + (end[1] - start[1]) * i / 8)
            for i in range(1, 9)
        ]
        for i, (x, y) in enumerate(steps):
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()

    def pinch(self, centre: tuple[float, float], start: float, end: float) -> None:
        """Two fingers moving apart horizontally from *start* to *end* px between them."""
        cdp = self.context.new_cdp_session(self.page)
        x, y = centre
        for i in range(9):
            half = (start + (end - start) * i / 8) / 2
            points = [{"x": x - half, "y": y, "id": 1}, {"x": x + half, "y": y, "id": 2}]
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": points})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        cdp.detach()

    def phone(self) -> None:
        """The same history at 375 px: everything fits, nothing scrolls sideways; touch works."""
        self.page.goto(self.url + "/")
        expect(self.page.locator(".record").first).to_be_visible()
        self.no_horizontal_scroll()
        self.check("phone: home", "30-phone-home")
        card = self.page.locator(".record").first
        card.scroll_into_view_if_needed()
        box = card.locator(".pair").bounding_box()
        assert box is not None
        middle = box["y"] + box["height"] / 2
        self.touch_drag(
            (box["x"] + box["width"] / 2, middle), (box["x"] + 0.85 * box["width"], middle)
        )
        assert int(card.locator(".compare-range").input_value()) >= 75
        card.get_by_role("button", name="Edit & export").click()
        expect(self.page.locator("#studio")).to_be_visible()
        expect(self.page.locator("#zoom-level")).not_to_have_text("100%")
        stage = self.page.locator("#stage").bounding_box()
        assert stage is not None
        transform = "() => document.getElementById('stage-content').style.transform"
        before = self.page.evaluate(transform)
        centre = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
        self.touch_drag(centre, (centre[0] - 60, centre[1] + 30))  # a finger pans the view
        assert self.page.evaluate(transform) != before
        zoom = self.page.locator("#zoom-level").inner_text()
        self.pinch(centre, 40, 120)  # two fingers apart: zoom in
        assert int(self.page.locator("#zoom-level").inner_text().rstrip("%")) > int(zoom[:-1])
        self.page.get_by_role("button", name="Fit").click()
        self.no_horizontal_scroll()
        assert self.page.evaluate(
            "() => { const d = document.getElementById('studio').getBoundingClientRect();"
            " return d.left >= 0 && d.right <= window.innerWidth; }"
        )
        self.check("phone: studio", "31-phone-studio", full_page=False)
        self.page.locator("#download-button").scroll_into_view_if_needed()
        self.check("phone: studio, download options", "32-phone-studio-options", full_page=False)

    def no_script_visit(self, photo: Path, photo_url: str) -> None:
        """JavaScript off: the seed's form posts one photo and comes back with a flash."""
        self.page.goto(self.url + "/")
        expect(self.page.locator("#image-label")).to_have_text("Photo")
        expect(self.page.locator("#name")).to_have_attribute("required", "")
        self.page.fill("#name", "Without script")
        self.page.set_input_files("#image", str(photo))
        self.page.click("#submit")
        expect(self.page.locator(".flash-success span")).to_have_text(SUCCESS)
        expect(self.card("Without script")).to_have_count(1)
        self.check("no script: upload done", "40-no-script-upload")
        self.page.fill("#image-url", photo_url)
        self.page.click("#url-submit")
        expect(self.page.locator(".flash-success span")).to_have_text(SUCCESS)
        self.page.fill("#image-url", "http://10.1.2.3/photo.jpg")
        self.page.click("#url-submit")
        expect(self.page.locator(".flash-danger span")).to_contain_text("private or reserved")
        self.page.fill("#name", "Third")
        self.page.set_input_files("#image", str(photo))
        self.page.click("#submit")
        expect(self.page.locator(".flash-success span")).to_have_text(SUCCESS)
        self.page.fill("#name", "One too many")
        self.page.set_input_files("#image", str(photo))
        self.page.click("#submit")
        expect(self.page.locator(".flash-danger span")).to_have_text(LIMIT_MESSAGE)
        expect(self.page.locator(".record")).to_have_count(USER_LIMIT)
        self.check("no script: limit reached", "41-no-script-limit")


class StudioSteps:
    """The studio on one record: view, backgrounds, brush, downloads (all checked in files)."""

    def __init__(self, visit: Visit, subject: Path) -> None:
        self.visit, self.page = visit, visit.page
        self.name = subject.stem
        with Image.open(subject) as image:
            self.size = ImageOps.exif_transpose(image).size
        self.model_alpha: np.ndarray | None = None

    def choose(self, group: str, label: str) -> None:
        self.page.locator("#studio fieldset").filter(
            has=self.page.locator("legend", has_text=group)
        ).get_by_label(label, exact=True).check()

    def image_point(self, fx: float, fy: float) -> tuple[float, float]:
        left, top, width, height = self.page.evaluate(
            "() => { const r = document.getElementById('stage-content').getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; }"
        )
        return left + fx * width, top + fy * height

    def export(self, extension: str, *, suffix: str = "") -> Image.Image:
        path = self.visit.download(
            self.page.locator("#download-button"), f"{self.name}{suffix}{extension}"
        )
        with Image.open(path) as image:
            image.load()
            return image

    def open_and_view(self) -> None:
        card = self.visit.card(self.name)
        card.get_by_role("button", name="Edit & export").focus()
        self.page.keyboard.press("Enter")  # from the keyboard, like everything here
        studio = self.page.locator("#studio")
        expect(studio).to_be_visible()
        expect(self.page.locator("#studio-name")).to_have_text(self.name)
        assert self.page.evaluate("() => document.activeElement.id") == "stage"
        width, height = self.size
        expect(self.page.locator("#studio-status")).to_have_text(f"{width} \u00d7 {height} px")
        fitted = self.page.locator("#zoom-level").inner_text()
        self.visit.check("studio open", "10-studio", full_page=False)
        transform = "() => document.getElementById('stage-content').style.transform"
        before = self.page.evaluate(transform)
        for key in ("+", "+", "ArrowLeft", "ArrowUp"):
            self.page.keyboard.press(key)
        assert int(self.page.locator("#zoom-level").inner_text().rstrip("%")) > int(
            fitted.rstrip("%")
        )
        assert self.page.evaluate(transform) != before
        self.choose("View on", "Black")
        expect(self.page.locator("#stage")).to_have_class(re.compile("backdrop-black"))
        self.visit.check("studio zoomed, on black", "11-studio-zoom-black", full_page=False)
        self.page.locator("#stage").press("0")
        expect(self.page.locator("#zoom-level")).to_have_text(fitted)
        self.page.get_by_role("button", name="Show original").click()
        expect(self.page.locator("#stage-original")).to_be_visible()
        self.page.get_by_role("button", name="Show original").click()
        expect(self.page.locator("#stage-original")).to_be_hidden()
        self.choose("View on", "Checkerboard")
        # The transparent PNG: full size, with the model's alpha (the reference for later).
        png = self.export(".png")
        assert png.mode == "RGBA" and png.size == self.size
        self.model_alpha = np.asarray(png.getchannel("A"))

    def corners(self) -> list[tuple[int, int]]:
        """Corner pixels (6 px in) that the model left fully transparent."""
        assert self.model_alpha is not None
        w, h = self.size
        points = [(6, 6), (w - 7, 6), (6, h - 7), (w - 7, h - 7)]
        found = [p for p in points if self.model_alpha[p[1], p[0]] == 0]
        assert found, "the subject photo needs a background corner"
        return found

    def backgrounds(self, picture: Path) -> None:
        page = self.page
        self.choose("Background", "Colour")
        page.get_by_role("button", name="Yellow").click()
        expect(page.get_by_role("button", name="Yellow")).to_have_attribute("aria-pressed", "true")
        layer = page.locator("#bg-layer")
        expect(layer).to_be_visible()
        assert layer.evaluate("l => getComputedStyle(l).backgroundColor") == "rgb(255, 213, 79)"
        self.visit.check("background: colour", "12-background-colour", full_page=False)
        self.choose("Download", "JPEG")
        jpeg = self.export(".jpg")
        assert jpeg.mode == "RGB" and jpeg.size == self.size  # no alpha in a JPEG
        for x, y in self.corners():
            pixel = np.asarray(jpeg, np.int16)[y, x]
            assert np.abs(pixel - (255, 213, 79)).max() <= 8, pixel

        self.choose("Background", "Picture")
        page.set_input_files("#bg-file", str(picture))
        expect(page.locator("#bg-picture")).to_be_visible()
        self.visit.check("background: picture", "13-background-picture", full_page=False)
        self.choose("Download", "PNG")
        flat = self.export(".png")
        assert flat.mode == "RGB" and flat.size == self.size
        with Image.open(picture) as bg:  # "cover": scaled to fill, centred, overflow cut off
            expected = ImageOps.fit(bg.convert("RGB"), self.size, Image.Resampling.LANCZOS)
        for x, y in self.corners():
            got = np.asarray(flat.crop((x - 3, y - 3, x + 4, y + 4)), np.float32).mean((0, 1))
            want = np.asarray(expected.crop((x - 3, y - 3, x + 4, y + 4)), np.float32).mean((0, 1))
            assert np.abs(got - want).max() <= 12, (got, want)

        self.choose("Background", "Blurred photo")
        expect(page.locator("#bg-blur")).to_be_visible()
        self.visit.check("background: blurred photo", "14-background-blur", full_page=False)
        self.choose("Download", "WebP")
        blurred = self.export(".webp")
        assert blurred.size == self.size
        assert blurred.mode == "RGB" or np.asarray(blurred.getchannel("A")).min() == 255
        # The live preview is the server's blur: compare them where the background shows.
        shown = page.locator("#bg-blur").evaluate("c => c.toDataURL('image/png')")
        with Image.open(io.BytesIO(base64.b64decode(shown.split(",")[1]))) as small:
            preview = small.convert("RGB").resize(self.size, Image.Resampling.BILINEAR)
        background = self.model_alpha == 0
        difference = np.abs(np.asarray(preview, np.float32) - np.asarray(blurred.convert("RGB")))
        gap = float(difference[background].mean())
        self.visit.report.measured["blur preview vs download, mean abs difference"] = gap
        assert gap < 6, gap
        self.choose("Background", "None")
        expect(layer).to_be_hidden()

    def stroke(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        x0, y0 = self.image_point(*start)
        x1, y1 = self.image_point(*end)
        self.page.mouse.move(x0, y0)
        self.page.mouse.down()
        self.page.mouse.move(x1, y1, steps=12)
        self.page.mouse.up()

    def alpha_at(self, image: Image.Image, fx: float, fy: float) -> int:
        w, h = image.size
        return int(np.asarray(image.getchannel("A"))[int(fy * h), int(fx * w)])

    def touch_up(self) -> None:
        page, model = self.page, self.model_alpha
        assert model is not None
        w, h = self.size
        centre, top = (0.5, 0.5), (0.5, 0.4)
        for fx, fy in (centre, top):
            assert model[int(fy * h), int(fx * w)] > 200, "the subject must cover these points"
        page.get_by_role("button", name="Use the brush").click()
        expect(page.locator("#brush-canvas")).to_be_visible()
        self.choose("Touch-up", "Erase")
        set_range(page.locator("#brush-size"), 60)
        set_range(page.locator("#brush-softness"), 0)
        self.stroke((0.42, 0.5), (0.58, 0.5))
        self.stroke((0.45, 0.4), (0.55, 0.4))
        expect(page.locator("#brush-undo")).to_be_enabled()
        self.visit.check("brush: two strokes", "15-brush", full_page=False)
        page.locator("#brush-undo").click()  # the second stroke goes...
        expect(page.locator("#brush-redo")).to_be_enabled()
        page.locator("#brush-redo").click()  # ...comes back...
        page.locator("#brush-undo").click()  # ...and goes again: only the first is saved
        page.locator("#brush-save").click()
        expect(page.locator("#studio-status")).to_have_text("Touch-up saved.")
        expect(self.visit.card(self.name).locator(".badge-edited")).to_have_text("Edited")
        self.choose("Download", "PNG")
        erased = self.export(".png")
        assert self.alpha_at(erased, *centre) == 0
        assert self.alpha_at(erased, 0.45, 0.5) == 0
        assert self.alpha_at(erased, *top) == model[int(top[1] * h), int(top[0] * w)]
        assert (np.asarray(erased.getchannel("A")) != model).mean() < 0.2  # only the stroke

        # Restore, from the keyboard: the brush starts at the centre; Space starts and ends.
        page.get_by_role("button", name="Stop brushing").click()
        page.get_by_role("button", name="Use the brush").click()
        self.choose("Touch-up", "Restore")
        page.locator("#stage").focus()
        for key in ("Space", "ArrowLeft", "ArrowRight", "ArrowRight", "Space"):
            page.keyboard.press(key)
        page.locator("#brush-save").click()
        expect(page.locator("#studio-status")).to_have_text("Touch-up saved.")
        restored = self.export(".png")
        assert self.alpha_at(restored, *centre) == 255
        assert self.alpha_at(restored, 0.4, 0.5) == 0  # outside the restore brush: still erased
        self.visit.check("brush: restored, saved", "16-brush-restored", full_page=False)

        page.get_by_role("button", name="Reset to the model's result").click()
        expect(page.locator("#studio-status")).to_have_text("Back to the model's result.")
        expect(self.visit.card(self.name).locator(".badge-edited")).to_have_count(0)
        reset = self.export(".png")
        assert np.array_equal(np.asarray(reset.getchannel("A")), model)
        page.get_by_role("button", name="Stop brushing").click()

    def downloads(self) -> None:
        page = self.page
        self.choose("Download", "WebP")
        webp = self.export(".webp")
        assert webp.mode == "RGBA" and webp.size == self.size
        self.choose("Download", "JPEG")
        jpeg = self.export(".jpg")
        assert jpeg.mode == "RGB"
        for x, y in self.corners():  # transparent background, JPEG: white
            assert np.asarray(jpeg)[y, x].min() >= 247
        self.choose("Download", "PNG")
        self.choose("Download", "At most")
        page.locator("#max-side").fill("300")
        small = self.export(".png")
        assert max(small.size) == 300 and small.mode == "RGBA"
        ratio = self.size[0] / self.size[1]
        assert abs(small.size[0] / small.size[1] - ratio) < 0.02
        self.choose("Download", "Original size")
        page.locator("#mask-only").check()
        expect(page.locator("#download-button")).to_have_text("Download the mask")
        self.visit.check("download options: mask", "17-download-mask", full_page=False)
        mask = self.export(".png", suffix="-mask")
        assert mask.mode == "L" and mask.size == self.size
        assert self.model_alpha is not None
        assert np.array_equal(np.asarray(mask), self.model_alpha)
        page.locator("#mask-only").uncheck()


def set_range(slider: Locator, value: int) -> None:
    """Move a range input as a drag would: set the value, fire ``input`` and ``change``."""
    slider.evaluate(
        "(s, v) => { s.value = String(v); s.dispatchEvent(new Event('input', {bubbles: true}));"
        " s.dispatchEvent(new Event('change', {bubbles: true})); }",
        value,
    )


def run_visits(
    chromium_path: str,
    photos: Photos,
    shots: Path,
    work: Path,
    *,
    axe: Path | None,
    report: Report,
) -> None:
    """Both visits and the phone view, on one server (``USER_LIMIT=3``, may fetch 127.0.0.1)."""
    env = {"USER_LIMIT": str(USER_LIMIT), "CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with (
        photo_server(photos.from_url) as photo_url,
        LiveServer(work / "data", env) as server,
        chromium(chromium_path) as browser,
    ):
        visit = Visit(browser, server.url, shots, work / "downloads", report, axe=axe)
        try:
            visit.studio_visit(photos, photo_url)
            state = visit.context.storage_state()
        finally:
            visit.close()
        phone = Visit(browser, server.url, shots, work / "downloads", report, axe=axe,
                      viewport=PHONE, storage_state=state)  # fmt: skip
        try:
            phone.phone()
        finally:
            phone.close()
        plain = Visit(browser, server.url, shots, work / "downloads", report, axe=axe,
                      javascript=False)  # fmt: skip
        try:
            plain.no_script_visit(photos.others[0], photo_url)
        finally:
            plain.close()


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


def ball_photo(colour: tuple[int, int, int], seed: int) -> Image.Image:
    """A shaded ball on a plain floor."""
    size = (1000, 800)
    image = _backdrop(size, (226, 230, 236), (180, 184, 192), seed)
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    d = np.hypot(x - 500, y - 400) / 230
    light = np.clip(1.15 - 0.55 * np.hypot(x - 430, y - 330) / 230, 0.35, 1.1)
    ball = (np.array(colour)[None, None] * light[..., None]).clip(0, 255).astype(np.uint8)
    mask = Image.fromarray((d < 1).astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(1))
    return Image.composite(Image.fromarray(ball), image, mask)


def meadow_picture() -> Image.Image:
    """A sky over green hills: a background to put things on."""
    size = (1600, 1000)
    image = _backdrop(size, (110, 170, 235), (200, 225, 245), 7)
    draw = ImageDraw.Draw(image)
    draw.ellipse((-400, 560, 1000, 1500), fill=(96, 160, 80))
    draw.ellipse((600, 620, 2100, 1600), fill=(70, 135, 60))
    draw.ellipse((1200, 120, 1360, 280), fill=(255, 236, 150))
    return image.filter(ImageFilter.GaussianBlur(2))


def readme_photos(folder: Path) -> Photos:
    pictures = {
        "Blue mug.jpg": mug_photo(),
        "Potted plant.jpg": plant_photo(),
        "Red ball.jpg": ball_photo((210, 50, 40), 11),
        "Green ball.jpg": ball_photo((60, 170, 70), 12),
        "Pasted.png": ball_photo((230, 170, 30), 13),
        "Yellow ball.jpg": ball_photo((240, 200, 40), 14),
        "Meadow.jpg": meadow_picture(),
    }
    for name, picture in pictures.items():
        picture.save(folder / name, quality=92)
    (folder / "notes.jpg").write_bytes(b"these are notes, not a photo\n")
    return Photos(
        subject=folder / "Blue mug.jpg",
        others=(folder / "Potted plant.jpg", folder / "Red ball.jpg", folder / "Green ball.jpg"),
        broken=folder / "notes.jpg",
        pasted=folder / "Pasted.png",
        from_url=folder / "Yellow ball.jpg",
        background=folder / "Meadow.jpg",
    )


#: The states the README shows (the browser test keeps all of them in artifacts/).
README_SHOTS = (
    "02-photos-chosen", "04-queue-done", "05-history-compare", "06-renaming", "09-from-url",
    "10-studio", "11-studio-zoom-black", "12-background-colour", "13-background-picture",
    "14-background-blur", "15-brush", "17-download-mask", "30-phone-home", "31-phone-studio",
    "41-no-script-limit",
)  # fmt: skip


def main(out: Path) -> None:
    """Make the README screenshots: ``python -m tests.web.walkthrough [docs/screenshots]``."""
    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("Debian's chromium is needed: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = readme_photos(folder)
        run_visits(executable, photos, folder / "shots", folder, axe=None, report=Report())
        for name in README_SHOTS:
            shutil.copyfile(folder / "shots" / f"{name}.png", out / f"{name}.png")
    print(f"{len(README_SHOTS)} screenshots written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshots"))
