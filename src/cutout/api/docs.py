"""``/api/v1/openapi.json`` (generated from the code) and ``/api/docs``, an interactive page.

The page is Swagger UI, served by the app itself from the ``swagger-ui-bundle-v2`` package (no
CDN, so it works offline). Our Content-Security-Policy allows no inline script: the page loads
Swagger UI's bundle and a small script of ours (``static/api-docs.js``) that starts it. Swagger
UI (React) sets element styles through the DOM, which ``style-src 'self'`` permits; the one
relaxation this route needs is ``img-src data:`` for its icons, which the site allows already.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, render_template, send_from_directory
from flask.typing import ResponseReturnValue
from swagger_ui_bundle import swagger_ui_path

from cutout.api import openapi

bp = Blueprint("api_docs", __name__)
#: Swagger UI's files the page uses (the package also ships source maps and other builds).
ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}
DESCRIPTION = (
    "Images as a resource, authenticated with an API key (`X-Api-Key` or "
    "`Authorization: Bearer`). Make a key in the web page's API keys panel or with "
    "`cutout keys create NAME`. The remove.bg-compatible API lives at `/v1.0` (see the README)."
)


@bp.get("/api/v1/openapi.json")
def spec() -> ResponseReturnValue:
    return jsonify(document())


def document() -> dict[str, Any]:
    """Built once per app from the live URL map and the views' declarations."""
    cached: dict[str, Any] | None = current_app.extensions.get("cutout.openapi")
    if cached is None:
        cached = openapi.build(current_app, "api", title="cutout API", description=DESCRIPTION)
        current_app.extensions["cutout.openapi"] = cached
    return cached


@bp.get("/api/docs")
def page() -> ResponseReturnValue:
    return render_template("api_docs.html")


@bp.get("/api/docs/assets/<path:name>")
def asset(name: str) -> ResponseReturnValue:
    if name not in ASSETS:
        return jsonify(error="not_found", message="No such file."), 404
    return send_from_directory(str(swagger_ui_path), name, max_age=86400)
