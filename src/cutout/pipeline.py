"""The background-removal use case, shared by the CLI and the web app (no Flask here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

from cutout.engine.base import Engine, Prediction, predict
from cutout.imaging.compose import Encoded, OutputOptions, compose
from cutout.imaging.confidence import needs_review
from cutout.imaging.decode import Limits, Photo, load_image
from cutout.imaging.refine import refine_alpha

#: Told ``(stage, seconds)`` after each stage of a removal (decode, model, refine, encode):
#: the metrics set it once per process. "model" includes waiting for a forward-pass slot.
on_stage: Callable[[str, float], None] | None = None


@dataclass(frozen=True)
class Cutout:
    """The result of one removal: the decoded input, its alpha, the encoded output, and
    provenance."""

    photo: Photo
    alpha: Image.Image  # full size, L mode: what the page's thumbnails and touch-ups start from
    output: Encoded
    engine: str
    model: str
    runtime: str
    #: How far to trust the cut-out, in [0, 1] (None when the engine cannot tell, e.g. a
    #: single model or the remote engine); low scores "need review" (see imaging/fuse.py).
    confidence: float | None = None

    @property
    def needs_review(self) -> bool | None:
        return needs_review(self.confidence)


def remove_background(
    data: bytes, engine: Engine, *, limits: Limits, options: OutputOptions
) -> Cutout:
    """Decode *data*, find the subject with *engine*, and encode the cut-out per *options*.

    :raises InvalidInput: the bytes are not an acceptable image.
    :raises EngineError: the engine failed (or is busy).
    """
    with _stage("decode"):
        photo = load_image(data, limits)
    prediction, alpha = predict_and_refine(photo, engine)
    with _stage("encode"):
        output = compose(photo, alpha, options)
    return Cutout(
        photo=photo,
        alpha=alpha,
        output=output,
        engine=engine.name,
        model=engine.model,
        runtime=engine.runtime,
        confidence=prediction.confidence,
    )


def cutout_alpha(photo: Photo, engine: Engine) -> Image.Image:
    """The full-size alpha for *photo*: the engine's mask, refined, within the photo's own alpha."""
    return predict_and_refine(photo, engine)[1]


def predict_photo(photo: Photo, engine: Engine) -> Prediction:
    """The engine's low-resolution mask for *photo*, with its confidence when it has one."""
    return predict(engine, model_input(photo))


def predict_and_refine(photo: Photo, engine: Engine) -> tuple[Prediction, Image.Image]:
    """The engine's prediction for *photo* and the full-size alpha refined from it (timed)."""
    with _stage("model"):
        prediction = predict_photo(photo, engine)
    with _stage("refine"):
        return prediction, full_alpha(photo, prediction.mask)


def model_input(photo: Photo) -> Image.Image:
    """What the engine sees: the photo, with pixels it already hides shown as plain white."""
    if photo.alpha is None:
        return photo.rgb
    # Hidden pixels may hold any colour (often black); white does not invent a subject.
    return Image.composite(photo.rgb, Image.new("RGB", photo.size, "white"), photo.alpha)


def full_alpha(photo: Photo, mask: np.ndarray) -> Image.Image:
    """Refine the engine's *mask* to full size; never show what the input already hid."""
    return within_photo_alpha(photo, refine_alpha(photo.rgb, mask))


def within_photo_alpha(photo: Photo, alpha: Image.Image) -> Image.Image:
    """*alpha*, never more opaque than the photo's own alpha (what the input hid stays hidden)."""
    return alpha if photo.alpha is None else ImageChops.darker(alpha, photo.alpha)


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Time the block for :data:`on_stage`, when it completes."""
    started = time.perf_counter()
    yield
    if on_stage is not None:
        on_stage(name, time.perf_counter() - started)
