"""Fuzz POST / with damaged photos through the app, on the real model and real SQLite.

Every answer is 201 or one of our 4xx with the usual JSON shape; never a 5xx, never a
traceback in the log; a refused upload stores nothing (no record, no file), and an accepted
one is deleted again so the next case starts from the same state.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import BoundedEngine
from cutout.engine.local import LocalEngine
from cutout.extensions import close_app
from tests.fuzz.conftest import MODEL_CASES, kept_if_failing, tally
from tests.fuzz.mutate import Seed, mutated

REFUSALS = {400: {"invalid_image"}, 413: {"image_too_large"}, 415: {"unsupported_format"}}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Session:
    def __init__(self, client: FlaskClient, data_dir: Path) -> None:
        self.client = client
        self.images = data_dir / "images"
        page = client.get("/").get_data(as_text=True)
        match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert match
        self.token = match.group(1)

    def upload(self, payload: bytes) -> tuple[int, dict[str, str]]:
        form = MultiDict(
            {
                "name": "fuzz",
                "csrf_token": self.token,
                "image": FileStorage(io.BytesIO(payload), filename="photo.jpg"),
            }
        )
        boundary, body = encode_multipart(form)
        response = self.client.post(
            "/",
            data=body,
            headers={"Accept": "application/json"},
            content_type=f"multipart/form-data; boundary={boundary}",
        )
        return response.status_code, response.get_json()

    def records(self) -> list[dict[str, str]]:
        body = self.client.get("/", headers={"Accept": "application/json"}).get_json()
        records: list[dict[str, str]] = body["records"]
        return records

    def files(self) -> list[str]:
        return sorted(p.name for p in self.images.iterdir()) if self.images.is_dir() else []


@pytest.fixture(scope="module")
def session(
    tmp_path_factory: pytest.TempPathFactory, model_settings: Settings, real_engine: LocalEngine
) -> Iterator[Session]:
    data_dir = tmp_path_factory.mktemp("fuzz-http") / "data"
    settings_ = Settings.from_env(
        environ={
            "CUTOUT_DATA_DIR": str(data_dir),
            "CUTOUT_MODEL_DIR": str(model_settings.model_dir),
            "CUTOUT_ENV": "testing",
            "CUTOUT_SWEEP_INTERVAL": "0",
        },
        dotenv_path=None,
    )
    engine = BoundedEngine(real_engine, slots=1, max_waiting=4, timeout=60)
    app = create_app(settings_, engine=engine)
    yield Session(app.test_client(), data_dir)
    close_app(app)


@pytest.fixture(scope="module")
def log_records() -> Iterator[Collect]:
    handler = Collect()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


@pytest.mark.model
@settings(settings.get_profile("fuzz"), max_examples=MODEL_CASES)
@given(data=st.data())
def test_post_never_answers_5xx_and_stores_nothing_it_refuses(
    session: Session, log_records: Collect, seed_pool: list[Seed], data: st.DataObject
) -> None:
    name, payload = mutated(data, seed_pool)
    with kept_if_failing(name, payload):
        files_before = session.files()
        status, body = session.upload(payload)
        tally("http POST /", str(status))
        problems = [r for r in log_records.records if r.levelno >= logging.ERROR or r.exc_info]
        log_records.records.clear()
        assert status < 500, (name, status, body)
        assert not problems, (name, [r.getMessage() for r in problems])
        if status == 201:
            response = session.client.delete(
                f"/remove/{body['_id']}", headers={"X-CSRFToken": session.token}
            )
            assert response.status_code == 200
        else:
            assert body["error"] in REFUSALS.get(status, set()), (name, status, body)
            assert set(body) == {"error", "message"}
        assert session.files() == files_before == []
        assert session.records() == []
