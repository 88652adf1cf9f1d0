"""The default engine: the main model's mask fused with MODNet's soft alpha, with a confidence."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cutout.engine.base import Prediction
from cutout.engine.local import LocalEngine, preprocess
from cutout.engine.modes import DEFAULT_QUALITY, TTA_FROM, modnet_cannot_matter, modnet_gain
from cutout.engine.registry import FUSION_MODEL, get_spec
from cutout.imaging.confidence import confidence
from cutout.imaging.fuse import fuse

FUSION_SPEC = get_spec(FUSION_MODEL)


@dataclass(frozen=True)
class Parts:
    main: np.ndarray  # the main model's mask (averaged with its mirrored pass when mirrored)
    soft: np.ndarray  # MODNet's alpha; the main mask itself when MODNet did not run
    fused: np.ndarray
    confidence: float
    modnet: bool = True  # MODNet ran
    mirrored: bool = False  # best mode's mirrored ISNet pass ran


class Deferred:
    """The second model, built on a background thread once :meth:`start` is called (or on
    first use): compiling it overlaps the first photo's decode and ISNet pass, and ``fast``
    never pays for it."""

    def __init__(self, build: Callable[[], LocalEngine]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._future: Future[LocalEngine] | None = None

    def start(self) -> Deferred:
        with self._lock:
            if self._future is None:
                self._future = Future()
                threading.Thread(target=self._run, name="modnet-loader", daemon=True).start()
        return self

    def _run(self) -> None:
        assert self._future is not None
        try:
            self._future.set_result(self._build())
        except BaseException as exc:  # handed to whoever asks for the model
            self._future.set_exception(exc)

    def get(self) -> LocalEngine:
        future = self.start()._future
        assert future is not None
        return future.result()


class FusedEngine:
    """Runs *primary* (ISNet) and *secondary* (MODNet) on the same photo and fuses them, as
    much as its quality mode asks (:mod:`cutout.engine.modes`).

    The forward passes run one after the other: each already uses every core.
    """

    def __init__(
        self,
        primary: LocalEngine,
        secondary: LocalEngine | Deferred,
        quality: str = DEFAULT_QUALITY,
    ) -> None:
        self.primary = primary
        self._secondary = secondary
        self.quality = quality

    @property
    def secondary(self) -> LocalEngine:
        """MODNet, waiting for it if it is still loading."""
        if isinstance(self._secondary, Deferred):
            return self._secondary.get()
        return self._secondary

    def with_quality(self, quality: str) -> FusedEngine:
        """The same models in another quality mode (nothing is loaded twice)."""
        if quality == self.quality:
            return self
        return FusedEngine(self.primary, self._secondary, quality)

    @property
    def name(self) -> str:
        return f"local:{self.model}"

    @property
    def model(self) -> str:
        if self.quality == "fast":
            return self.primary.model
        return f"{self.primary.model}+{FUSION_MODEL}"

    @property
    def runtime(self) -> str:
        return self.primary.runtime

    def predict(self, image: Image.Image) -> Prediction:
        parts = self.parts(image)
        return Prediction(parts.fused, parts.confidence)

    def parts(self, image: Image.Image) -> Parts:
        """Both models' masks, the fused one and its confidence (what predict() returns)."""
        if self.quality == "fast":
            return self._alone(self.primary.predict_mask(image))
        # MODNet's resize (Pillow, single-threaded, GIL released) runs beside ISNet's: about
        # 8 ms of a 2 MP photo's pipeline. The forward passes stay one after the other.
        with ThreadPoolExecutor(max_workers=1) as helper:
            soft_input = helper.submit(preprocess, image, FUSION_SPEC)
            tensor = preprocess(image, self.primary.spec)
            main = self.primary.infer(tensor)
            if modnet_cannot_matter(main):  # no subject, or one filling the frame (modes.py)
                return self._alone(main)
            if self.quality != "best":
                del tensor  # 12 MB that MODNet's pass need not hold (memory.py's constants)
            soft = self.secondary.infer(soft_input.result())
        mirrored = self.quality == "best" and modnet_gain(main, soft) >= TTA_FROM
        if mirrored:
            flipped = self.primary.infer(np.ascontiguousarray(tensor[..., ::-1]))
            main = (main + flipped[:, ::-1]) / 2
        fused = fuse(main, soft)
        return Parts(main, soft, fused, confidence(main, soft, fused), mirrored=mirrored)

    def warm_up(self, slots: int = 1) -> None:
        """Run each model this mode uses once per slot. The runtime allocates a compiled
        model's buffers on its first pass (ISNet 91 MB, MODNet 9 MB on a Zen 4), which would
        otherwise land in the first real request's peak, beside what admission reserved for it;
        when the first photos needed no MODNet, in a later request's (a burst of 20 MP uploads
        peaked at 637-716 MB against a 600 MB budget on an Intel Xeon with a bf16 MODNet).
        The slots' infer requests take turns, so a pass per slot reaches each: with a stream
        per slot (``CUTOUT_MAX_CONCURRENT`` 2, one thread per pass) the first pair of photos
        after a one-pass warm-up grew the process by 128 MB, after this one by 17 MB. Slots
        sharing one stream still grow it by 50-60 MB at their first passes *at the same time*,
        which only concurrent warm-up passes would cover. Those are not run: with them, one CI
        run's server never became ready (cause not found, not reproduced in 21 tries)."""
        blank = Image.new("RGB", (384, 288))  # a 4:3 photo's shape at MODNet's input size
        # MODNet first (directly: parts() would skip it on a blank photo). In the other order
        # ISNet's second pass still grew the process by 23 MB; in this one the next passes
        # add 2 MB and then nothing.
        models = [self.primary] if self.quality == "fast" else [self.secondary, self.primary]
        for model in models:
            for _ in range(max(1, slots)):
                model.predict_mask(blank)

    @staticmethod
    def _alone(main: np.ndarray) -> Parts:
        # Scored as a fused mask whose MODNet agrees: the uncertainty share alone.
        return Parts(main, main, main, confidence(main, main, main), modnet=False)

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        return self.predict(image).mask
