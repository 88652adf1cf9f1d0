"""The API keys panel and the API docs page in a real Chromium, against `cutout serve`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import requests

from tests.conftest import missing
from tests.live import LiveServer
from tests.web.walkthrough import browser_page

pytestmark = pytest.mark.browser


def test_create_copy_and_revoke_a_key_then_read_the_docs(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert chromium is not None
    with LiveServer(tmp_path / "data") as server, browser_page(chromium) as page:
        problems: list[str] = []
        page.on("console", lambda m: problems.extend([m.text] if m.type == "error" else []))
        page.context.grant_permissions(["clipboard-read", "clipboard-write"])
        page.goto(server.url + "/")
        page.fill("#key-name", "Shop sync")
        page.click("#key-create")
        page.wait_for_selector("#key-new:not([hidden])")
        secret = page.input_value("#key-secret")
        assert secret.startswith("cut_") and len(secret) == 47
        page.click("#key-copy")
        page.wait_for_selector("#key-copied:not([hidden])")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        assert "Shop sync" in page.inner_text("#key-list") and secret not in page.content()
        account = requests.get(
            f"{server.url}/v1.0/account", headers={"X-Api-Key": secret}, timeout=10
        )
        assert account.status_code == 200
        page.on("dialog", lambda dialog: dialog.accept())
        page.click("#key-list button:has-text('Revoke')")
        page.wait_for_selector("#key-list li.revoked")
        again = requests.get(
            f"{server.url}/v1.0/account", headers={"X-Api-Key": secret}, timeout=10
        )
        assert again.status_code == 403
        # The docs page: Swagger UI from the app's own files, under our CSP, no errors.
        page.click("text=API documentation")
        page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
        assert "/api/v1/images" in page.inner_text(".swagger-ui")
        assert problems == [], problems
