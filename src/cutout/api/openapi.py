"""The OpenAPI 3.1 document of ``/api/v1``, generated from the code, never written by hand.

Each view declares its contract with :func:`operation` (summary, request models, responses);
the same pydantic models validate the requests, and pydantic emits their JSON Schema (2020-12,
the dialect OpenAPI 3.1 uses). :func:`build` walks Flask's URL map, so a route that exists is
documented, and a documented route exists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel

from cutout import __version__

F = TypeVar("F", bound=Callable[..., Any])
#: Statuses every key-authenticated operation can answer, with what they mean.
COMMON = {
    401: "No API key, or an unknown or revoked one.",
    429: "Rate limit exceeded; see Retry-After.",
}
RATE_HEADERS = {
    name: {"description": text, "schema": {"type": "integer"}}
    for name, text in (
        ("X-RateLimit-Limit", "Requests allowed in the current window."),
        ("X-RateLimit-Remaining", "Requests left in the current window."),
        ("X-RateLimit-Reset", "When the window resets (Unix time)."),
    )
}


@dataclass(frozen=True)
class Response:
    description: str
    model: type[BaseModel] | None = None
    media_types: tuple[str, ...] = ("application/json",)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: dict[int, Response]
    json_body: type[BaseModel] | None = None
    form_body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: dict[str, str] = field(default_factory=dict)  # name -> description
    description: str = ""


def operation(op: Operation) -> Callable[[F], F]:
    """Attach *op* to a view; :func:`build` reads it from there."""

    def mark(view: F) -> F:
        view.__openapi__ = op  # type: ignore[attr-defined]
        return view

    return mark


def build(app: Flask, blueprint: str, *, title: str, description: str) -> dict[str, Any]:
    """The OpenAPI document of every route of *blueprint* in *app*."""
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith(blueprint + "."):
            continue
        op: Operation | None = getattr(app.view_functions[rule.endpoint], "__openapi__", None)
        if op is None:
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(op, rule.arguments, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__, "description": description},
        "servers": [{"url": "/"}],
        "security": [{"ApiKeyHeader": []}, {"BearerAuth": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "BearerAuth": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _operation(op: Operation, path_args: set[str], schemas: dict[str, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in sorted(path_args)
    ]
    if op.query is not None:
        query = _schema(op.query, schemas, inline=True)
        for name, schema in query["properties"].items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in query.get("required", []),
                    "schema": schema,
                }
            )
    for name, text in op.headers.items():
        parameters.append(
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": text,
                "schema": {"type": "string", "maxLength": 255},
            }
        )
    out: dict[str, Any] = {"summary": op.summary, "responses": _responses(op, schemas)}
    if op.description:
        out["description"] = op.description
    if parameters:
        out["parameters"] = parameters
    content = {}
    if op.json_body is not None:
        content["application/json"] = {"schema": _schema(op.json_body, schemas)}
    if op.form_body is not None:
        content["multipart/form-data"] = {"schema": _schema(op.form_body, schemas)}
    if content:
        out["requestBody"] = {"required": True, "content": content}
    return out


def _responses(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    from cutout.api.models import ErrorBody

    merged = {status: Response(text, ErrorBody) for status, text in COMMON.items()}
    merged.update(op.responses)
    out: dict[str, Any] = {}
    for status, response in sorted(merged.items()):
        body: dict[str, Any] = {"description": response.description}
        if response.model is not None:
            schema = _schema(response.model, schemas)
            body["content"] = {media: {"schema": schema} for media in response.media_types}
        elif response.media_types and status != 204:
            binary = {"type": "string", "contentMediaType": "application/octet-stream"}
            body["content"] = {media: {"schema": binary} for media in response.media_types}
        headers = dict(RATE_HEADERS)
        headers.update(
            {
                k: {"description": v, "schema": {"type": "string"}}
                for k, v in response.headers.items()
            }
        )
        body["headers"] = headers
        out[str(status)] = body
    return out


def _schema(model: type[BaseModel], schemas: dict[str, Any], *, inline: bool = False) -> Any:
    """*model*'s JSON Schema: registered under components (with its $defs), or inline."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = definition
    if inline:
        return schema
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}
