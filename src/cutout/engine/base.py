"""The engine interface and the admission control every removal and engine sits behind."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from cutout.errors import EngineBusy, ImageTooLarge
from cutout.memory import release_free_memory


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


@runtime_checkable
class QualityEngine(Engine, Protocol):
    """An engine with quality modes (the fused local engine; see cutout.engine.modes)."""

    def with_quality(self, quality: str) -> Engine: ...


def with_quality(engine: Engine, quality: str | None) -> Engine:
    """*engine* in the quality mode *quality* (None: its own); engines without modes (the
    remote one, a single model) are the same in every mode."""
    if quality is None or not isinstance(engine, QualityEngine):
        return engine
    return engine.with_quality(quality)


class AdmissionObserver(Protocol):
    """What :class:`Admission` reports, for metrics (``cutout.metrics``)."""

    def admitted(self, waited: float) -> None: ...

    def refused(self, reason: str) -> None: ...

    def changed(self, *, active: int, waiting: int, reserved: int) -> None: ...


#: Reservations from this size up return freed memory to the system before and after their
#: work (:func:`cutout.memory.release_free_memory`, ~3 ms). Below it (photos under ~5 MP) what
#: glibc keeps is within the estimate's fixed part, and the page faults of reusing returned
#: memory would cost a small photo a few per cent.
TRIM_FROM = 128 * 1024 * 1024


class Admission:
    """Let callers in while there is a free slot and, if a *budget* is set, room in it.

    At most ``slots`` callers are in at once, and the costs they reserve (bytes of memory,
    estimated by :mod:`cutout.memory` before decoding) never add up to more than ``budget``.
    A caller that cannot enter waits, first come first served, for up to ``timeout`` seconds;
    at most ``max_waiting`` wait. A caller that finds the queue full or times out gets
    :class:`EngineBusy` (503, ``Retry-After``) instead of piling up memory until the process
    dies (rembg issues #289/#752 show where unbounded queueing leads); one whose cost exceeds
    the whole budget gets :class:`ImageTooLarge` (413) at once, since it could never enter.
    Use ``with admission.admit(cost):``, or ``with admission:`` for a cost of zero.
    """

    def __init__(
        self,
        *,
        slots: int,
        max_waiting: int,
        timeout: float,
        budget: int | None = None,
        observer: AdmissionObserver | None = None,
    ) -> None:
        self.slots = slots
        self.budget = budget
        self.active = 0
        self.waiting = 0
        self.reserved = 0
        self.observer = observer
        self._max_waiting = max_waiting
        self._timeout = timeout
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()

    @contextmanager
    def admit(self, cost: int = 0, *, too_large: str | None = None) -> Iterator[None]:
        """Hold a slot and *cost* of the budget for the ``with`` block.

        :param too_large: the message of the 413 when *cost* can never fit.
        """
        self._enter(cost, too_large)
        trim = cost >= TRIM_FROM
        if trim:  # what earlier requests freed must not stay resident beside this one
            release_free_memory()
        try:
            yield
        finally:
            self._leave(cost)
            if trim:  # nor stay resident after it: the pod's memory is its RSS
                release_free_memory()

    def __enter__(self) -> None:
        self._enter(0, None)

    def __exit__(self, *exc: object) -> None:
        self._leave(0)

    def _fits(self, cost: int) -> bool:
        if self.active >= self.slots:
            return False
        return self.budget is None or self.reserved + cost <= self.budget

    def _enter(self, cost: int, too_large: str | None) -> None:
        if self.budget is not None and cost > self.budget:
            self._refused("too_large")
            raise ImageTooLarge(too_large or "This request needs more memory than the server has.")
        started = time.monotonic()
        with self._changed:
            if not self._queue and self._fits(cost):
                self._take(cost, started)
                return
            if self.waiting >= self._max_waiting:
                self._refused("queue_full")
                raise EngineBusy("The server is busy removing other backgrounds; try again soon.")
            ticket = object()
            self._queue.append(ticket)
            self.waiting += 1
            self._report()
            try:
                if not self._changed.wait_for(
                    lambda: self._queue[0] is ticket and self._fits(cost), self._timeout
                ):
                    self._refused("timeout")
                    raise EngineBusy("Timed out waiting for a free slot; try again soon.")
                self._take(cost, started)
            finally:
                self._queue.remove(ticket)
                self.waiting -= 1
                self._report()
                self._changed.notify_all()  # the next in line may fit now

    def _take(self, cost: int, started: float) -> None:
        self.active += 1
        self.reserved += cost
        self._report()
        if self.observer:
            self.observer.admitted(time.monotonic() - started)

    def _leave(self, cost: int) -> None:
        with self._changed:
            self.active -= 1
            self.reserved -= cost
            self._report()
            self._changed.notify_all()

    def _refused(self, reason: str) -> None:
        if self.observer:
            self.observer.refused(reason)

    def _report(self) -> None:
        if self.observer:
            self.observer.changed(active=self.active, waiting=self.waiting, reserved=self.reserved)


class BoundedEngine:
    """An engine behind :class:`Admission`: at most ``slots`` forward passes at once."""

    def __init__(self, inner: Engine, *, slots: int, max_waiting: int, timeout: float) -> None:
        self.inner = inner
        self.admission = Admission(slots=slots, max_waiting=max_waiting, timeout=timeout)

    def with_quality(self, quality: str) -> Engine:
        """The inner engine in mode *quality*, behind the same admission (the same slots)."""
        inner = with_quality(self.inner, quality)
        if inner is self.inner:
            return self
        other = BoundedEngine.__new__(BoundedEngine)
        other.inner, other.admission = inner, self.admission
        return other

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
