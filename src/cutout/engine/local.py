"""The local engine: a registry model on a local runtime, with its pre- and post-processing."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cutout.engine.registry import ModelSpec
from cutout.engine.runtimes import Runtime
from cutout.engine.watchdog import WATCHDOG
from cutout.faults import NO_FAULTS, Faults


def preprocess(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """Resize *image* (RGB) to the model's input size and normalise it to NCHW float32."""
    # Bilinear with a reducing gap: big photos are first reduced by an integer factor
    # (cheap box filter), then resampled, which is both faster and less aliased.
    resized = image.resize(
        input_size(image.size, spec), Image.Resampling.BILINEAR, reducing_gap=3.0
    )
    pixels = np.asarray(resized)
    divisor = spec.scale if spec.scaling == "fixed" else max(float(pixels.max()), 1e-6)
    # One channel at a time, in place: the same float32 arithmetic as (x / d - mean) / std on
    # the whole HWC array, without its three full-size temporaries and the transposing copy
    # (12 ms down to 2 ms at 1024 px, a twentieth of the INT8 forward pass).
    tensor = np.empty((1, 3, *pixels.shape[:2]), np.float32)
    for c, plane in enumerate(tensor[0]):
        np.multiply(pixels[..., c], np.float32(1.0 / divisor), out=plane, dtype=np.float32)
        plane -= np.float32(spec.mean[c])
        plane /= np.float32(spec.std[c])
    return tensor


#: The longest side a ``short_side`` model sees, as a multiple of its input size. Without it
#: the model's input followed the photo's aspect: a 280 x 2 px sliver (560 pixels, which
#: admission prices at its fixed cost) became a 40320 x 288 MODNet input that took 210 MB
#: more, and every new shape stays compiled in the runtime. Beyond 3:1 (panoramas) the
#: model sees the photo squeezed along its long side; none of the 29 test photos is that long.
MAX_ASPECT = 3


def input_size(size: tuple[int, int], spec: ModelSpec) -> tuple[int, int]:
    """The (width, height) the model sees for a photo of *size* (see ``ModelSpec.resize``):
    never more than ``input_size`` on the short side and :data:`MAX_ASPECT` times it on the
    long side."""
    ref = spec.input_size
    if spec.resize == "square":
        return ref, ref
    width, height = size
    if max(width, height) < ref or min(width, height) > ref:
        scale = ref / min(width, height)
        width, height = round(width * scale), round(height * scale)
    longest = ref * MAX_ASPECT
    width, height = min(width, longest), min(height, longest)
    return max(32, width - width % 32), max(32, height - height % 32)


def postprocess(output: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Turn the model's first output channel into a float32 alpha in [0, 1]."""
    pred: np.ndarray = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
    if spec.postprocess == "sigmoid_minmax":
        pred = 1.0 / (1.0 + np.exp(-pred))
    if spec.postprocess in ("minmax", "sigmoid_minmax"):
        low, high = float(pred.min()), float(pred.max())
        pred = (pred - low) / max(high - low, 1e-6)
    alpha: np.ndarray = np.clip(pred, 0.0, 1.0).astype(np.float32, copy=False)
    return alpha


class LocalEngine:
    """Runs *spec* on *runtime*; thread-safe as long as the runtime is. Every forward pass
    runs under the process's :data:`~cutout.engine.watchdog.WATCHDOG`; *faults* is for tests
    (``engine.pass``, reached as the pass starts)."""

    def __init__(self, spec: ModelSpec, runtime: Runtime, *, faults: Faults = NO_FAULTS) -> None:
        self.spec = spec
        self._runtime = runtime
        self._faults = faults

    @property
    def name(self) -> str:
        return f"local:{self.spec.name}"

    @property
    def model(self) -> str:
        return self.spec.name

    @property
    def runtime(self) -> str:
        return self._runtime.name

    def predict_mask(self, image: Image.Image) -> np.ndarray:
        return self.infer(preprocess(image, self.spec))

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The mask for an already preprocessed *tensor* (see :func:`preprocess`)."""
        with WATCHDOG.watching():
            self._faults.reached("engine.pass")
            output = self._runtime.run(tensor)
        return postprocess(output, self.spec)
