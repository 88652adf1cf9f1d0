"""remove.bg clients nobody here wrote, unchanged, against ``cutout serve`` over real HTTP.

* A real browser calling /v1.0 from another origin, as pages call remove.bg (CORS).
* A refused upload leaves a kept-alive connection usable (found with the npm client).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_live_api import cli_key, photo_path
from tests.conftest import missing
from tests.helpers import LocalServer
from tests.live import LiveServer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("clients") / "data"
    env = {"CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32", "CUTOUT_API_RATE_LIMIT": "1000/minute"}
    with LiveServer(data, env) as live:
        yield live


def test_a_refused_upload_leaves_the_kept_alive_connection_usable(server: LiveServer) -> None:
    """gunicorn skips at most 64 KiB of a body nobody read, then drops the connection."""
    upload = base64.b64encode(photo_path().read_bytes() * 3)
    body = json.dumps({"image_file_b64": upload.decode()}).encode()
    assert len(body) > 200_000
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    answers = []
    for key in ("cut_not-a-key", cli_key(server, "keep-alive")):
        headers = {"X-Api-Key": key, "Content-Type": "application/json"}
        connection.request("POST", "/v1.0/removebg", body=body, headers=headers)
        response = connection.getresponse()
        answers.append((response.status, response.getheader("Connection"), response.read()))
    connection.close()
    assert [a[:2] for a in answers] == [(403, "keep-alive"), (200, "keep-alive")]
    assert answers[1][2][:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def site() -> Iterator[LocalServer]:
    """Another origin: the photo for URL inputs, and a blank page for the browser."""
    photo = photo_path().read_bytes()
    routes = {
        ("GET", "/photo.jpg"): lambda h, b: (200, {"Content-Type": "image/jpeg"}, photo),
        ("GET", "/page.html"): lambda h, b: (200, {"Content-Type": "text/html"}, b"<p>shop</p>"),
    }
    with LocalServer(routes) as local:
        yield local


@pytest.mark.browser
def test_a_page_on_another_origin_calls_v1_0_as_it_calls_remove_bg(
    server: LiveServer, site: LocalServer
) -> None:
    from tests.web.walkthrough import browser_page

    chromium = shutil.which("chromium")
    if chromium is None:
        missing("Debian's chromium is not installed (`apt-get install chromium`)")
    assert chromium is not None
    key = cli_key(server, "browser")
    with browser_page(chromium) as page:
        page.goto(f"{site.url}/page.html")
        seen: dict[str, Any] = page.evaluate(CROSS_ORIGIN_CALLS, [server.url, key])
    assert seen["result"] == {
        "status": 200,
        "type": "image/png",
        "credits": "0.25",
        "width": seen["result"]["width"],
        "png": True,
    }
    assert 0 < int(seen["result"]["width"]) <= 640
    assert seen["json"] == {"status": 200, "keys": ["foreground_height", "foreground_left"]}
    assert seen["account"] == {"status": 200, "total": 999_999}
    assert seen["refused"] == {"status": 403, "code": "auth_failed"}


#: Run in the page: what a shop's page does with remove.bg (multipart, JSON mode, account,
#: an error), each a cross-origin request with the X-Api-Key header (so preflighted).
CROSS_ORIGIN_CALLS = """
async ([api, key]) => {
  const photo = await (await fetch("/photo.jpg")).blob();
  const form = () => {
    const f = new FormData();
    f.append("image_file", photo, "p.jpg");
    return f;
  };
  const post = (headers) => fetch(api + "/v1.0/removebg", {method: "POST", headers, body: form()});
  const image = await post({"X-Api-Key": key});
  const bytes = new Uint8Array(await image.arrayBuffer());
  const json = await post({"X-Api-Key": key, "Accept": "application/json"});
  const data = (await json.json()).data;
  const account = await fetch(api + "/v1.0/account", {headers: {"X-Api-Key": key}});
  const refused = await post({"X-Api-Key": "cut_wrong"});
  return {
    result: {status: image.status, type: image.headers.get("Content-Type"),
             credits: image.headers.get("X-Credits-Charged"),
             width: image.headers.get("X-Width"), png: bytes[1] === 0x50 && bytes[2] === 0x4e},
    json: {status: json.status, keys: Object.keys(data).sort().slice(0, 2)},
    account: {status: account.status,
              total: (await account.json()).data.attributes.credits.total},
    refused: {status: refused.status, code: (await refused.json()).errors[0].code},
  };
}
"""
