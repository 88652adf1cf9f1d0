"""Background-removal engines: build the configured one, once per process."""

from __future__ import annotations

import functools
from pathlib import Path

from cutout.config import Settings
from cutout.engine.base import BoundedEngine, Engine
from cutout.engine.fetch import model_path
from cutout.engine.local import LocalEngine
from cutout.engine.objectcut import ObjectCutEngine
from cutout.engine.registry import get_spec
from cutout.engine.runtimes import Runtime, load_runtime

__all__ = ["BoundedEngine", "Engine", "build_engine", "local_engine"]


def build_engine(settings: Settings) -> BoundedEngine:
    """Return the engine *settings* ask for, behind the configured admission limits.

    Raises :class:`~cutout.errors.ModelNotFetched` (naming the command to run) when the local
    model is missing: nothing is ever downloaded here.
    """
    inner: Engine
    if settings.engine == "objectcut":
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


def local_engine(settings: Settings) -> LocalEngine:
    spec = get_spec(settings.model)
    path = model_path(spec, settings.model_dir)
    runtime = _shared_runtime(
        path,
        settings.runtime,
        settings.precision,
        settings.inference_threads,
        settings.max_concurrent,
        spec.input_name,
        spec.output_name,
    )
    return LocalEngine(spec, runtime)


@functools.lru_cache(maxsize=4)
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
        cache_dir=path.parent / "openvino-cache",
    )
