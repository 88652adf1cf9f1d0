"""remove.bg clients nobody here wrote, unchanged, against ``cutout serve`` over real HTTP.

* The npm package ``remove.bg`` (1.3.0, the most used remove.bg client), installed by ``make``
  from ``tests/clients/package-lock.json`` and run by node. It hard-codes
  ``https://api.remove.bg``, so it runs where that name means our server
  (:mod:`tests.redirect`: a sealed network namespace, a hosts entry, a TLS front).
* A real browser calling /v1.0 from another origin, as pages call remove.bg (CORS).
* A refused upload leaves a kept-alive connection usable (found with the npm client).

The PyPI client ``remove-bg-api`` runs in ``test_live_api.py``; the rest of the published
clients are run by ``scripts/remove_bg_clients.py`` (see the README, "Clients verified").
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.api.test_live_api import cli_key, photo_path
from tests.conftest import ROOT, missing
from tests.helpers import LocalServer
from tests.live import LiveServer
from tests.redirect import TlsFront, can_isolate, redirected

pytestmark = pytest.mark.model
CLIENTS = ROOT / "tests" / "clients"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("clients") / "data"
    env = {"CUTOUT_URL_ALLOWED_NETWORKS": "127.0.0.1/32", "CUTOUT_API_RATE_LIMIT": "1000/minute"}
    with LiveServer(data, env) as live:
        yield live


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


def image(path: Path) -> Image.Image:
    with Image.open(path) as opened:
        opened.load()
        return opened


def test_the_unchanged_npm_client_remove_bg(
    server: LiveServer, site: LocalServer, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None or not (CLIENTS / "node_modules" / "remove.bg").is_dir():
        missing("node or the npm client is missing: `make test` runs `npm ci` in tests/clients")
    if why := can_isolate():
        missing(f"cannot run a client in a sealed network namespace: {why}")
    assert node is not None
    out = tmp_path / "out"
    out.mkdir()
    argv = [node, str(CLIENTS / "remove_bg_npm.js"), str(photo_path())]
    argv += [f"{site.url}/photo.jpg", f"{site.url}/missing.jpg", str(out)]
    env = {**os.environ, "REMOVE_BG_KEY": cli_key(server, "npm remove.bg")}
    with TlsFront(server.port, tmp_path / "tls") as front:
        done = redirected(front, argv, env, cwd=tmp_path, timeout=180)
        assert front.connections >= 1, "the client did not come through the TLS front"
    assert done.returncode == 0, done.stdout + done.stderr
    calls = {c["name"]: c for c in map(json.loads, done.stdout.splitlines())}
    original = image(photo_path()).size

    ok = {name: calls[name]["result"] for name in calls if calls[name]["ok"]}
    assert set(ok) == {"file", "file_full_crop", "url_bg_color", "base64_alpha"} | {
        "url_scale_bg_image"
    }, calls
    for result in ok.values():  # the headers it reads, as remove.bg writes them
        assert int(result["resultWidth"]) > 0 and int(result["rateLimit"]) == 1000
        assert int(result["rateLimitReset"]) > 1_700_000_000 and "retryAfter" not in result
        assert result["creditsCharged"] in ("0.25", "1")
    for name, suffix in (("file", "png"), ("url_bg_color", "jpg")):  # previews: 0.25 MP
        picture = image(out / f"{name}.{suffix}")
        assert picture.width * picture.height <= 250_000
        assert picture.size == (int(ok[name]["resultWidth"]), int(ok[name]["resultHeight"]))
        assert ok[name]["creditsCharged"] == "0.25" and ok[name]["detectedType"] == "other"
    assert image(out / "file.png").mode == "RGBA"
    backdrop = image(out / "url_bg_color.jpg")
    assert backdrop.format == "JPEG" and backdrop.mode == "RGB"  # auto + opaque: a JPEG
    left = backdrop.getpixel((1, backdrop.height // 2))  # left of the subject: the colour
    assert isinstance(left, tuple)
    assert max(abs(a - b) for a, b in zip(left, (0x81, 0xD4, 0xFA), strict=True)) < 16
    cropped = image(out / "file_full_crop.png")
    assert ok["file_full_crop"]["detectedType"] == "product"
    assert cropped.mode == "RGBA" and cropped.width < original[0]
    matte = image(out / "base64_alpha.png")
    assert matte.mode == "L" and matte.size == original  # hd: 4 MP, never scaled up
    placed = image(out / "url_scale_bg_image.jpg")
    assert placed.format == "JPEG" and placed.size == original

    errors = {name: calls[name]["errors"] for name in calls if not calls[name]["ok"]}
    assert errors["bad_key"][0]["title"] == "API Key invalid"
    # Answered on the same kept-alive socket right after the refused 73 kB upload:
    assert errors["not_an_image"][0]["code"] == "failed_to_read_image"
    assert errors["missing_url"][0]["code"] == "failed_image_download"


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
