"""The page's "API keys" panel: the browser user's own keys (cookie + CSRF, like the page).

``GET /keys`` lists them, ``POST /keys`` (JSON ``{"name"}``) makes one and shows its secret
once, ``DELETE /keys/<id>`` revokes one. A key belongs to the user who made it, so images
uploaded with it through ``/api/v1`` appear in this browser's history, under the same limit.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from cutout.api.auth import keys
from cutout.errors import InvalidInput
from cutout.storage.keys import ApiKey
from cutout.web.identity import current_user

bp = Blueprint("keys", __name__)


@bp.get("/keys")
def list_keys() -> ResponseReturnValue:
    return jsonify(user_id=current_user(), keys=[key_json(k) for k in keys().list(current_user())])


@bp.post("/keys")
def create_key() -> ResponseReturnValue:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput('Send JSON like {"name": "My shop"}.')
    name = body.get("name")
    key, secret = keys().create(current_user(), name if isinstance(name, str) else None)
    return jsonify(key=key_json(key), secret=secret), 201


@bp.delete("/keys/<string:key_id>")
def revoke_key(key_id: str) -> ResponseReturnValue:
    keys().revoke(key_id, user_id=current_user())
    return jsonify(message="success")


def key_json(key: ApiKey) -> dict[str, Any]:
    """A key as the panel shows it: never the secret, only its first characters."""
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "created_on": key.created_on,
        "last_used_on": key.last_used_on,
        "credits": key.credits,
        "credits_used": key.credits_used,
        "revoked_on": key.revoked_on,
    }
