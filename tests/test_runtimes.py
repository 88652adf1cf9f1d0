"""Runtimes and model pre/post-processing.

A tiny ONNX graph built with ``onnx.helper`` checks each spec's preprocessing and each runtime
cheaply; the real ISNet model then checks that OpenVINO and onnxruntime agree on real photos.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from cutout.config import Settings
from cutout.engine import compile_cache, model_engine, runtimes
from cutout.engine.base import BoundedEngine, predict
from cutout.engine.fused import FusedEngine
from cutout.engine.local import LocalEngine, input_size, postprocess, preprocess
from cutout.engine.quantize import drop_stale_blobs
from cutout.engine.registry import MODELS, get_spec
from cutout.engine.runtimes import (
    OnnxRuntime,
    OpenVINORuntime,
    cpu_has_bf16,
    load_runtime,
    openvino,
)
from cutout.errors import ConfigError, EngineBusy, EngineError
from cutout.imaging.compose import OutputOptions
from cutout.imaging.decode import Limits
from cutout.memory import estimate
from cutout.pipeline import remove_background
from tests.conftest import Sample
from tests.helpers import encode, synthetic_photo
from tests.live import proc_status, reset_peak

SIZE = 16


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """input [1,3,S,S] -> output = mean over channels [1,1,S,S]; side = its negation."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input", "axes"], ["output"], keepdims=1),
            helper.make_node("Neg", ["output"], ["side"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
            helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
        ],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("choice", ["openvino", "onnxruntime"])
def test_runtimes_run_the_selected_output(tiny_model: Path, choice: str) -> None:
    runtime = load_runtime(tiny_model, choice=choice, precision="f32", output_name="output")
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    assert np.allclose(runtime.run(x), x.mean(axis=1, keepdims=True), atol=1e-6)
    assert runtime.name.startswith(choice)


def test_openvino_requests_are_not_shared_between_threads(tiny_model: Path) -> None:
    runtime = load_runtime(tiny_model, choice="openvino", precision="f32", slots=2)
    inputs = [np.full((1, 3, SIZE, SIZE), float(i), np.float32) for i in range(8)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = runtime.run(inputs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.allclose(results[i], float(i)) for i in range(8))


@pytest.mark.parametrize(("threads", "slots", "streams"), [(1, 2, 2), (1, 1, 1), (0, 2, 1)])
def test_openvino_runs_a_slot_per_stream_when_passes_have_their_own_threads(
    tiny_model: Path, threads: int, slots: int, streams: int
) -> None:
    """CUTOUT_MAX_CONCURRENT=2 with CUTOUT_INFERENCE_THREADS=1 once compiled one stream of
    one thread: the two passes took turns on one core. Each slot now gets a stream of its
    own threads; with all cores per pass (0) the slots share one stream, as before."""
    runtime = load_runtime(
        tiny_model, choice="openvino", precision="f32", threads=threads, slots=slots
    )
    assert isinstance(runtime, OpenVINORuntime)
    assert runtime.streams == streams
    x = np.ones((1, 3, SIZE, SIZE), np.float32)
    assert np.allclose(runtime.run(x), 1.0)


def test_openvino_leaves_the_threads_to_the_scheduler(tiny_model: Path) -> None:
    """Pinned, every process's threads took the same first cores: two one-thread workers
    shared core 0 and ran at half speed."""
    runtime = load_runtime(tiny_model, choice="openvino", precision="f32", threads=1)
    assert isinstance(runtime, OpenVINORuntime)
    assert runtime.pinned is False


def test_auto_prefers_openvino_on_cpu(tiny_model: Path) -> None:
    runtime = load_runtime(tiny_model, choice="auto")
    expected = "bf16" if cpu_has_bf16() else "f32"
    assert runtime.name == f"openvino/{expected}"


def test_bad_runtime_choices(tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_runtime(tiny_model, choice="tensorflow")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(EngineError, match="Could not load"):
        load_runtime(broken, choice="onnxruntime")


def test_isnet_preprocessing_matches_the_model_card() -> None:
    # imgly ISNet: RGB, (pixel - 128) / 256, NCHW at 1024
    image = Image.new("RGB", (300, 200), (0, 128, 255))
    x = preprocess(image, get_spec("isnet"))
    assert x.shape == (1, 3, 1024, 1024) and x.dtype == np.float32
    assert np.allclose(x[0, :, 5, 5], [(0 - 128) / 256, 0.0, (255 - 128) / 256])


def test_rembg_style_preprocessing_divides_by_the_image_maximum() -> None:
    image = Image.new("RGB", (50, 50), (100, 50, 0))
    x = preprocess(image, get_spec("u2net"))
    assert x.shape == (1, 3, 320, 320)
    mean, std = np.array(MODELS["u2net"].mean), np.array(MODELS["u2net"].std)
    assert np.allclose(x[0, :, 0, 0], (np.array([1.0, 0.5, 0.0]) - mean) / std, atol=1e-5)


def test_postprocessing_variants() -> None:
    raw = np.array([[[[-2.0, 0.0], [2.0, 4.0]]]], np.float32)
    assert np.allclose(postprocess(raw, get_spec("isnet")), [[0, 0], [1, 1]])
    assert np.allclose(postprocess(raw, get_spec("u2net")), [[0, 1 / 3], [2 / 3, 1]])
    sig = 1 / (1 + np.exp(-raw[0, 0]))
    expected = (sig - sig.min()) / (sig.max() - sig.min())
    assert np.allclose(postprocess(raw, get_spec("birefnet-general")), expected, atol=1e-6)


def test_local_engine_runs_a_spec_end_to_end(tiny_model: Path) -> None:
    spec = replace(get_spec("isnet"), input_size=SIZE, output_name="output")
    engine = LocalEngine(
        spec,
        OnnxRuntime(
            tiny_model, input_name="input", output_name="output", threads=1, use_cuda=False
        ),
    )
    mask = engine.predict_mask(Image.new("RGB", (40, 30), (255, 255, 255)))
    # white -> (255-128)/256 per channel -> mean 0.496
    assert mask.shape == (SIZE, SIZE) and np.allclose(mask, 127 / 256, atol=1e-4)


class SlowEngine:
    """Stands in for a model to exercise BoundedEngine's admission control."""

    name = model = runtime = "slow"

    def __init__(self) -> None:
        self.release = threading.Event()

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        self.release.wait(5)
        return np.zeros((2, 2), np.float32)


def test_bounded_engine_refuses_when_the_queue_is_full() -> None:
    inner = SlowEngine()
    engine = BoundedEngine(inner, slots=1, max_waiting=1, timeout=5)
    image = synthetic_photo(8, 8)
    threads = [threading.Thread(target=engine.predict_mask, args=(image,)) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = threading.Event()
    while engine.admission.waiting < 1 and not deadline.wait(0.01):
        pass
    with pytest.raises(EngineBusy):  # one running, one waiting: the third is refused at once
        engine.predict_mask(image)
    inner.release.set()
    for t in threads:
        t.join()
    assert engine.predict_mask(image).shape == (2, 2)  # and it recovers


def test_bounded_engine_times_out_waiting() -> None:
    inner = SlowEngine()
    engine = BoundedEngine(inner, slots=1, max_waiting=5, timeout=0.1)
    running = threading.Thread(target=engine.predict_mask, args=(synthetic_photo(8, 8),))
    running.start()
    with pytest.raises(EngineBusy, match="Timed out"):
        while True:  # until the first call holds the slot
            engine.predict_mask(synthetic_photo(8, 8))
    inner.release.set()
    running.join()


@pytest.mark.model
def test_openvino_and_onnxruntime_agree_on_real_photos(
    model_settings: Settings, real_engine: FusedEngine, samples: list[Sample]
) -> None:
    """The fast float runtime must not change the answer: masks within 0.001 MAE of onnxruntime.

    Measured on all 29 photos: mean 0.00023; the worst, a soft matte of hair (GT01), 0.0011
    (AMD Zen 4, AVX-512 BF16). On an Intel Xeon with AMX (family 6, model 207) bf16 runs on
    AMX tiles and GT01 differs by 0.0019, five other photos by 0.0003 at most.
    (The INT8 build is judged against the ground truth instead, in test_quality.py.)
    """
    spec = get_spec(model_settings.model)
    fast = model_engine(spec, model_settings.replace(runtime="openvino", precision="bf16"))
    reference = model_engine(spec, model_settings.replace(runtime="onnxruntime"))
    assert fast.runtime == "openvino/bf16" if cpu_has_bf16() else "openvino/f32"
    diffs = {}
    # three photos, GT01 (the worst) among them: onnxruntime is slow (six until stop 30)
    for sample in samples[::10]:
        with Image.open(sample.image) as image:
            rgb = image.convert("RGB")
        diffs[sample.name] = float(
            np.abs(fast.predict_mask(rgb) - reference.predict_mask(rgb)).mean()
        )
    assert np.mean(list(diffs.values())) < 0.001, diffs
    assert max(diffs.values()) < 0.0025, diffs  # one hair matte; the mean stays < 0.001


@pytest.mark.model
def test_the_default_engine_is_int8_isnet_fused_with_modnet(real_engine: FusedEngine) -> None:
    assert real_engine.primary.runtime == "openvino/int8"
    assert real_engine.secondary.model == "modnet"
    assert real_engine.secondary.runtime == "openvino/int8"
    assert real_engine.name == "local:isnet+modnet"


def test_modnet_input_keeps_the_aspect_in_multiples_of_32() -> None:
    spec = get_spec("modnet")
    assert spec.input_size == 288  # not MODNet's own 512: see the registry
    assert input_size((400, 250), spec) == (384, 224)  # spans 288: only rounded down
    assert input_size((200, 150), spec) == (384, 288)  # small: short side up to 288
    assert input_size((4000, 3000), spec) == (384, 288)  # large: short side down to 288
    x = preprocess(Image.new("RGB", (64, 48), (255, 0, 127)), spec)
    assert x.shape == (1, 3, 288, 384)
    assert np.allclose(x[0, :, 0, 0], [1.0, -1.0, -0.00392], atol=1e-4)  # (p - 127.5) / 127.5


@pytest.mark.parametrize("size", [(280, 2), (2, 280), (20000, 100), (9000, 3000), (1, 1)])
def test_modnet_input_is_bounded_whatever_the_photo_aspect(size: tuple[int, int]) -> None:
    """A sliver of a photo once became a 40320 x 288 input (210 MB more than admission knew)."""
    width, height = input_size(size, get_spec("modnet"))
    assert min(width, height) <= 288 and max(width, height) <= 3 * 288
    assert width % 32 == height % 32 == 0


@pytest.mark.model
def test_new_input_shapes_do_not_grow_the_process(real_engine: FusedEngine) -> None:
    """Photos of ever new aspects (MODNet's input follows it) must not each leave memory
    behind: OpenVINO's per-shape cache grew a process by 7 MB per shape (560 MB for 80)."""
    modnet = real_engine.secondary
    shapes = [(288, long) for long in range(288, 3 * 288 + 1, 32)]
    shapes += [(short, long) for short in range(64, 288, 32) for long in (480, 672)]
    first, then = shapes[::2], shapes[1::2]  # warm up on some shapes, then measure others
    for height, width in first + [(w, h) for h, w in first]:
        modnet.infer(np.zeros((1, 3, height, width), np.float32))
    before = proc_status(os.getpid(), "VmRSS")
    for height, width in then + [(w, h) for h, w in then]:
        modnet.infer(np.zeros((1, 3, height, width), np.float32))
    grown = (proc_status(os.getpid(), "VmRSS") - before) / 2**20
    assert grown < 40, f"{2 * len(then)} new input shapes grew the process by {grown:.0f} MB"


@pytest.mark.model
@pytest.mark.parametrize("size", [(280, 1), (1, 280), (280, 2)])
def test_a_sliver_of_a_photo_costs_no_more_than_admission_reserves(
    real_engine: FusedEngine, size: tuple[int, int]
) -> None:
    """A 77-byte PNG of 280 x 1 px once took 2.4 GB and 14 s (MODNet's input followed its
    aspect): now its peak stays under the estimate admission reserves for its pixels."""
    limits = Limits(max_bytes=1 << 20, max_pixels=10**7)
    remove_background(
        encode(Image.new("RGB", (640, 480)), "PNG"),
        real_engine,
        limits=limits,
        options=OutputOptions(),
    )
    data = encode(Image.new("RGB", size, (200, 30, 30)), "PNG")
    before = proc_status(os.getpid(), "VmRSS")
    reset_peak(os.getpid())
    remove_background(data, real_engine, limits=limits, options=OutputOptions())
    peak = proc_status(os.getpid(), "VmHWM") - before
    assert peak < estimate(*size), f"{size}: peak growth {peak / 2**20:.0f} MB"


def test_compile_cache_is_optional(tiny_model: Path, tmp_path: Path) -> None:
    """A cache dir that cannot be created (read-only root file system) just means no cache."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache's parent directory should be")
    runtime = load_runtime(tiny_model, choice="openvino", cache_dir=blocker / "cache")
    x = np.ones((1, 3, SIZE, SIZE), np.float32)
    assert np.allclose(runtime.run(x), 1.0)
    cached = load_runtime(tiny_model, choice="openvino", cache_dir=tmp_path / "cache")
    assert np.allclose(cached.run(x), 1.0) and any((tmp_path / "cache").iterdir())


def _save_ir(folder: Path, factor: float, manifest: str) -> Path:
    """An IR like the INT8 builds (input * factor, one output) with a manifest beside it."""
    ov = openvino()
    x = ov.opset13.parameter([1, 3, SIZE, SIZE], np.float32, name="input")
    y = ov.opset13.multiply(x, ov.opset13.constant(np.float32(factor)))
    xml = folder / "tiny.int8.xml"
    ov.save_model(ov.Model([y], [x], "tiny"), str(xml))
    xml.with_suffix(".json").write_text(manifest)
    return xml


def test_a_rebuilt_ir_is_never_served_its_predecessors_compiled_blob(tmp_path: Path) -> None:
    """IRs compile from their path, which is all OpenVINO's cache key sees: compile_cache()
    gives each build its own folder, and a new build removes the old folders."""
    x = np.ones((1, 3, SIZE, SIZE), np.float32)
    first = _save_ir(tmp_path, 1.0, '{"build": 1}')
    old_cache = compile_cache(first)
    assert np.allclose(load_runtime(first, choice="openvino", cache_dir=old_cache).run(x), 1.0)
    assert any(old_cache.iterdir())  # the blob a second start would load
    rebuilt = _save_ir(tmp_path, 2.0, '{"build": 2}')
    new_cache = compile_cache(rebuilt)
    assert new_cache != old_cache and rebuilt == first
    assert np.allclose(load_runtime(rebuilt, choice="openvino", cache_dir=new_cache).run(x), 2.0)
    drop_stale_blobs(rebuilt)
    assert not old_cache.exists() and any(new_cache.iterdir())


def test_engines_that_cannot_judge_themselves_give_no_confidence() -> None:
    """The remote engine, or one model alone: the cut-out is made, its score is None."""
    inner = SlowEngine()
    inner.release.set()
    engine = BoundedEngine(inner, slots=1, max_waiting=1, timeout=5)
    prediction = predict(engine, synthetic_photo(8, 8))
    assert prediction.confidence is None and prediction.mask.shape == (2, 2)
    cutout = remove_background(
        encode(synthetic_photo(32, 24), "PNG"),
        engine,
        limits=Limits(max_bytes=1 << 20, max_pixels=1 << 20),
        options=OutputOptions(),
    )
    assert (cutout.confidence, cutout.needs_review) == (None, None)


def test_openvino_is_imported_without_its_converter_and_telemetry() -> None:
    """`import openvino` imports its model converter, which sends a usage event to Google
    Analytics on import (a missing consent file counts as consent) and costs 0.1 s of every
    start: the engine never uses the converter, so it is left out, and importable later."""
    script = (
        "import sys\n"
        "from cutout.engine.runtimes import cpu_has_bf16, openvino\n"
        "openvino().Core(); cpu_has_bf16()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('openvino.tools', "
        "'openvino_telemetry'))))\n"
        "from openvino.tools.ovc import convert_model\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_openvino_keeps_to_the_cpu_quota_when_threads_are_left_to_it(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO counts the cores it may run on, not the quota (`--cpus 1`: 2 threads on 2
    cores); tests/container checks the same in a real container."""
    monkeypatch.setattr(runtimes, "cpu_limit", lambda: 1)
    quota = load_runtime(tiny_model, choice="openvino", precision="f32", threads=0)
    chosen = load_runtime(tiny_model, choice="openvino", precision="f32", threads=2)
    assert isinstance(quota, OpenVINORuntime) and isinstance(chosen, OpenVINORuntime)
    assert (quota.threads, chosen.threads) == (1, 2)
