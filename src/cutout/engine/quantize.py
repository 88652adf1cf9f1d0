"""INT8 models: post-training quantization with NNCF, once, at ``cutout models fetch`` time.

Users never run NNCF by hand and nothing is downloaded that is not checksum-pinned: the
calibration photos are the freely licensed sample photos bundled in the scikit-image 0.26.0
wheel on PyPI (public domain and CC0; listed in :data:`CALIBRATION_PHOTOS`), fetched and
verified like MODNet's wheel, turned into 36 inputs by a fixed augmentation (as is, mirrored,
centre crop) and the project's own preprocessing. The research-licensed test photos are never
used. The recipe, as a probe of ISNet on this CPU learned:

* constant folding first (OpenVINO's MOC transformations): the exported graph builds each
  convolution's bias through a shape computation, and NNCF silently skips bias correction for
  biases it cannot see;
* the MIXED preset (symmetric weights, asymmetric activations): PERFORMANCE lost ~0.02 IoU;
* the full 1024 px input: smaller inputs are faster but lose IoU through the resolution;
* the channels that are zero on every calibration input (found on the float graph) are cut out
  of the quantized one (:mod:`cutout.engine.prune`: 3 % of ISNet's INT8 pass), so NNCF's
  result is otherwise what it was without the cut; the manifest lists them.

MODNet takes the same recipe at its own input size (short side 288): each calibration input
keeps its photo's aspect, as MODNet's inputs do at run time.

After NNCF, :func:`rewire` replaces each 2x bilinear upsampling of a single-channel map (ISNet's
last layer) by an equivalent that OpenVINO runs in a third of the time.

The result is an OpenVINO IR (``NAME.int8.xml``/``.bin``) beside the float ONNX file, with a
manifest (``NAME.int8.json``) written last: it names the float model's checksum and the recipe,
so a build from another model or an older recipe is ignored (and rebuilt by the next fetch).
Only :func:`quantize` imports NNCF (``cutout models fetch`` calls it); the server never does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from cutout.engine.files import file_digest, model_path
from cutout.engine.local import preprocess
from cutout.engine.prune import dead_channels, prune
from cutout.engine.registry import ModelSpec, WheelSource
from cutout.errors import FetchError

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

#: Bump when anything below changes the quantized result: older builds are then rebuilt.
#: 2: dead channels cut (:mod:`cutout.engine.prune`).
RECIPE = 2
#: Bump when :func:`rewire` changes. A build of an older graph still runs as it is; the next
#: ``cutout models fetch`` rewires it in place in seconds (:func:`rewire_build`), without NNCF.
GRAPH = 1
CALIBRATION = WheelSource(
    project="scikit-image",
    version="0.26.0",
    filename="scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    sha256="74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    member="",  # several members: CALIBRATION_PHOTOS
)
#: Member of the wheel -> its licence, as scikit-image's ``skimage.data`` documents it.
CALIBRATION_PHOTOS = {
    "skimage/data/astronaut.png": "public domain (NASA)",
    "skimage/data/chelsea.png": "CC0 (Stefan van der Walt)",
    "skimage/data/coffee.png": "CC0 (Rachel Michetti)",
    "skimage/data/rocket.jpg": "public domain (SpaceX)",
    "skimage/data/camera.png": "CC0 (scikit-image)",
    "skimage/data/coins.png": "no known copyright (Brooklyn Museum)",
    "skimage/data/hubble_deep_field.jpg": "public domain (NASA)",
    "skimage/data/retina.jpg": "CC0 (Mikael Häggström)",
    "skimage/data/horse.png": "CC0 (Andreas Preuss)",
    "skimage/data/grass.png": "CC0 (scikit-image)",
    "skimage/data/gravel.png": "CC0 (scikit-image)",
    "skimage/data/brick.png": "CC0 (scikit-image)",
}
Log = Callable[[str], None]


def int8_files(spec: ModelSpec, model_dir: Path) -> tuple[Path, Path, Path]:
    """The IR's .xml and .bin and the manifest for *spec* in *model_dir*."""
    stem = f"{spec.name}.int8"
    return model_dir / f"{stem}.xml", model_dir / f"{stem}.bin", model_dir / f"{stem}.json"


def int8_path(spec: ModelSpec, model_dir: Path) -> Path | None:
    """The quantized model's .xml if a complete build of this recipe for *spec* is installed."""
    if not spec.quantize:
        return None
    xml, weights, manifest = int8_files(spec, model_dir)
    try:
        meta = json.loads(manifest.read_text())
        sizes = {xml.name: xml.stat().st_size, weights.name: weights.stat().st_size}
    except (OSError, ValueError):
        return None
    if (
        meta.get("recipe") != RECIPE
        or meta.get("source") != spec.checksum
        or meta.get("sizes") != sizes
    ):
        log.info("ignoring the INT8 build of %s: another model or recipe", spec.name)
        return None
    return xml


def int8_digest(xml: Path) -> str:
    """A short digest of the IR at *xml*: of its manifest, which names the SHA-256 of both
    files (and the build's source, recipe and versions), or else of the two files' sizes and
    modification times. Reading the manifest costs nothing; hashing 44 MB would cost 0.03 s."""
    try:
        identity = xml.with_suffix(".json").read_bytes()
    except OSError:
        stats = [p.stat() for p in (xml, xml.with_suffix(".bin")) if p.exists()]
        identity = repr([(st.st_size, st.st_mtime_ns) for st in stats]).encode()
    return hashlib.sha256(identity).hexdigest()[:16]


#: OpenVINO's compile cache, beside the models.
CACHE_FOLDER = "openvino-cache"


def blob_folder(xml: Path) -> Path:
    """The compile cache folder of the IR build at *xml*: OpenVINO keys an IR compiled from its
    path by that path alone, so each build's blobs get a folder named by :func:`int8_digest`."""
    return xml.parent / CACHE_FOLDER / f"{xml.stem}-{int8_digest(xml)}"


def quantize_model(
    spec: ModelSpec,
    model_dir: Path,
    *,
    pypi: str = "https://pypi.org",
    session: requests.Session | None = None,
    say: Log = log.info,
    progress: Log | None = None,
    every: float = 10.0,
) -> Path:
    """Build the INT8 model of the installed *spec* unless a current build is there.

    *progress*, if given, hears a line every *every* seconds while NNCF works: how many
    calibration inputs went through, and the time so far (NNCF's own progress bars draw only
    on a terminal, so a build in a log or a container build would say nothing for minutes).
    """
    existing = int8_path(spec, model_dir)
    if existing is not None:
        rewire_build(spec, model_dir, say)
        return existing
    from cutout.engine.fetch import wheel_members  # requests: only when building

    source = model_path(spec, model_dir)
    say(f"Fetching the calibration photos ({CALIBRATION.project} {CALIBRATION.version} wheel)")
    photos = wheel_members(CALIBRATION, list(CALIBRATION_PHOTOS), pypi=pypi, session=session)
    images = calibration_images(photos)
    say(f"Quantizing {spec.name} to INT8 on {len(images)} calibration inputs (once)")
    counted = Counted(images)
    if progress is None:
        return _install(spec, model_dir, source, counted)
    with _heartbeat(spec.name, counted, progress, every):
        return _install(spec, model_dir, source, counted)


class Counted:
    """The calibration inputs, counting how many the current pass over them has taken, and
    naming that pass's *step* (for progress lines)."""

    def __init__(self, images: list[Image.Image]) -> None:
        self.images = images
        self.taken = 0
        self.step = "statistics"

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Image.Image]:
        self.taken = 0
        for image in self.images:
            yield image
            self.taken += 1

    def begin(self, step: str) -> None:
        self.step, self.taken = step, 0


def _begin(images: Iterable[Image.Image], step: str) -> None:
    if isinstance(images, Counted):
        images.begin(step)


@contextlib.contextmanager
def _heartbeat(name: str, counted: Counted, say: Log, every: float) -> Iterator[None]:
    """Say how far the build is every *every* seconds, from a thread, until the block ends."""
    started = time.monotonic()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            elapsed = _minutes(time.monotonic() - started)
            done, total = min(counted.taken, len(counted)), len(counted)
            if done < total or counted.step != "statistics":
                say(f"Quantizing {name}: {counted.step} {done}/{total} inputs "
                    f"({100 * done // total}%), {elapsed} so far")  # fmt: skip
            else:
                say(f"Quantizing {name}: statistics done (100%), correcting biases, "
                    f"{elapsed} so far")  # fmt: skip

    thread = threading.Thread(target=beat, name="int8-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _minutes(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def calibration_images(photos: dict[str, bytes]) -> list[Image.Image]:
    """Each photo as is, mirrored, and its centre (3/4 of each side), in a fixed order."""
    images = []
    for name in sorted(photos):
        with Image.open(io.BytesIO(photos[name])) as opened:
            image = opened.convert("RGB")
        width, height = image.size
        images += [
            image,
            ImageOps.mirror(image),
            image.crop((width // 8, height // 8, width - width // 8, height - height // 8)),
        ]
    return images


def quantize(
    source: Path, spec: ModelSpec, images: Iterable[Image.Image], dest: Path
) -> dict[str, list[int]]:
    """Quantize the ONNX model at *source* with NNCF and save the IR as *dest* (.xml); return
    the dead channels cut from it (:mod:`cutout.engine.prune`), by ReLU."""
    with telemetry_off():
        import nncf
        import openvino as ov
        from openvino._offline_transformations import apply_moc_transformations

    model = ov.Core().read_model(str(source))
    output = model.output(spec.output_name) if spec.output_name else model.outputs[0]
    # One output, as the runtime prunes it; the dropped side branches need no calibration.
    model = ov.Model([output.node], model.get_parameters(), spec.name)
    apply_moc_transformations(model, cf=True)  # fold the biases NNCF must see
    if spec.input_name and spec.input_name not in model.inputs[0].get_names():
        raise FetchError(f"Constant folding lost the input name {spec.input_name!r}.")
    tensors = _Tensors(images, spec)
    _begin(images, "dead channels")
    dead = dead_channels(model, tensors)
    _begin(images, "statistics")
    quantized = nncf.quantize(
        model,
        nncf.Dataset(tensors),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(tensors),
        fast_bias_correction=True,
    )
    # After NNCF, not before: cutting first gave NNCF another graph to calibrate, and the
    # 29 photos' alphas moved by up to 0.005 (mean) where the cut alone moves them by 1e-6.
    cut = prune(quantized, dead)
    rewire(quantized)
    ov.save_model(quantized, str(dest), compress_to_fp16=False)
    return {name: [int(c) for c in channels] for name, channels in cut.items()}


def rewire(model: Any) -> int:
    """Replace, in the OpenVINO *model*, each bilinear 2x upsampling of a single-channel map
    by the same arithmetic in plain operations; return how many were replaced.

    OpenVINO's resize vectorises over channels, so on one channel it uses a sixteenth of each
    vector: ISNet's last layer (its 512 px logits to 1024 px) took 12-14 ms of a 0.40 s pass on
    a Zen 4. With half-pixel centres a 2x upsampling is four phase images, each the clamped
    neighbours weighted 1/4 and 3/4, interleaved by a depth-to-space: about 5 ms, and equal to
    the resize up to float rounding (1e-6 with f32 arithmetic, 0.0014 in bf16).
    """
    import openvino.opset13 as ops

    replaced = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Interpolate" or not _single_channel_doubling(op):
            continue
        upsampled = _phase_upsample(ops, op.input_value(0), op.get_input_partial_shape(0))
        upsampled.output(0).get_tensor().set_names(op.output(0).get_names())
        for target in op.output(0).get_target_inputs():
            target.replace_source_output(upsampled.output(0))
        replaced += 1
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced


def _single_channel_doubling(op: Any) -> bool:
    """Whether the Interpolate *op* is a plain bilinear 2x upsampling of a static
    [N, 1, H, W] map (half-pixel centres, no padding, no antialiasing)."""
    attrs = op.get_attributes()
    src, dst = op.get_input_partial_shape(0), op.get_output_partial_shape(0)
    if (
        attrs["mode"] != "linear_onnx"
        # pytorch_half_pixel differs from half_pixel only on an output of length 1
        or attrs["coordinate_transformation_mode"] not in ("half_pixel", "pytorch_half_pixel")
        or attrs.get("antialias")
        or any(attrs.get("pads_begin", [])) or any(attrs.get("pads_end", []))
        or src.is_dynamic or dst.is_dynamic or len(src) != 4
    ):  # fmt: skip
        return False
    n, c, h, w = src.to_shape()
    return c == 1 and list(dst.to_shape()) == [n, 1, 2 * h, 2 * w] and min(h, w) >= 2


def _phase_upsample(ops: Any, x: Any, shape: Any) -> Any:
    """Bilinear 2x of the [N, 1, H, W] *x* (half-pixel centres, edges clamped)."""
    import numpy as np

    _, _, h, w = shape.to_shape()
    dtype = x.get_element_type().to_dtype()

    def axis_slice(t: Any, axis: int, start: int, length: int) -> Any:
        begin, end = [0] * 4, [0] * 4
        begin[axis], end[axis] = start, start + length
        mask = [0 if i == axis else 1 for i in range(4)]
        ones = np.ones(4, np.int64)
        return ops.strided_slice(t, np.array(begin), np.array(end), ones, mask, mask)

    def phases(t: Any, axis: int, n: int) -> tuple[Any, Any]:
        """Even and odd outputs along *axis*: 1/4 of the previous or next input + 3/4 of
        this one."""
        before, here, after = (axis_slice(t, axis, k, n) for k in (0, 1, 2))
        quarter, three = ops.constant(dtype.type(0.25)), ops.constant(dtype.type(0.75))
        centre = ops.multiply(here, three)
        return (
            ops.add(ops.multiply(before, quarter), centre),
            ops.add(centre, ops.multiply(after, quarter)),
        )

    pad = np.array([0, 0, 1, 1], np.int64)
    padded = ops.pad(x, pad, pad, "edge")
    columns = phases(padded, 3, w)  # [N, 1, H + 2, W] each: even, odd output columns
    rows = [phases(c, 2, h) for c in columns]  # rows[column][row]: [N, 1, H, W]
    # depth-to-space (blocks first) puts channel 2 * row + column at (2y + row, 2x + column)
    stacked = ops.concat([rows[0][0], rows[1][0], rows[0][1], rows[1][1]], 1)
    return ops.depth_to_space(stacked, "blocks_first", 2)


#: What keeps NNCF and OpenVINO's converter from reporting usage while they are first imported.
NO_TELEMETRY = {"CI": "true", "NNCF_CI": "1"}


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """Import NNCF (and OpenVINO's converter, which it may load) inside this block: neither
    then reports usage.

    Both report through the ``openvino-telemetry`` package, which counts a missing consent file
    as consent: NNCF sends an event to Google Analytics for each quantization, and the package
    keeps a client id and a usage counter under ``~/intel``. A self-hosted tool's build step
    must not phone home. The package decides once, when its first reporter is made (at these
    imports), and declines when ``CI`` is ``true``; ``NNCF_CI`` swaps NNCF's reporter for a
    stub. Both variables are restored afterwards. A process that imported them earlier (the
    converter, through a plain ``import openvino``) keeps what it decided then.
    """
    saved = {name: os.environ.get(name) for name in NO_TELEMETRY}
    os.environ.update(NO_TELEMETRY)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _Tensors:
    """The model inputs of *images*, made as NNCF takes them (so a :class:`Counted` counts
    the inputs NNCF has really used)."""

    def __init__(self, images: Iterable[Image.Image], spec: ModelSpec) -> None:
        self.images, self.spec = images, spec

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        return (preprocess(image, self.spec) for image in self.images)


def _install(spec: ModelSpec, model_dir: Path, source: Path, images: Iterable[Image.Image]) -> Path:
    """Quantize into a temporary folder, move the files in, and write the manifest last."""
    xml = int8_files(spec, model_dir)[0]
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=f".{spec.name}.int8.") as tmp:
        built = Path(tmp) / xml.name
        pruned = quantize(source, spec, images, built)
        meta: dict[str, Any] = {
            "recipe": RECIPE,
            "pruned": pruned,
            "source": spec.checksum,
            "calibration": {"wheel": CALIBRATION.filename, "sha256": CALIBRATION.sha256},
            "versions": _versions(),
        }
        _place(built, spec, model_dir, meta)
    log.info("installed INT8 model %s at %s", spec.name, xml)
    return xml


def rewire_build(spec: ModelSpec, model_dir: Path, say: Log = log.info) -> bool:
    """Apply :func:`rewire` to an installed build of an older :data:`GRAPH`, in place (a few
    seconds, no NNCF: the quantization is the same); return whether it did."""
    xml = int8_path(spec, model_dir)
    if xml is None:
        return False
    meta = json.loads(xml.with_suffix(".json").read_text())
    if meta.get("graph", 0) >= GRAPH:
        return False
    import openvino as ov

    say(f"Rewiring the INT8 build of {spec.name} (once, seconds)")
    model = ov.Core().read_model(str(xml))
    rewire(model)
    try:
        with tempfile.TemporaryDirectory(dir=model_dir, prefix=f".{spec.name}.int8.") as tmp:
            built = Path(tmp) / xml.name
            ov.save_model(model, str(built), compress_to_fp16=False)
            del model  # it maps the old weights file, which is about to be replaced
            _place(built, spec, model_dir, meta)
    except OSError as exc:  # a read-only model dir (a container's): the build runs as it is
        say(f"Could not rewire the INT8 build of {spec.name}, which runs as it is: {exc}")
        return False
    return True


def _place(built: Path, spec: ModelSpec, model_dir: Path, meta: dict[str, Any]) -> None:
    """Move the IR at *built* in as *spec*'s build, then write its manifest (*meta*, with the
    files' sizes and checksums and the current :data:`GRAPH`) last."""
    xml, weights, manifest = int8_files(spec, model_dir)
    manifest.unlink(missing_ok=True)  # from here on, no manifest vouches for old files
    for path, dest in ((built.with_suffix(".bin"), weights), (built, xml)):
        path.chmod(0o644)
        os.replace(path, dest)
    meta = {
        **meta,
        "graph": GRAPH,
        "sizes": {xml.name: xml.stat().st_size, weights.name: weights.stat().st_size},
        "sha256": {p.name: file_digest(p, "sha256") for p in (xml, weights)},
    }
    part = manifest.with_name(manifest.name + ".part")
    part.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    part.chmod(0o644)
    os.replace(part, manifest)
    drop_stale_blobs(xml)


def drop_stale_blobs(xml: Path) -> None:
    """Remove the compiled blobs of earlier builds of *xml* (:func:`blob_folder`): nothing
    would ever read them again."""
    current = blob_folder(xml)
    for folder in current.parent.glob(f"{xml.stem}-*"):
        if folder != current:
            shutil.rmtree(folder, ignore_errors=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("nncf", "openvino", "numpy")}
