"""The engine interface and the admission control every engine sits behind."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from cutout.errors import EngineBusy


class Engine(Protocol):
    """Something that says, for each pixel of a photo, how much of it is foreground."""

    @property
    def name(self) -> str:
        """Short label stored with each result, e.g. ``local:isnet`` or ``objectcut``."""
        ...

    @property
    def model(self) -> str:
        """The model (or remote service) that made the mask."""
        ...

    @property
    def runtime(self) -> str:
        """Where it ran, e.g. ``openvino/bf16`` or ``remote``."""
        ...

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        """Return a float32 alpha in [0, 1] for the RGB *image*, at any resolution.

        The pipeline brings the mask to the photo's full size, so engines return whatever size
        is natural to them (the model's square input, or the remote service's output).
        """
        ...


@dataclass(frozen=True)
class Prediction:
    """An engine's answer: the mask, and how far to trust it when the engine can tell."""

    mask: np.ndarray  # float32 alpha in [0, 1], any resolution (see Engine.predict_mask)
    confidence: float | None = None  # in [0, 1]; None: this engine cannot judge itself


@runtime_checkable
class JudgingEngine(Engine, Protocol):
    """An engine that also scores its own mask (the fused local engine)."""

    def predict(self, image: Image.Image) -> Prediction: ...


def predict(engine: Engine, image: Image.Image) -> Prediction:
    """The engine's mask with its confidence, or with none if the engine cannot judge itself."""
    if isinstance(engine, JudgingEngine):
        return engine.predict(image)
    return Prediction(engine.predict_mask(image))


class Admission:
    """Let at most ``slots`` callers in at once and at most ``max_waiting`` wait for a slot.

    A caller that finds the queue full, or waits longer than ``timeout`` seconds, gets
    :class:`EngineBusy` straight away instead of piling up memory until the process dies
    (rembg issues #289/#752 show where unbounded queueing leads). Use as a context manager.
    """

    def __init__(self, *, slots: int, max_waiting: int, timeout: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self.waiting = 0
        self._max_waiting = max_waiting
        self._timeout = timeout

    def __enter__(self) -> None:
        if self._slots.acquire(blocking=False):
            return
        with self._lock:
            if self.waiting >= self._max_waiting:
                raise EngineBusy("The server is busy removing other backgrounds; try again soon.")
            self.waiting += 1
        try:
            if not self._slots.acquire(timeout=self._timeout):
                raise EngineBusy("Timed out waiting for a free slot; try again soon.")
        finally:
            with self._lock:
                self.waiting -= 1

    def __exit__(self, *exc: object) -> None:
        self._slots.release()


class BoundedEngine:
    """An engine behind :class:`Admission`: at most ``slots`` forward passes at once."""

    def __init__(self, inner: Engine, *, slots: int, max_waiting: int, timeout: float) -> None:
        self.inner = inner
        self.admission = Admission(slots=slots, max_waiting=max_waiting, timeout=timeout)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def runtime(self) -> str:
        return self.inner.runtime

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        with self.admission:
            return self.inner.predict_mask(image)

    def predict(self, image: Image.Image) -> Prediction:
        with self.admission:
            return predict(self.inner, image)
