"""Who is asking: an anonymous user id in a signed cookie, as the seed tracked users.

The seed trusted a plain ``user_id`` cookie, so anyone could read another user's images by
editing it. Ours is signed with APP_SECRET_KEY: a forged or tampered cookie fails the signature
and its bearer simply becomes a new, empty user.
"""

from __future__ import annotations

import secrets

from flask import Flask, Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

COOKIE = "user_id"
MAX_AGE = 365 * 24 * 3600
#: Requests that need no identity (and should not mint one): probes and static files.
ANONYMOUS_ENDPOINTS = {"static", "health.health", "health.ready"}
#: The API for programs authenticates with keys only: no cookie read, none minted.
API_PREFIXES = ("/v1.0/", "/api/")


def init_app(app: Flask) -> None:
    app.before_request(_load_user)
    app.after_request(_save_user)


def current_user() -> str:
    user_id: str = g.user_id
    return user_id


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="cutout.user-id")


def _load_user() -> None:
    if request.endpoint in ANONYMOUS_ENDPOINTS or request.path.startswith(API_PREFIXES):
        return
    raw = request.cookies.get(COOKIE)
    try:
        user_id = _serializer().loads(raw) if raw else None
    except BadSignature:
        user_id = None
    if isinstance(user_id, str) and user_id:
        g.user_id, g.new_user = user_id, False
    else:
        g.user_id, g.new_user = secrets.token_hex(16), True


def _save_user(response: Response) -> Response:
    if g.get("new_user"):
        response.set_cookie(
            COOKIE,
            _serializer().dumps(g.user_id),
            max_age=MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    return response
