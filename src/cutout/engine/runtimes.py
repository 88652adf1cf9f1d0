"""Inference runtimes: OpenVINO and onnxruntime behind one small interface.

``auto`` picks the fastest runtime present: onnxruntime with CUDA when a GPU is usable, else
OpenVINO (bf16 on CPUs with AVX-512 BF16 or AMX, f32 otherwise), else onnxruntime on the CPU.
OpenVINO also runs the INT8 builds of :mod:`cutout.engine.quantize` (precision ``int8``: the
quantized convolutions in INT8, what stayed float in bf16 where the CPU has it).
A runtime is compiled once per process and shared by threads; each concurrent caller borrows
its own OpenVINO infer request from a small pool, so callers never share mutable state.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import queue
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from cutout.errors import ConfigError, EngineError
from cutout.machine import cpu_limit

log = logging.getLogger(__name__)


class Runtime(Protocol):
    @property
    def name(self) -> str:
        """``openvino/bf16``, ``openvino/f32``, ``onnxruntime/cpu`` or ``onnxruntime/cuda``."""
        ...

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """Run one forward pass on an NCHW float32 tensor; return the selected output."""
        ...


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def cuda_available() -> bool:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None:
        return False
    folders = [Path(folder) / "capi" for folder in spec.submodule_search_locations or ()]
    if not any(any(folder.glob("*onnxruntime_providers_cuda*")) for folder in folders):
        # Only GPU builds ship the CUDA provider's library: no need to import onnxruntime
        # (25 ms of every start) to hear "no".
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


#: OpenVINO's model converter, which ``import openvino`` imports (inside ``try: ... except
#: ImportError``) and the engine never calls: importing it sends a usage event to Google
#: Analytics from a forked process (the ``openvino-telemetry`` package counts a missing consent
#: file as consent) and costs 0.1 s of every start.
CONVERTER = "openvino.tools.ovc"


def openvino() -> ModuleType:
    """The ``openvino`` module, imported without its model converter when it is not yet loaded.

    ``None`` in ``sys.modules`` is Python's documented way to make an import fail, which
    OpenVINO's ``__init__`` tolerates there; the marker is removed afterwards, so ``cutout
    models fetch`` (NNCF) can still import the converter. Should a future OpenVINO need its
    converter to import at all, it is imported as it ships.
    """
    if "openvino" not in sys.modules and CONVERTER not in sys.modules:
        sys.modules[CONVERTER] = None  # type: ignore[assignment]
        try:
            importlib.import_module("openvino")
        except ImportError:
            pass  # imported as it ships, below
        finally:
            if CONVERTER in sys.modules and sys.modules[CONVERTER] is None:
                del sys.modules[CONVERTER]
    return importlib.import_module("openvino")


def cpu_has_bf16() -> bool:
    """True when OpenVINO reports native bf16 support (AVX512_BF16 or AMX) on this CPU."""
    ov = openvino()

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def cpu_has_amx(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """True when the CPU has Intel AMX (the ``amx_tile`` flag; False where that is unknown)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any("amx_tile" in line.split() for line in text.splitlines() if line.startswith("flags"))


def stream_count(threads: int, slots: int) -> int:
    """OpenVINO streams for *slots* passes at once of *threads* threads each (0: all cores).

    One stream per slot when each pass has its own threads. One stream would take the slots'
    passes one at a time on *threads* cores (one core for a folder run with a thread per
    pass); two one-thread streams also skip the per-layer barrier of a two-thread pass:
    ISNet's throughput was 1.10x on 2 Zen 4 cores. With threads left to OpenVINO, the slots
    share one stream on all cores.
    """
    return slots if threads else 1


class OpenVINORuntime:
    """A model compiled by OpenVINO for the CPU, pruned to the one output we read."""

    def __init__(
        self,
        path: Path,
        *,
        input_name: str | None,
        output_name: str | None,
        precision: str,
        threads: int,
        slots: int,
        cache_dir: Path | None,
    ) -> None:
        ov = openvino()
        core = ov.Core()
        if cache_dir is not None and _usable_cache(cache_dir):
            # Compiled blobs: the next start (and every gunicorn worker) loads in ~0.3 s.
            core.set_property({"CACHE_DIR": str(cache_dir)})
        if precision in ("auto", "int8"):
            float_precision = "bf16" if cpu_has_bf16() else "f32"
        else:
            float_precision = precision
        self.precision = float_precision if precision == "auto" else precision
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": float_precision,
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads * slots
        elif limit := cpu_limit():
            # OpenVINO counts the cores it may run on, not the CPU quota: with `--cpus 1` on 2
            # cores it ran 2 threads, 0.853 s a pass against 0.787 s on 1 (see cutout.machine).
            config["INFERENCE_NUM_THREADS"] = limit
        if (streams := stream_count(threads, slots)) > 1:
            config["NUM_STREAMS"] = streams
        # MODNet's input follows the photo's aspect, and the CPU plugin kept what it prepared
        # for every input shape it had seen (up to 5000): 80 photos of distinct aspects grew a
        # process by 560 MB. Without that cache it grows by the largest shape's buffers once
        # (147 MB in the same run) and a change of shape costs about 0.015 s more.
        config["CPU_RUNTIME_CACHE_CAPACITY"] = 0
        # OpenVINO pins its threads to the first cores it may use, in every process alike: two
        # `cutout worker` processes of one thread each both ran on core 0, 1.55 s a pass
        # against 0.78 s unpinned (2 Zen 4 cores), as would gunicorn workers or pods sharing a
        # node. One process gains nothing from pinning (0.432 against 0.428 s). The scheduler
        # places the threads instead.
        config["ENABLE_CPU_PINNING"] = False
        self._compiled = _compile(ov, core, path, output_name, config)
        self._input = input_name or self._compiled.inputs[0].get_any_name()
        self._output = self._compiled.outputs[0]
        self._requests: queue.Queue[Any] = queue.Queue()
        for _ in range(slots):
            self._requests.put(self._compiled.create_infer_request())

    @property
    def name(self) -> str:
        return f"openvino/{self.precision}"

    @property
    def streams(self) -> int:
        """Forward passes the compiled model runs at the same time."""
        return int(self._compiled.get_property("NUM_STREAMS"))

    @property
    def threads(self) -> int:
        """CPU threads the compiled model runs its passes on, all streams together."""
        return int(self._compiled.get_property("INFERENCE_NUM_THREADS"))

    @property
    def pinned(self) -> bool:
        """Whether OpenVINO pins the threads to cores: never (see the comment in ``__init__``)."""
        return bool(self._compiled.get_property("ENABLE_CPU_PINNING"))

    def run(self, tensor: np.ndarray) -> np.ndarray:
        request = self._requests.get()
        try:
            result = request.infer({self._input: tensor})
            # the request owns the output buffer and reuses it on the next call: copy it out
            return np.array(result[self._output], copy=True)
        finally:
            self._requests.put(request)


class OnnxRuntime:
    """onnxruntime on CUDA when available (and wanted), otherwise on the CPU."""

    def __init__(
        self,
        path: Path,
        *,
        input_name: str | None,
        output_name: str | None,
        threads: int,
        use_cuda: bool,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_limit() or 0  # 0: its own count
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if use_cuda
            else ["CPUExecutionProvider"]
        )
        self._session = ort.InferenceSession(str(path), options, providers=providers)
        self._device = "cuda" if "CUDAExecutionProvider" in self._session.get_providers() else "cpu"
        self._input = input_name or self._session.get_inputs()[0].name
        self._output = output_name or self._session.get_outputs()[0].name

    @property
    def name(self) -> str:
        return f"onnxruntime/{self._device}"

    def run(self, tensor: np.ndarray) -> np.ndarray:
        # onnxruntime's Run is safe to call from several threads on one session
        result: np.ndarray = self._session.run([self._output], {self._input: tensor})[0]
        return result


def _compile(ov: ModuleType, core: Any, path: Path, output_name: str | None, config: Any) -> Any:
    """The model at *path* compiled for the CPU with one output: *output_name* or its first.

    An OpenVINO IR (``.xml``: the INT8 builds, which have one output) is compiled from its
    path. With a cache, OpenVINO then loads the compiled blob without reading the model, where
    from a read model it first hashes all of it (44 MB of ISNet weights) for the cache key: a
    process start costs 0.3 s less CPU and ~0.08 s less time (Zen 4). That key is the path
    and the configuration alone, so callers give such a file a cache dir of its own content
    (:func:`cutout.engine.compile_cache`).
    """
    if path.suffix == ".xml":
        compiled = core.compile_model(str(path), "CPU", config)
        if len(compiled.outputs) == 1:
            return compiled
    model = core.read_model(str(path))
    output = model.output(output_name) if output_name else model.outputs[0]
    if len(model.outputs) > 1:
        # ISNet returns six side outputs too; keeping them makes OpenVINO compute and
        # copy them. A model with a single result lets the compiler drop those branches.
        model = ov.Model([output.node], model.get_parameters(), "pruned")
    return core.compile_model(model, "CPU", config)


def _usable_cache(path: Path) -> bool:
    """Whether OpenVINO can use *path* as its compile cache, creating it if possible.

    A read-only directory is fine (checked): OpenVINO reads the blobs baked into a container
    image and, if none match, compiles without writing. Only a directory that does not exist
    and cannot be created (a read-only root file system) means "no cache".
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        log.info("no OpenVINO compile cache: cannot create %s", path)
        return False
    return True


def resolve_runtime(choice: str) -> str:
    """What ``auto`` means on this machine; other choices as they are."""
    if choice != "auto":
        return choice
    return "onnxruntime" if cuda_available() or not openvino_available() else "openvino"


def load_runtime(
    path: Path,
    *,
    choice: str = "auto",
    precision: str = "auto",
    threads: int = 0,
    slots: int = 1,
    input_name: str | None = None,
    output_name: str | None = None,
    cache_dir: Path | None = None,
) -> Runtime:
    """Compile the model at *path* on *choice*: ``auto``, ``openvino`` or ``onnxruntime``."""
    choice = resolve_runtime(choice)
    try:
        runtime: Runtime
        if choice == "openvino":
            if not openvino_available():
                raise ConfigError("CUTOUT_RUNTIME=openvino but the openvino package is missing.")
            runtime = OpenVINORuntime(
                path,
                input_name=input_name,
                output_name=output_name,
                precision=precision,
                threads=threads,
                slots=slots,
                cache_dir=cache_dir,
            )
        elif choice == "onnxruntime":
            runtime = OnnxRuntime(
                path,
                input_name=input_name,
                output_name=output_name,
                threads=threads,
                use_cuda=cuda_available(),
            )
        else:
            raise ConfigError(f"Unknown runtime {choice!r}; use auto, openvino or onnxruntime.")
    except (ConfigError, EngineError):
        raise
    except Exception as exc:  # a corrupt or incompatible model file
        raise EngineError(f"Could not load the model {path.name} on {choice}: {exc}") from exc
    log.info("model %s loaded on %s", path.name, runtime.name)
    return runtime
