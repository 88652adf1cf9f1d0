"""What the page costs to load: a history of twenty 12 MP photos, in a real Chromium.

The history shows thumbnails at display size, so the page must not download the full-size
images (twenty 12 MP photos and their cut-outs are hundreds of MB). One record is made through
the page by the real model; nineteen more are the same images stored again for the same user
(making twenty with the model would take a minute and prove nothing more about page weight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from cutout.storage import KINDS, NewImage, NewRecord, SQLiteStore
from tests.conftest import Photos
from tests.live import LiveServer
from tests.web.test_browser import chromium
from tests.web.walkthrough import Report, Visit
from tests.web.walkthrough import chromium as launch

pytestmark = pytest.mark.browser

RECORDS = 20
#: The page's own scripts and styles, uncompressed (the app serves them as they are).
ASSET_BUDGET = 80_000
#: Everything the page loads with twenty records: thumbnails, scripts, styles, the HTML.
PAGE_BUDGET = 6_000_000
STATIC = Path(__file__).resolve().parents[2] / "src" / "cutout" / "web" / "static"


def twelve_megapixels(sample: Path, folder: Path) -> Path:
    """A real photo enlarged to 4000x3000 (bicubic), saved as a camera would (JPEG q90)."""
    path = folder / "big dog.jpg"
    with Image.open(sample) as image:
        image.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


def copy_record(store: SQLiteStore, user_id: str, record_id: str, name: str) -> None:
    """The record's images (and thumbnails) stored again as a new record of the same user."""
    record = store.get(user_id, record_id)
    images = {
        kind: store.read_image(user_id, record_id, kind) for kind in ("original", "processed")
    }

    def image(kind: str) -> NewImage:
        info, data = images[kind]
        return NewImage(data, info.media_type, info.width, info.height)

    copy = store.add(
        NewRecord(user_id, name, image("original"), image("processed"), record.engine,
                  record.model),
        limit=RECORDS,
    )  # fmt: skip
    for kind in KINDS:
        thumb = store.read_thumbnail(user_id, record_id, kind)
        assert thumb is not None
        store.save_thumbnail(user_id, copy.id, kind, thumb)


def test_a_history_of_twenty_12_megapixel_photos_loads_only_thumbnails(
    tmp_path: Path, photos: Photos
) -> None:
    assets = {p.name: p.stat().st_size for p in STATIC.iterdir() if p.suffix in (".js", ".css")}
    assert sum(assets.values()) < ASSET_BUDGET, assets
    photo = twelve_megapixels(photos.named("chelsea"), tmp_path)
    data_dir = tmp_path / "data"
    report = Report()
    with (
        LiveServer(data_dir, {"USER_LIMIT": str(RECORDS)}) as server,
        launch(chromium()) as browser,
    ):
        maker = Visit(browser, server.url, tmp_path / "shots", tmp_path / "dl", report, axe=None)
        maker.page.goto(server.url + "/")
        maker.page.set_input_files("#image", str(photo))
        maker.page.click("#submit")
        expect(maker.page.locator(".queue-item[data-state=done]")).to_have_count(1, timeout=120_000)
        listing: Any = maker.page.evaluate(
            "() => fetch('/', {headers: {Accept: 'application/json'}}).then((r) => r.json())"
        )
        state = maker.context.storage_state()
        maker.close()
        store = SQLiteStore(data_dir)
        for i in range(2, RECORDS + 1):
            copy_record(store, listing["user_id"], listing["records"][0]["_id"], f"big dog {i}")
        full_size = RECORDS * sum(
            listing["records"][0][kind]["size_bytes"] for kind in ("original", "processed")
        )

        # A fresh browser profile (nothing cached) with the same user, scrolled to the end.
        viewer = Visit(browser, server.url, tmp_path / "shots", tmp_path / "dl", report,
                       axe=None, storage_state=state)  # fmt: skip
        loaded: dict[str, int] = {}
        viewer.page.on("response", lambda r: loaded.__setitem__(r.url, len(r.body())))
        viewer.page.goto(server.url + "/")
        expect(viewer.page.locator(".record")).to_have_count(RECORDS)
        for card in viewer.page.locator(".record").all():
            card.scroll_into_view_if_needed()
        viewer.page.wait_for_function(
            "() => [...document.querySelectorAll('.record img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        viewer.page.wait_for_load_state("networkidle")
        viewer.close()

    total = sum(loaded.values())
    thumbnails = [u for u in loaded if "/thumbnail/" in u]
    print(
        f"\npage with {RECORDS} records of 12 MP: {total / 1e6:.2f} MB loaded in "
        f"{len(loaded)} responses ({len(thumbnails)} thumbnails); the full-size images would "
        f"be {full_size / 1e6:.0f} MB. Own scripts and styles: {sum(assets.values()):,} bytes "
        + ", ".join(f"{name} {size:,}" for name, size in sorted(assets.items()))
    )
    assert len(thumbnails) == 2 * RECORDS
    assert not [u for u in loaded if "/images/" in u], "the page loaded full-size images"
    assert total < PAGE_BUDGET, f"{total:,} bytes"
    assert full_size > 50_000_000  # the test really is about a heavy history...
    assert total < full_size / 20  # ...and the page loads a small fraction of it
