"""MkDocs hooks: the pages made from the code, so that they cannot drift from it.

* ``<!-- cutout:settings -->`` becomes the table of every setting, from the metadata of
  :class:`cutout.config.Settings` (variable, default, sentence);
* ``<!-- cutout:openapi -->`` becomes the reference of ``/api/v1``, from the OpenAPI document
  the app generates (the same one it serves at ``/api/v1/openapi.json``, also written into the
  site as ``openapi.json``);
* pages other branches add (``jobs.md``, ``deployment.md``, ``engine.md``) join the navigation
  when they exist, in their section.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Any

#: Pages that may appear under docs/ (written on other branches), and the nav section and
#: position they take when they do.
OPTIONAL_PAGES = {
    "jobs.md": ("User guide", "Batch jobs"),
    "deployment.md": ("Deploy and operate", "Deployment, run for real"),
    "engine.md": ("How it works", "The engine"),
}


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])
    for page, (section, title) in OPTIONAL_PAGES.items():
        if not (docs / page).is_file():
            continue
        for entry in config["nav"]:
            if isinstance(entry, dict) and section in entry:
                entry[section].insert(0, {title: page})
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if "<!-- cutout:settings -->" in markdown:
        markdown = markdown.replace("<!-- cutout:settings -->", settings_table())
    if "<!-- cutout:openapi -->" in markdown:
        markdown = markdown.replace("<!-- cutout:openapi -->", openapi_reference())
    return markdown


def on_files(files: Any, config: Any) -> Any:
    """Publish the OpenAPI document beside the pages, as ``openapi.json``."""
    from mkdocs.structure.files import File

    document = json.dumps(openapi_document(), indent=2) + "\n"
    files.append(File.generated(config, "openapi.json", content=document))
    return files


def settings_table() -> str:
    """Every setting: its variable, its default and its sentence, as Markdown."""
    from cutout.config import ENV_FIELDS

    rows = ["| Variable | Default | What it does |", "|---|---|---|"]
    for field in ENV_FIELDS:
        rows.append(f"| `{field.metadata['env']}` | {_default(field)} | {field.metadata['help']} |")
    return "\n".join(rows)


def _default(field: dataclasses.Field[Any]) -> str:
    if field.default_factory is not dataclasses.MISSING:
        value: Any = field.default_factory()
        return f"`{str(value).replace(str(Path.home()), '~')}`"
    if field.default is None or field.default == "":
        return "(unset)"
    return f"`{field.default}`"


_document: dict[str, Any] | None = None


def openapi_document() -> dict[str, Any]:
    """The app's own OpenAPI document of ``/api/v1`` (an app made for the purpose, no model)."""
    global _document
    if _document is None:
        from cutout.app import create_app
        from cutout.config import Settings
        from cutout.extensions import close_app

        with tempfile.TemporaryDirectory() as data:
            settings = Settings.from_env(
                environ={"CUTOUT_ENV": "testing", "CUTOUT_DATA_DIR": data}, dotenv_path=None
            )
            app = create_app(settings.replace(sweep_interval=0.0), engine=_NoEngine())
            _document = app.test_client().get("/api/v1/openapi.json").get_json()
            close_app(app)  # its first request started the job threads: stop them first
    return _document


class _NoEngine:
    """Stands in for the model: building the document never removes a background."""

    name = model = runtime = "none"

    def predict_mask(self, image: Any) -> Any:
        raise NotImplementedError


def openapi_reference() -> str:
    """Each operation of the document: method, path, summary, parameters, body, responses."""
    doc = openapi_document()
    out = [
        f"OpenAPI {doc['openapi']}, version {doc['info']['version']}: [`openapi.json`]"
        "(../openapi.json), as the app serves it at `/api/v1/openapi.json`."
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            out += ["", f"### `{method.upper()} {path}`", "", op.get("summary", "")]
            if op.get("description"):
                out += ["", op["description"]]
            params = op.get("parameters", [])
            if params:
                out += ["", "| parameter | in | required | description |", "|---|---|---|---|"]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} "
                        f"| {p.get('description', '')} |"
                    )
            body = op.get("requestBody", {}).get("content", {})
            if body:
                out += ["", "Request body: " + ", ".join(f"`{t}`" for t in body) + "."]
            out += ["", "| status | meaning |", "|---|---|"]
            for status, response in op.get("responses", {}).items():
                out.append(f"| {status} | {response.get('description', '')} |")
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out += ["", "### Schemas", ""]
        for name, schema in schemas.items():
            fields = ", ".join(f"`{k}`" for k in schema.get("properties", {}))
            out.append(f"* **{name}**: {schema.get('description', '')} Fields: {fields}.")
    return "\n".join(out)
