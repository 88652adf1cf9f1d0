"""The page sends a large drop as one batch job: real Chromium, real server, real model.

With ``CUTOUT_PAGE_JOB_THRESHOLD=3``, five photos go as one job; the queue shows each photo's
state and the overall progress; the tab is closed while the job runs, and a new tab shows the
queue again and then every result in the history.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.conftest import cc0_jpeg
from tests.live import LiveServer
from tests.web.test_browser import axe_script, chromium
from tests.web.walkthrough import AXE_RUN
from tests.web.walkthrough import chromium as launch

pytestmark = [pytest.mark.browser, pytest.mark.model]
STEMS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


def test_a_drop_over_the_threshold_goes_as_one_job_that_survives_the_tab(tmp_path: Path) -> None:
    photos = [cc0_jpeg(stem) for stem in STEMS]
    env = {"USER_LIMIT": "10", "CUTOUT_PAGE_JOB_THRESHOLD": "3"}
    with LiveServer(tmp_path / "data", env) as server, launch(chromium()) as browser:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.add_init_script(path=str(axe_script()))  # as the studio's browser test does
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url)
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.set_input_files("#image", [str(p) for p in photos])
        page.click("#submit")

        queue = page.locator("#queue-list .queue-item")
        expect(queue).to_have_count(len(STEMS))
        expect(page.locator("#queue-job-note")).to_be_visible()
        # One request for the five photos, not five.
        expect(page.locator('#queue-list .queue-item[data-state="done"]').first).to_be_visible(
            timeout=60_000
        )
        assert [url.removeprefix(server.url) for url in posts] == ["/jobs"]
        assert int(page.locator("#queue-progress").get_attribute("value") or 0) >= 1
        assert page.evaluate(AXE_RUN) == []  # the queue with the job's note: no violations
        page.close()  # the tab goes away mid-job; the server goes on

        again = context.new_page()
        again.on("pageerror", lambda exc: errors.append(str(exc)))
        again.goto(server.url)
        expect(again.locator("#queue-list .queue-item")).to_have_count(len(STEMS))
        expect(again.locator("#queue-summary")).to_have_text(
            f"All {len(STEMS)} images generated successfully", timeout=120_000
        )
        # The history refreshes on the page's next poll after the summary: allow for it (the
        # default 5 s was missed once on a loaded run, stop 21)
        expect(again.locator("#records .record")).to_have_count(len(STEMS), timeout=30_000)
        # Photos done while no tab was open are counted once, not again as the queue catches up.
        expect(again.locator("#quota-used")).to_have_text(str(len(STEMS)))
        again.reload()  # the history is the server's, not the page's memory
        expect(again.locator("#records .record")).to_have_count(len(STEMS))
        expect(again.locator("#queue")).to_be_hidden()  # the job ended: nothing to pick up
        names = sorted(again.locator("#records .record .record-name").all_inner_texts())
        assert names == sorted(STEMS)  # named after the file, as single uploads are
        assert not errors, errors
        context.close()
