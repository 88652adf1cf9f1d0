"""Cutting dead channels (cutout.engine.prune) on a small graph shaped like ISNet's blocks,
and on the real ISNet with real photos it never saw when its dead channels were chosen."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from PIL import Image

from cutout.engine import prune as p

SIZE = 16
OUT = (2 * SIZE, 2 * SIZE)  # the last Resize doubles the input
#: Channels the small graph's biases hold below zero whatever the input (in [0, 1]).
DEAD = {"r1": [2, 5], "r2": [0], "r3": [1]}
DEAD_CUT = {"r1": [2, 5], "r2": [0]}  # r3 feeds a sum


def block_model(path: Path) -> None:
    """conv -> relu (r1) -> maxpool -> conv -> relu (r2) -> resize to [1, 8, S, S] -> concat
    with r1 -> conv -> relu (r3) -> + a residual branch -> 2x resize (by scales, as MODNet's)
    -> conv 1x1 -> sigmoid. r1 and r2 reach only convolutions; r3 also feeds a sum, which
    needs all its channels."""
    rng = np.random.default_rng(1)

    def conv(name: str, out: int, inp: int, k: int, dead: list[int]) -> list[Any]:
        bias = np.ones(out, np.float32)  # weights ~0.1 on inputs in [0, 1]: always above zero,
        bias[dead] = -100.0  # and always below
        weights = rng.normal(0, 0.1, (out, inp, k, k)).astype(np.float32)
        return [
            numpy_helper.from_array(weights, f"{name}w"),
            numpy_helper.from_array(bias, f"{name}b"),
        ]

    inits = [
        *conv("c1", 8, 3, 3, DEAD["r1"]),
        *conv("c2", 8, 8, 3, DEAD["r2"]),
        *conv("c3", 4, 16, 3, DEAD["r3"]),
        *conv("c4", 4, 3, 1, []),
        *conv("c5", 1, 4, 1, []),
        numpy_helper.from_array(np.array([1, 8, SIZE, SIZE], np.int64), "sizes"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    pad: dict[str, Any] = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["input", "c1w", "c1b"], ["c1"], **pad),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2w", "c2b"], ["c2"], **pad),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node(
            "Resize",
            ["r2", "", "", "sizes"],
            ["u2"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("Concat", ["u2", "r1"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "c3w", "c3b"], ["c3"], **pad),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Conv", ["input", "c4w", "c4b"], ["c4"]),
        helper.make_node("Relu", ["c4"], ["r4"]),
        helper.make_node("Add", ["r3", "r4"], ["sum"]),
        helper.make_node("Resize", ["sum", "", "scales"], ["big"], mode="linear"),
        helper.make_node("Conv", ["big", "c5w", "c5b"], ["c5"]),
        helper.make_node("Sigmoid", ["c5"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "blocks",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [1, 1, *OUT])],
        inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def load(path: Path) -> Any:
    import openvino as ov
    from openvino._offline_transformations import apply_moc_transformations

    model = ov.Core().read_model(str(path))
    model = ov.Model([model.outputs[0].node], model.get_parameters())  # as quantize() does
    apply_moc_transformations(model, cf=True)
    return model


def run(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [np.asarray(compiled(x)[0]) for x in inputs]


def relu_named(model: Any, output: str) -> str:
    """The friendly name of the ReLU whose output tensor was *output* in the ONNX graph."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Relu" and output in op.output(0).get_names():
            return str(op.get_friendly_name())
    raise AssertionError(output)


def inputs(count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(count)]


def test_dead_channels_are_found_and_cut_where_only_convolutions_read_them(tmp_path: Path) -> None:
    block_model(tmp_path / "blocks.onnx")
    model, reference = load(tmp_path / "blocks.onnx"), load(tmp_path / "blocks.onnx")
    names = {relu_named(model, r): r for r in ("r1", "r2", "r3", "r4")}
    # r3 feeds the residual sum, r4 too: neither can lose a channel.
    assert sorted(names[op.get_friendly_name()] for op in p.prunable(model)) == ["r1", "r2"]

    dead = p.dead_channels(model, inputs(8, seed=0))
    assert {names[n]: list(c) for n, c in dead.items()} == DEAD_CUT

    before = p.multiply_adds(model)
    assert {names[n]: list(c) for n, c in p.prune(model, dead).items()} == DEAD_CUT
    # c1 loses 2 of 8 rows, c2 2 of 8 columns and 1 of 8 rows, c3 3 of 16 columns.
    each = SIZE * SIZE
    saved = 2 * 27 * each + (2 * 8 * 9 + 1 * 6 * 9) * each // 4 + 3 * 4 * 9 * each
    assert before - p.multiply_adds(model) == saved
    held_out = inputs(8, seed=1)  # inputs the dead channels were not chosen on
    for got, want in zip(run(model, held_out), run(reference, held_out), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_the_int8_graph_loses_the_same_channels_and_not_one_bit(tmp_path: Path) -> None:
    """As the build does it: dead channels found on the float graph, cut from NNCF's INT8 one
    (INT8 weights times a scale per channel, ReLUs followed by quantizers)."""
    from cutout.engine.quantize import telemetry_off

    with telemetry_off():
        import nncf

    block_model(tmp_path / "blocks.onnx")
    model = load(tmp_path / "blocks.onnx")
    names = {relu_named(model, r): r for r in ("r1", "r2")}
    dead = p.dead_channels(model, inputs(8, seed=0))
    quantized = nncf.quantize(
        model, nncf.Dataset(inputs(8, seed=0)), preset=nncf.QuantizationPreset.MIXED,
        subset_size=8, fast_bias_correction=True,
    )  # fmt: skip
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ordered_ops())
    reference = quantized.clone()
    before = p.multiply_adds(quantized)
    cut = p.prune(quantized, dead)
    assert {names[n]: list(c) for n, c in cut.items()} == DEAD_CUT
    assert p.multiply_adds(quantized) < before
    held_out = inputs(8, seed=1)
    for got, want in zip(run(quantized, held_out), run(reference, held_out), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_channel_alive_on_one_input_is_not_dead(tmp_path: Path) -> None:
    block_model(tmp_path / "blocks.onnx")
    model = load(tmp_path / "blocks.onnx")
    probe = inputs(4, seed=0)
    bright = np.full((1, 3, SIZE, SIZE), 1e4, np.float32)  # lifts channels past -100
    quiet = p.dead_channels(model, probe)
    lifted = p.dead_channels(model, [*probe, bright])
    assert sum(map(len, lifted.values())) < sum(map(len, quiet.values()))


def test_nothing_to_cut_leaves_the_graph_alone(tmp_path: Path) -> None:
    block_model(tmp_path / "blocks.onnx")
    model = load(tmp_path / "blocks.onnx")
    before = p.multiply_adds(model)
    assert p.prune(model, {}) == {}
    assert p.prune(model, {relu_named(model, "r3"): np.array([1])}) == {}  # not prunable
    assert p.multiply_adds(model) == before


def test_isnet_without_its_dead_channels_is_isnet_on_photos_it_never_saw(
    model_settings: Any, testdata: Path
) -> None:
    """The channels the build cut (chosen on the CC0 calibration photos) are cut from the float
    ISNet again; on research photos the choice never saw, its output is the uncut model's."""
    from cutout.engine.local import preprocess
    from cutout.engine.quantize import int8_path
    from cutout.engine.registry import get_spec
    from tests.conftest import missing

    spec = get_spec("isnet")
    xml = int8_path(spec, model_settings.model_dir)
    if xml is None:
        missing(f"the INT8 isnet is not built in {model_settings.model_dir}; run `make install`")
        return
    dead = json.loads(xml.with_suffix(".json").read_text())["pruned"]
    source = model_settings.model_dir / spec.filename
    model, reference = load(source), load(source)
    before = p.multiply_adds(model)
    cut = p.prune(model, {name: np.array(c) for name, c in dead.items()})
    assert sum(map(len, cut.values())) >= 500, (
        "ISNet had 523 prunable dead channels when this was written"
    )
    assert p.multiply_adds(model) < 0.96 * before
    names = sorted((testdata / "images").iterdir())[::10]  # 3 of the 29, 3 sources
    photos = [preprocess(Image.open(path).convert("RGB"), spec) for path in names]
    for path, got, want in zip(names, run(model, photos), run(reference, photos), strict=True):
        assert np.abs(got - want).max() < 1e-4, path.name
