"""API fixtures: the real app (real model, real SQLite) and keys made through the real service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cutout.apikeys import KeyService
from cutout.app import create_app
from cutout.config import Settings
from cutout.engine.base import Engine
from cutout.extensions import close_app
from tests.web.conftest import photo, shared_engine

__all__ = ["photo", "shared_engine"]


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.replace(user_limit=3, url_allowed_networks="127.0.0.1/32")


@pytest.fixture
def app(api_settings: Settings, shared_engine: Engine) -> Iterator[Flask]:
    app = create_app(api_settings, engine=shared_engine)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@dataclass
class Key:
    id: str
    user_id: str
    secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.secret}


MakeKey = Callable[..., Key]


@pytest.fixture
def make_key(app: Flask) -> MakeKey:
    def make(user_id: str = "user-a", credits: float | None = None) -> Key:
        service: KeyService = app.extensions["cutout.keys"]
        key, secret = service.create(user_id, "test key", credits)
        return Key(key.id, user_id, secret)

    return make


@pytest.fixture
def key(make_key: MakeKey) -> Key:
    made: Key = make_key()
    return made
