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
from cutout.errors import Forbidden, InvalidInput
from cutout.extensions import settings
from cutout.storage.keys import ApiKey
from cutout.web.identity import current_user

bp = Blueprint("keys", __name__)


@bp.get("/keys")
def list_keys() -> ResponseReturnValue:
    return jsonify(user_id=current_user(), keys=[key_json(k) for k in keys().list(current_user())])


@bp.post("/keys")
def create_key() -> ResponseReturnValue:
    """Make a key for the page's user: if the operator allows it (CUTOUT_KEYS_FROM_PAGE), with
    the page's allowance, up to CUTOUT_KEYS_PER_USER live keys; the rate per client address
    is limited in cutout.api.limits (cookies cost nothing to mint)."""
    config = settings()
    if not config.page_keys_allowed:
        raise Forbidden(
            "This server does not make API keys from the page: ask its operator for one "
            "(`cutout keys create`)."
        )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidInput('Send JSON like {"name": "My shop"}.')
    name = body.get("name")
    key, secret = keys().create(
        current_user(),
        name if isinstance(name, str) else None,
        config.page_key_credits,
        max_active=config.keys_per_user,
    )
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
