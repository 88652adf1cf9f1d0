"""The background-removal use case, shared by the CLI and the web app (no Flask here)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

from cutout.engine.base import Engine
from cutout.imaging.compose import Encoded, OutputOptions, compose
from cutout.imaging.decode import Limits, Photo, load_image
from cutout.imaging.refine import refine_alpha

#: Told ``(stage, seconds)`` after each stage of a removal (decode, model, refine, encode):
#: the metrics set it once per process. "model" includes waiting for a forward-pass slot.
on_stage: Callable[[str, float], None] | None = None


@dataclass(frozen=True)
class Cutout:
    """The result of one removal: the decoded input, the encoded output, and provenance."""

    photo: Photo
    output: Encoded
    engine: str
    model: str
    runtime: str


def remove_background(
    data: bytes, engine: Engine, *, limits: Limits, options: OutputOptions
) -> Cutout:
    """Decode *data*, find the subject with *engine*, and encode the cut-out per *options*.

    :raises InvalidInput: the bytes are not an acceptable image.
    :raises EngineError: the engine failed (or is busy).
    """
    with _stage("decode"):
        photo = load_image(data, limits)
    alpha = cutout_alpha(photo, engine)
    with _stage("encode"):
        output = compose(photo, alpha, options)
    return Cutout(
        photo=photo,
        output=output,
        engine=engine.name,
        model=engine.model,
        runtime=engine.runtime,
    )


def cutout_alpha(photo: Photo, engine: Engine) -> Image.Image:
    """The full-size alpha for *photo*: the engine's mask, refined, within the photo's own alpha."""
    with _stage("model"):
        mask = engine.predict_mask(model_input(photo))
    with _stage("refine"):
        return full_alpha(photo, mask)


def model_input(photo: Photo) -> Image.Image:
    """What the engine sees: the photo, with pixels it already hides shown as plain white."""
    if photo.alpha is None:
        return photo.rgb
    # Hidden pixels may hold any colour (often black); white does not invent a subject.
    return Image.composite(photo.rgb, Image.new("RGB", photo.size, "white"), photo.alpha)


def full_alpha(photo: Photo, mask: np.ndarray) -> Image.Image:
    """Refine the engine's *mask* to full size; never show what the input already hid."""
    alpha = refine_alpha(photo.rgb, mask)
    if photo.alpha is not None:
        alpha = ImageChops.darker(alpha, photo.alpha)
    return alpha


@contextmanager
def _stage(name: str) -> Iterator[None]:
    """Time the block for :data:`on_stage`, when it completes."""
    started = time.perf_counter()
    yield
    if on_stage is not None:
        on_stage(name, time.perf_counter() - started)
