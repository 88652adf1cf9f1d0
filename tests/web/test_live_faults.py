"""Regression tests for faults that only the real server shows (gunicorn in front of Flask):
forwarded headers (fault 3), overlong request lines (fault 8) and errors at start (fault 12).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.live import LiveServer

HTTPS_CLAIM = {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "on", "X-Forwarded-Protocol": "ssl"}


def user_cookie(response: requests.Response) -> str:
    cookies = response.raw.headers.getlist("Set-Cookie")
    return next(c for c in cookies if c.startswith("user_id="))


# -- fault 3: X-Forwarded-Proto is honoured only as CUTOUT_TRUSTED_PROXIES says ----------------


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server with the default settings (no trusted proxy) for the tests that only send
    it requests: each server start costs about 5 s of model loading and warm-up."""
    with LiveServer(tmp_path_factory.mktemp("default") / "data") as server:
        yield server


def test_forwarded_proto_is_ignored_without_a_trusted_proxy(default_server: LiveServer) -> None:
    server = default_server
    response = requests.get(server.url + "/", headers=HTTPS_CLAIM, timeout=10)
    assert response.status_code == 200
    # (and, in passing: gunicorn's plain-text access line ends with the request id; it is
    # written just after the response is sent, so it may take a moment to appear)
    line = " " + response.headers["X-Request-ID"]
    deadline = time.monotonic() + 10
    while not any(
        '"GET / HTTP/1.1" 200' in entry and entry.endswith(line)
        for entry in server.log.read_text().splitlines()
    ):
        assert time.monotonic() < deadline, server.log.read_text()[-2000:]
        time.sleep(0.05)
    assert "Strict-Transport-Security" not in response.headers
    assert "Secure" not in user_cookie(response)


def test_forwarded_proto_is_honoured_from_a_trusted_proxy(tmp_path: Path) -> None:
    """The positive control: the same request, with one proxy configured, is HTTPS."""
    with LiveServer(tmp_path / "data", {"CUTOUT_TRUSTED_PROXIES": "1"}) as server:
        response = requests.get(
            server.url + "/", headers={"X-Forwarded-Proto": "https"}, timeout=10
        )
        plain = requests.get(server.url + "/", timeout=10)
        # Only the header ProxyFix reads counts: a client's X-Forwarded-Ssl passed through a
        # proxy that sets X-Forwarded-Proto alone must not make the request HTTPS.
        other = requests.get(server.url + "/", headers={"X-Forwarded-Ssl": "on"}, timeout=10)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert "Secure" in user_cookie(response)
    assert "Strict-Transport-Security" not in plain.headers
    assert "Strict-Transport-Security" not in other.headers


# -- fault 8: an overlong URL gets our JSON 414, not gunicorn's HTML page ----------------------


def test_overlong_url_is_a_json_414_through_gunicorn(default_server: LiveServer) -> None:
    server = default_server
    long_url = server.url + "/?q=" + "x" * 6000  # over gunicorn's default 4094
    as_program = requests.get(long_url, headers={"Accept": "application/json"}, timeout=10)
    as_browser = requests.get(long_url, headers={"Accept": "text/html"}, timeout=10)
    # Beyond gunicorn's own ceiling (8190) the request line is refused before any Python
    # of ours runs: documented in the README as the one error that is never JSON.
    huge = requests.get(server.url + "/?q=" + "x" * 9000, timeout=10)
    assert as_program.status_code == 414
    assert as_program.json() == {
        "error": "uri_too_long",
        "message": "The URL is too long: at most 4096 characters.",
    }
    assert as_browser.status_code == 414 and "text/html" in as_browser.headers["Content-Type"]
    assert huge.status_code in (400, 414)


# -- fault 12: a configuration error at start is one clear line --------------------------------


def start_output(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "FLASK_"))}
    result = subprocess.run(
        argv,
        env={**keep, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_flask_run_without_a_secret_key_says_so_in_one_line(tmp_path: Path) -> None:
    """The seed's `flask run` without FLASK_ENV=development: production needs a secret key."""
    flask = str(Path(sys.executable).with_name("flask"))
    output = start_output(
        [flask, "run", "--port", "1"],
        {"FLASK_APP": "app.py", "CUTOUT_DATA_DIR": str(tmp_path)},
        cwd=ROOT,
    )
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: APP_SECRET_KEY is not set.")


def test_gunicorn_with_a_bad_setting_says_so_in_one_line(tmp_path: Path) -> None:
    """The container's command, with a malformed setting: no traceback from the config file."""
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:cutout.gunicorn_config"]
    output = start_output(
        [*gunicorn, "cutout:create_app()"],
        {"USER_LIMIT": "ten", "CUTOUT_DATA_DIR": str(tmp_path)},
    )
    assert "Traceback" not in output
    assert output.strip() == "error: USER_LIMIT='ten' is not a valid int."


def test_gunicorn_without_a_secret_key_says_so_in_one_line(tmp_path: Path) -> None:
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "python:cutout.gunicorn_config"]
    output = start_output(
        [*gunicorn, "cutout:create_app()"],
        {"CUTOUT_ENV": "production", "CUTOUT_DATA_DIR": str(tmp_path), "CUTOUT_PORT": "1"},
    )
    assert "Traceback" not in output
    assert output.strip().startswith("error: APP_SECRET_KEY is not set.")
