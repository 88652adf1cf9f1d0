"""Who is calling the API: the key in ``X-Api-Key`` or ``Authorization: Bearer``."""

from __future__ import annotations

from flask import Flask, g, request

from cutout import extensions
from cutout.apikeys import KeyService
from cutout.errors import AuthFailed, CutoutError
from cutout.storage.keys import ApiKey

#: Paths served to programs: no user cookie is read or minted there (see web.identity).
PREFIXES = ("/v1.0/", "/api/")


def init_app(app: Flask) -> None:
    from cutout.storage import open_key_store

    app.extensions[extensions.KEYS] = KeyService(open_key_store(app.extensions[extensions.STORE]))


keys = extensions.key_service


def is_api_request() -> bool:
    return request.path.startswith(PREFIXES)


def presented_secret() -> str | None:
    """The key the client sent, from either header (names are case-insensitive)."""
    key = request.headers.get("X-Api-Key", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_key() -> ApiKey:
    """The caller's live key, checked once per request. :raises AuthFailed:"""
    if "api_key" not in g:
        g.api_key = keys().authenticate(presented_secret())
    key: ApiKey = g.api_key
    return key


def rate_limit_key() -> str:
    """Rate-limit bucket: the key when it is valid, else the client's address."""
    try:
        return f"key:{current_key().id}"
    except AuthFailed:
        return f"ip:{request.remote_addr or 'unknown'}"
    except CutoutError:  # the store is down: the request will fail anyway; do not hide why
        return f"ip:{request.remote_addr or 'unknown'}"
