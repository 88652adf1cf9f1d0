"""The running app over real HTTP (gunicorn with threads): the limit under concurrency."""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from cutout.storage import SQLiteStore
from tests.conftest import ROOT
from tests.live import LiveServer


def browser_session(url: str) -> tuple[requests.Session, str]:
    """A session holding the user and CSRF cookies, and the page's token, like a browser tab."""
    session = requests.Session()
    page = session.get(url + "/").text
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match
    return session, match.group(1)


def test_user_limit_holds_under_concurrent_uploads(tmp_path: Path, photo: Path) -> None:
    # A loaded machine must not turn a wait into a 503: this test is about the limit.
    env = {"USER_LIMIT": "5", "CUTOUT_MAX_QUEUE": "32", "CUTOUT_WEB_THREADS": "20",
           "CUTOUT_QUEUE_TIMEOUT": "300"}  # fmt: skip
    with LiveServer(tmp_path / "data", env) as server:
        session, token = browser_session(server.url)
        data = photo.read_bytes()

        def upload(i: int) -> int:
            response = session.post(
                server.url + "/",
                headers={"Accept": "application/json"},
                data={"name": f"photo {i}", "csrf_token": token},
                files={"image": ("p.jpg", data, "image/jpeg")},
                timeout=120,
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(upload, range(20)))
        body = session.get(server.url + "/", headers={"Accept": "application/json"}).json()
    assert statuses.count(201) == 5, statuses
    assert statuses.count(409) == 15, statuses
    assert body["used"] == 5 and len(body["records"]) == 5
    stored = list((tmp_path / "data" / "images").rglob("*.*"))
    # 5 x (original, cut-out, and their two thumbnails), and none of the refused uploads'
    assert len([p for p in stored if p.is_file()]) == 20
    assert SQLiteStore(tmp_path / "data").orphans(min_age=0) == []


def test_the_seeds_flask_run_still_works(tmp_path: Path) -> None:
    """`export FLASK_APP=app.py FLASK_ENV=development; flask run`, as the seed's README says."""
    server = LiveServer(tmp_path / "data", {"FLASK_APP": "app.py", "FLASK_ENV": "development"})
    server.env.pop("CUTOUT_ENV")  # only the seed's variables
    flask = str(Path(sys.executable).with_name("flask"))
    server.argv = [flask, "run", "--host", "127.0.0.1", "--port", str(server.port)]
    server.cwd = ROOT  # where app.py is
    with server:
        assert requests.get(server.url + "/health", timeout=5).json() == {"status": "Healthy"}
        assert "Remove a background" in requests.get(server.url + "/", timeout=5).text
