"""Background-removal engines: build the configured one, once per process."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from cutout.config import Settings
from cutout.engine.base import BoundedEngine, Engine
from cutout.engine.files import model_path
from cutout.engine.fused import Deferred, FusedEngine
from cutout.engine.local import LocalEngine
from cutout.engine.quantize import CACHE_FOLDER, blob_folder, int8_path
from cutout.engine.registry import FUSION_MODEL, ModelSpec, get_spec
from cutout.engine.runtimes import Runtime, load_runtime, resolve_runtime
from cutout.engine.watchdog import WATCHDOG
from cutout.errors import ModelNotFetched
from cutout.faults import configured

__all__ = ["BoundedEngine", "Engine", "build_engine", "local_engine", "model_engine"]

log = logging.getLogger(__name__)


def build_engine(settings: Settings) -> BoundedEngine:
    """Return the engine *settings* ask for, behind the configured admission limits.

    Raises :class:`~cutout.errors.ModelNotFetched` (naming the command to run) when a local
    model is missing: nothing is ever downloaded here.
    """
    inner: Engine
    if settings.engine == "objectcut":
        from cutout.engine.objectcut import ObjectCutEngine  # requests: not for the local engine

        inner = ObjectCutEngine(
            api_key=settings.rapid_api_key,
            api_host=settings.rapid_api_host,
            endpoint=settings.objectcut_endpoint,
            timeout=settings.objectcut_timeout,
            retries=settings.objectcut_retries,
        )
    else:
        inner = local_engine(settings)
    # +1: the web app admits one more whole removal than there are forward-pass slots (see
    # cutout.app), so one admitted request may wait here while another runs the model.
    return BoundedEngine(
        inner,
        slots=settings.max_concurrent,
        max_waiting=settings.max_queue + 1,
        timeout=settings.queue_timeout,
    )


def local_engine(settings: Settings) -> LocalEngine | FusedEngine:
    """The configured model, fused with MODNet unless ``CUTOUT_FUSION=off``.

    MODNet compiles on a background thread, beside the first photo's decode and ISNet pass;
    in the ``fast`` quality mode only when another mode first asks for it.
    """
    if settings.fusion == "off":
        return model_engine(get_spec(settings.model), settings)
    secondary = Deferred(lambda: _fusion_model(settings))
    if settings.quality != "fast":
        secondary.start()  # compiles while ISNet does, here
    return FusedEngine(
        model_engine(get_spec(settings.model), settings), secondary, settings.quality
    )


def _fusion_model(settings: Settings) -> LocalEngine:
    """MODNet, compiled on the loader's thread."""
    return model_engine(get_spec(FUSION_MODEL), settings)


def required_models(settings: Settings) -> list[ModelSpec]:
    """The registry entries the configured local engine needs installed."""
    specs = [get_spec(settings.model)]
    if settings.fusion != "off":
        specs.append(get_spec(FUSION_MODEL))
    return specs


def model_engine(spec: ModelSpec, settings: Settings) -> LocalEngine:
    """One model on the configured runtime, its INT8 build when that is wanted and installed."""
    path, precision = model_file(spec, settings)
    runtime = _shared_runtime(
        path,
        settings.runtime,
        precision,
        settings.inference_threads,
        settings.max_concurrent,
        spec.input_name,
        spec.output_name,
    )
    WATCHDOG.set_limit(settings.pass_timeout)
    return LocalEngine(
        spec, runtime, faults=configured(settings.test_faults, settings.env, settings.data_dir)
    )


def model_file(spec: ModelSpec, settings: Settings) -> tuple[Path, str]:
    """The file to load for *spec* and the precision to run it at.

    ``auto`` takes the INT8 build when it is installed and the runtime is OpenVINO (the only
    one that runs it); ``int8`` insists on it there, and on onnxruntime falls back to the
    float model with a warning. Models without an INT8 build run in float either way.
    """
    path = model_path(spec, settings.model_dir)
    wants_int8 = settings.precision in ("auto", "int8") and spec.quantize
    on_openvino = resolve_runtime(settings.runtime) == "openvino"
    if wants_int8 and on_openvino:
        quantized = int8_path(spec, settings.model_dir)
        if quantized is not None:
            return quantized, "int8"
        if settings.precision == "int8":
            raise ModelNotFetched(
                f"CUTOUT_PRECISION=int8 but the INT8 build of {spec.name!r} is not installed in "
                f"{settings.model_dir}. Run `cutout models fetch` (or `make install`) first."
            )
    elif settings.precision == "int8":
        log.warning(
            "no INT8 build of %s for this runtime: running the float model instead", spec.name
        )
    return path, "auto" if settings.precision == "int8" else settings.precision


@functools.lru_cache(maxsize=8)
def _shared_runtime(
    path: Path,
    choice: str,
    precision: str,
    threads: int,
    slots: int,
    input_name: str | None,
    output_name: str | None,
) -> Runtime:
    """One compiled model per process and configuration (compiling takes a second or two)."""
    return load_runtime(
        path,
        choice=choice,
        precision=precision,
        threads=threads,
        slots=slots,
        input_name=input_name,
        output_name=output_name,
        cache_dir=compile_cache(path),
    )


def compile_cache(path: Path) -> Path:
    """Where OpenVINO keeps the compiled model at *path* (see ``load_runtime``'s cache_dir).

    OpenVINO keys a blob by the model's content when it is given a read model (ONNX files), but
    by its path alone when it compiles an IR from the path (the INT8 builds): each build gets
    a folder named by its manifest, so a rebuilt model is never served a stale blob.
    """
    if path.suffix == ".xml":
        return blob_folder(path)
    return path.parent / CACHE_FOLDER
