"""Load the engine in the background so a server answers /health while the model compiles."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cutout.engine.base import Engine
from cutout.errors import CutoutError, EngineBusy, EngineError

log = logging.getLogger(__name__)


class EngineLoader:
    """Build an engine once, on a background thread; hand it out when ready.

    Requests that arrive while the model is still compiling wait for it (up to ``timeout``)
    rather than fail; ``/ready`` reports :attr:`ready` so Kubernetes sends traffic only after.
    """

    def __init__(
        self,
        build: Callable[[], Engine],
        *,
        timeout: float = 120.0,
        on_loaded: Callable[[float], None] | None = None,
    ) -> None:
        self._build = build
        self._timeout = timeout
        self._on_loaded = on_loaded  # told how many seconds the load took
        self._done = threading.Event()
        self._engine: Engine | None = None
        self._error: CutoutError | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EngineLoader:
        self._thread = threading.Thread(target=self._load, name="engine-loader", daemon=True)
        self._thread.start()
        return self

    @classmethod
    def ready_with(cls, engine: Engine) -> EngineLoader:
        """A loader that already holds *engine* (tests, and callers that built one)."""
        loader = cls(lambda: engine)
        loader._engine = engine
        loader._done.set()
        return loader

    @property
    def ready(self) -> bool:
        return self._engine is not None

    @property
    def error(self) -> CutoutError | None:
        return self._error

    def get(self) -> Engine:
        """The engine, waiting for it if it is still loading."""
        if not self._done.wait(self._timeout):
            raise EngineBusy("The model is still loading; try again in a few seconds.")
        if self._engine is None:
            raise self._error or EngineError("The engine failed to load.")
        return self._engine

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            self._engine = self._build()
            log.info("model loaded in %.1f s", time.perf_counter() - started)
            if self._on_loaded:
                self._on_loaded(time.perf_counter() - started)
        except CutoutError as exc:
            log.error("engine failed to load: %s", exc)
            self._error = exc
        except Exception as exc:  # keep the server up to report it on /ready
            log.exception("engine failed to load")
            self._error = EngineError(f"The engine failed to load: {exc}")
        finally:
            self._done.set()
