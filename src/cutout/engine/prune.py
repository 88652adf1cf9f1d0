"""Dead channels: convolution outputs that a ReLU zeroes on every input, removed from the graph.

ISNet computes 14,400 channels behind its 112 ReLUs, and 900 of them are zero on every one of
the 36 calibration inputs (:mod:`cutout.engine.quantize`): their convolution's bias and weights
keep them below zero, so they feed nothing but zeros to the layers after them. Of the 900, one
was above zero on any of the 29 research photos, on one photo, at 1.5 % of its layer's typical
peak, and 523 can be cut without changing the graph's shape elsewhere: those whose ReLU feeds
only convolutions (through max-pooling, resizing, type conversions and concatenation). That is
4.5 % of ISNet's multiply-adds and 3 % of its INT8 pass on a Zen 4. The others feed a residual
sum, which needs the full width.

Cutting a channel removes its row from the producing convolution (weights and bias) and its
column from every convolution that reads it. On an input where the channel is really zero the
result is unchanged (up to float rounding); :func:`dead_channels` finds them on the inputs it
is given, so what counts as dead is decided by the calibration photos, once, at build time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def prunable(model: Any) -> list[Any]:
    """The ReLUs of *model* whose channels can be cut: each follows a convolution plus a
    constant bias, and its output reaches only convolutions, through operations that carry
    each channel on its own (:func:`_walk`), so a zero channel stays zero."""
    return [op for op in model.get_ordered_ops() if _producer(op) and _readers(op) is not None]


def dead_channels(model: Any, inputs: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """The channels of each :func:`prunable` ReLU of *model* that are zero everywhere on
    every one of *inputs*, by the ReLU's name (f32 arithmetic: exact zeros, not bf16's)."""
    import openvino as ov
    import openvino.opset13 as ops

    relus = prunable(model)
    if not relus:
        return {}
    # The maximum per channel inside the graph: the runtime frees each activation as it
    # goes, where asking for the ReLUs' outputs would hold all of them (GBs at 1024 px).
    peaks = [ops.reduce_max(relu.output(0), ops.constant([0, 2, 3]), False) for relu in relus]
    probe = ov.Model([peak.output(0) for peak in peaks], model.get_parameters(), "dead-channels")
    compiled = ov.Core().compile_model(probe, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    highest: list[np.ndarray] | None = None
    for tensor in inputs:
        result = compiled(tensor)
        got = [np.asarray(result[i]) for i in range(len(relus))]
        highest = (
            got
            if highest is None
            else [np.maximum(a, b) for a, b in zip(highest, got, strict=True)]
        )
    if highest is None:
        return {}
    return {
        relu.get_friendly_name(): np.flatnonzero(peak <= 0)
        for relu, peak in zip(relus, highest, strict=True)
        if (peak <= 0).any()
    }


def prune(model: Any, dead: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the *dead* channels (by ReLU name, as :func:`dead_channels` gives them) out of
    *model*, in place; return those it cut, by ReLU. ReLUs that are not :func:`prunable` in
    *model* are left alone."""
    import openvino.opset13 as ops

    plan = []
    readers: dict[str, Any] = {}  # by name: the Python wrappers of one node are not equal
    columns: dict[str, list[int]] = {}
    for relu in prunable(model):
        cut = dead.get(relu.get_friendly_name())
        if cut is None or not len(cut):
            continue
        plan.append((relu, np.asarray(cut)))
        for reader, offset in _readers(relu) or []:
            readers[reader.get_friendly_name()] = reader
            columns.setdefault(reader.get_friendly_name(), []).extend(offset + cut)
    if not plan:
        return {}
    for relu, cut in plan:  # the producers: drop rows, of the weights and the bias
        producer = _producer(relu)
        assert producer is not None, "prunable() checked it"
        add, conv = producer
        _cut_weights(conv, cut, 0, ops)
        _replace(add, 1, np.delete(_constant(add, 1), cut, axis=1), ops)
    for name, cut_columns in columns.items():  # the readers: drop the matching input columns
        _cut_weights(readers[name], np.asarray(cut_columns), 1, ops)
    _follow_shapes(model, ops)
    return {relu.get_friendly_name(): cut for relu, cut in plan}


def multiply_adds(model: Any) -> int:
    """The multiply-adds of *model*'s convolutions (static shapes)."""
    total = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            weights, out = op.get_input_shape(1), op.get_output_shape(0)
            # [O, I, k, k], or [groups, O/groups, I/groups, k, k]: each output sums I/groups
            per_output = int(np.prod(weights[2:] if len(weights) == 5 else weights[1:]))
            total += per_output * int(np.prod(out[1:]))
    return total


def _producer(relu: Any) -> tuple[Any, Any] | None:
    """(bias Add, Convolution) when *relu* computes ReLU(conv(x, constant) + constant)."""
    if relu.get_type_name() != "Relu":
        return None
    add = relu.input_value(0).get_node()
    if add.get_type_name() != "Add" or not _is_constant(add, 1):
        return None
    conv = add.input_value(0).get_node()
    if conv.get_type_name() != "Convolution" or _weights(conv) is None:
        return None
    if len(conv.output(0).get_target_inputs()) != 1 or len(add.output(0).get_target_inputs()) != 1:
        return None  # another reader would lose the channels too
    bias_shape = list(add.get_input_shape(1))
    if bias_shape != [1, conv.get_output_shape(0)[1], 1, 1]:
        return None
    return add, conv


def _readers(op: Any) -> list[tuple[Any, int]] | None:
    """The convolutions that read *op*'s channels, each with the index its channel 0 has in
    that convolution's input; None when any reader is something else."""
    found: list[tuple[Any, int]] = []
    for reader, offset in _walk(op, 0):
        if reader is None:
            return None
        found.append((reader, offset))
    return found or None


def _walk(op: Any, offset: int) -> Iterator[tuple[Any, int]]:
    for target in op.output(0).get_target_inputs():
        node, index = target.get_node(), target.get_index()
        kind = node.get_type_name()
        if kind == "Convolution" and index == 0 and _weights(node) is not None:
            yield node, offset
        elif kind == "Concat" and node.get_attributes()["axis"] in (1, -3):
            before = sum(node.get_input_shape(i)[1] for i in range(index))
            yield from _walk(node, offset + before)
        elif index == 0 and (
            kind in ("MaxPool", "Convert")
            or (kind == "Interpolate" and _keeps_channels(node))
            or (kind == "FakeQuantize" and _per_tensor(node))
        ):
            yield from _walk(node, offset)
        else:
            yield None, offset


def _weights(conv: Any) -> tuple[Any, Any | None] | None:
    """The constant holding *conv*'s [O, I, k, k] weights, and its per-output-channel scale
    when they are quantized (NNCF's form: INT8 constant -> Convert -> Multiply by an [O, 1, 1,
    1] scale); None for any other form."""
    source = conv.input_value(1).get_node()
    if source.get_type_name() == "Constant":
        return source, None
    if source.get_type_name() != "Multiply" or not _is_constant(source, 1):
        return None
    convert, scale = source.input_value(0).get_node(), source.input_value(1).get_node()
    if convert.get_type_name() != "Convert" or not _is_constant(convert, 0):
        return None
    weights = convert.input_value(0).get_node()
    shape = list(scale.get_output_shape(0))
    if shape != [weights.get_output_shape(0)[0], 1, 1, 1]:
        return None
    return weights, scale


def _cut_weights(conv: Any, cut: np.ndarray, axis: int, ops: Any) -> None:
    """Drop the output (*axis* 0, with their scales) or input (*axis* 1) channels *cut* from
    *conv*'s weights."""
    found = _weights(conv)
    assert found is not None  # checked when planning
    weights, scale = found
    for constant in (weights, scale) if axis == 0 else (weights,):
        if constant is not None:
            _rewire_constant(constant, np.delete(constant.get_data(), cut, axis=axis), ops)


def _rewire_constant(constant: Any, value: np.ndarray, ops: Any) -> None:
    """Make every reader of *constant* read *value* instead."""
    fresh = ops.constant(np.ascontiguousarray(value)).output(0)
    for target in constant.output(0).get_target_inputs():
        target.replace_source_output(fresh)


def _per_tensor(quantizer: Any) -> bool:
    """Whether the FakeQuantize *quantizer* has one range for all channels and maps zero to
    zero (NNCF's quantizers after a ReLU: their range starts at 0), so that a zero channel
    stays zero through it."""
    if not all(
        _is_constant(quantizer, i) and _constant(quantizer, i).size == 1 for i in range(1, 5)
    ):
        return False
    low, high, out_low, out_high = (float(_constant(quantizer, i).item()) for i in range(1, 5))
    levels = int(quantizer.get_attributes()["levels"])
    if high <= low or levels < 2:
        return False
    if low >= 0.0:  # below the range: the lowest output
        zero = out_low
    elif high < 0.0:
        zero = out_high
    else:  # the FakeQuantize formula, in float64
        level = round((0.0 - low) / (high - low) * (levels - 1))
        zero = level / (levels - 1) * (out_high - out_low) + out_low
    return abs(zero) <= 1e-6 * max(abs(out_low), abs(out_high))


def _keeps_channels(resize: Any) -> bool:
    """Whether the Interpolate *resize* resizes only the spatial axes and states its output
    size as a constant [N, C, H, W] that :func:`_follow_shapes` can rewrite."""
    if not _states_sizes(resize):
        return False
    sizes = _constant(resize, 1)
    return len(sizes) == 4 and int(sizes[1]) == resize.get_input_shape(0)[1]


def _states_sizes(op: Any) -> bool:
    """Whether *op* is an Interpolate given its output size (not scales) as a constant."""
    return bool(
        op.get_type_name() == "Interpolate"
        and op.get_input_size() == 2
        and op.get_attributes().get("shape_calculation_mode") == "sizes"
        and _is_constant(op, 1)
    )


def _follow_shapes(model: Any, ops: Any) -> None:
    """Re-infer the shapes in order, giving each channel-keeping resize its new width."""
    for op in model.get_ordered_ops():
        if _states_sizes(op):
            sizes = _constant(op, 1)
            width = op.get_input_partial_shape(0)[1]
            if len(sizes) == 4 and width.is_static and int(sizes[1]) != width.get_length():
                wider = np.array([sizes[0], width.get_length(), *sizes[2:]], sizes.dtype)
                _replace(op, 1, wider, ops)
        op.validate_and_infer_types()
    model.validate_nodes_and_infer_types()


def _is_constant(op: Any, index: int) -> bool:
    return bool(op.input_value(index).get_node().get_type_name() == "Constant")


def _constant(op: Any, index: int) -> np.ndarray:
    return np.asarray(op.input_value(index).get_node().get_data())


def _replace(op: Any, index: int, value: np.ndarray, ops: Any) -> None:
    op.input(index).replace_source_output(ops.constant(np.ascontiguousarray(value)).output(0))
