"""The default engine: the main model's mask fused with MODNet's soft alpha, with a confidence."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cutout.engine.base import Prediction
from cutout.engine.local import LocalEngine, preprocess
from cutout.imaging.confidence import confidence
from cutout.imaging.fuse import fuse


@dataclass(frozen=True)
class Parts:
    main: np.ndarray  # the main model's mask
    soft: np.ndarray  # MODNet's alpha
    fused: np.ndarray
    confidence: float


class FusedEngine:
    """Runs *primary* (ISNet) and *secondary* (MODNet) on the same photo and fuses them.

    The two forward passes run one after the other: each already uses every core.
    """

    def __init__(self, primary: LocalEngine, secondary: LocalEngine) -> None:
        self.primary = primary
        self.secondary = secondary

    @property
    def name(self) -> str:
        return f"local:{self.model}"

    @property
    def model(self) -> str:
        return f"{self.primary.model}+{self.secondary.model}"

    @property
    def runtime(self) -> str:
        return self.primary.runtime

    def predict(self, image: Image.Image) -> Prediction:
        parts = self.parts(image)
        return Prediction(parts.fused, parts.confidence)

    def parts(self, image: Image.Image) -> Parts:
        """Both models' masks, the fused one and its confidence (what predict() returns)."""
        # The two resizes (Pillow, single-threaded, GIL released) run side by side: about
        # 8 ms of a 2 MP photo's pipeline. The forward passes stay one after the other.
        with ThreadPoolExecutor(max_workers=1) as helper:
            soft_input = helper.submit(preprocess, image, self.secondary.spec)
            main = self.primary.predict_mask(image)
            soft = self.secondary.infer(soft_input.result())
        fused = fuse(main, soft)
        return Parts(main, soft, fused, confidence(main, soft, fused))

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        return self.predict(image).mask
