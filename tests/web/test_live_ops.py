"""Operations against the real server with two gunicorn workers (issue 9, section 3):
Prometheus metrics summed over the workers on their own local port, JSON logs with request
ids in every line of a request, and nothing secret in them.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port
from tests.live import LiveServer
from tests.web.test_live import browser_session

SECRET = "s3cret-key-" + "x" * 40


def metrics(port: int) -> dict[str, float]:
    """Every sample as ``name{label=value,...}`` -> value."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on *port*, from /proc/net/tcp (hex, little-endian IPv4)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            octets = [str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)]
            found.add(".".join(octets))
    return found


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    port = free_port()
    env = {
        "CUTOUT_ENV": "production",
        "APP_SECRET_KEY": SECRET,
        "CUTOUT_WEB_WORKERS": "2",
        "CUTOUT_METRICS_PORT": str(port),
        "CUTOUT_LOG_LEVEL": "INFO",
        "USER_LIMIT": "5",
    }
    with LiveServer(tmp_path_factory.mktemp("ops") / "data", env) as server:
        yield server, port


def test_metrics_are_summed_over_two_workers(
    two_workers: tuple[LiveServer, int], photo: Path
) -> None:
    server, port = two_workers
    assert len(server.workers()) == 2
    with ThreadPoolExecutor(8) as pool:  # parallel connections: both workers answer some
        statuses = list(pool.map(lambda _: requests.get(server.url + "/health").status_code,
                                 range(40)))  # fmt: skip
    assert statuses == [200] * 40
    session, token = browser_session(server.url)
    upload = session.post(
        server.url + "/",
        headers={"Accept": "application/json"},
        data={"name": "cat", "csrf_token": token},
        files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert upload.status_code == 201
    junk = session.post(
        server.url + "/",
        headers={"Accept": "application/json"},
        data={"name": "junk", "csrf_token": token},
        files={"image": ("junk.jpg", b"not a photo", "image/jpeg")},
        timeout=60,
    )
    assert junk.status_code == 400

    m = metrics(port)
    assert m["cutout_http_requests_total{method=GET,route=/health,status=200}"] == 40
    assert m["cutout_http_requests_total{method=POST,route=/,status=201}"] == 1
    assert m["cutout_errors_total{code=invalid_image}"] == 1
    for stage in ("decode", "model", "refine", "encode"):
        assert m[f"cutout_removal_stage_seconds_count{{stage={stage}}}"] == 1
    record = upload.json()
    stored = (
        m["cutout_stored_bytes_total{kind=original}"]
        + m["cutout_stored_bytes_total{kind=processed}"]
    )
    assert stored == record["original"]["size_bytes"] + record["processed"]["size_bytes"]
    assert m["cutout_admission_waiting{}"] == 0 and m["cutout_admission_active{}"] == 0
    assert m["cutout_admission_wait_seconds_count{}"] == 1
    loads = [v for k, v in m.items() if k.startswith("cutout_model_load_seconds{")]
    assert len(loads) == 2 and all(0 < v < 120 for v in loads)  # one per worker, no master
    assert m["cutout_memory_budget_bytes{}"] == 2 * 1024 * 1024 * 1024  # 1024 MB x 2 workers


def test_metrics_are_not_served_on_the_app_port_nor_off_this_machine(
    two_workers: tuple[LiveServer, int],
) -> None:
    server, port = two_workers
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
    assert listening_addresses(port) == {"127.0.0.1"}


def test_json_logs_carry_the_request_id_and_no_secret(
    two_workers: tuple[LiveServer, int], photo: Path
) -> None:
    server, _ = two_workers
    given = requests.get(server.url + "/health", headers={"X-Request-ID": "trace-42"}, timeout=10)
    assert given.headers["X-Request-ID"] == "trace-42"
    made = requests.get(server.url + "/health", timeout=10).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    odd = requests.get(server.url + "/health", headers={"X-Request-ID": "a b\tc"}, timeout=10)
    assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])  # not echoed as given

    session, token = browser_session(server.url)
    session.get(server.url + "/", headers={"Accept": "application/json", "X-Request-ID": "last"})
    request_lines(server, "last")  # waits for its access line: every line before is written
    lines = server.log.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert any(e["request_id"] == "trace-42" and e["path"] == "/health" for e in access)
    assert all(re.fullmatch(r"[\w.:-]+", e["request_id"]) for e in access)
    text = "\n".join(lines)
    cookie = session.cookies["user_id"]
    for secret in (SECRET, cookie, token, "Cookie", "csrf_token"):
        assert secret not in text
    assert max(len(line) for line in lines) < 4000  # no image bytes


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Two workers, a bug injected after the images are written, and a metrics port that
    something else already holds."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "CUTOUT_ENV": "testing",  # fault points: testing only
            "CUTOUT_LOG_FORMAT": "json",
            "APP_SECRET_KEY": SECRET,
            "CUTOUT_WEB_WORKERS": "2",
            "CUTOUT_METRICS_PORT": str(taken.getsockname()[1]),
            "CUTOUT_TEST_FAULTS": "add.after_processed=bug",
        }
        with LiveServer(tmp_path_factory.mktemp("faulty") / "data", env) as server:
            yield server


def test_a_busy_metrics_port_is_reported_and_the_app_still_serves(faulty: LiveServer) -> None:
    assert requests.get(faulty.url + "/health", timeout=10).status_code == 200
    entries = [json.loads(line) for line in faulty.log.read_text().splitlines()]
    (error,) = [e for e in entries if "metrics NOT served" in str(e["message"])]
    assert error["level"] == "ERROR" and "Address already in use" in str(error["message"])
    assert "CUTOUT_METRICS_PORT" in str(error["message"])  # the setting that fixes it


def test_a_second_development_instance_serves_its_metrics_on_a_free_port(
    tmp_path: Path,
) -> None:
    """`make run` twice (the second with CUTOUT_PORT=5001): both serve, with no other setting;
    the second one's metrics move to a free port, and it says where and which setting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        env = {"CUTOUT_ENV": "development", "CUTOUT_METRICS_PORT": busy}
        with LiveServer(tmp_path / "data", env) as second:
            deadline = time.monotonic() + 20
            while "metrics on" not in second.log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            log = second.log.read_text()
            match = re.search(r"metrics on (http://127\.0\.0\.1:(\d+)/metrics): port (\d+)", log)
            assert match, log
            assert requests.get(match.group(1), timeout=10).status_code == 200
    assert match.group(3) == busy and match.group(2) != busy
    assert "CUTOUT_METRICS_PORT" in log and "NOT served" not in log


def request_lines(server: LiveServer, request_id: str) -> list[dict[str, object]]:
    """The request's log lines, once its access line is written (just after the response)."""
    deadline = time.monotonic() + 10
    while True:
        entries = [json.loads(line) for line in server.log.read_text().splitlines()]
        mine = [e for e in entries if e.get("request_id") == request_id]
        if any(e["logger"] == "gunicorn.access" for e in mine) or time.monotonic() > deadline:
            return mine
        time.sleep(0.05)


def test_a_bug_is_logged_with_its_traceback_and_request_id(faulty: LiveServer, photo: Path) -> None:
    session, token = browser_session(faulty.url)
    response = session.post(
        faulty.url + "/",
        headers={"Accept": "application/json", "X-Request-ID": "upload-7"},
        data={"name": "cat", "csrf_token": token},
        files={"image": ("photo.jpg", photo.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "upload-7"
    assert response.json() == {"error": "internal_error", "message": "Something went wrong"}
    lines = request_lines(faulty, "upload-7")
    assert [e["logger"] for e in lines] == ["cutout.web.errors", "gunicorn.access"]
    error, access = lines
    assert error["level"] == "ERROR" and error["message"] == "unexpected error on POST /"
    assert "Traceback" in str(error["exception"])
    assert "RuntimeError: a bug (fault injected at add.after_processed)" in str(error["exception"])
    assert access["status"] == 500
    assert list((Path(faulty.env["CUTOUT_DATA_DIR"]) / "images").iterdir()) == []
