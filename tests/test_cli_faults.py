"""Regression tests for the CLI's faults (issue 9: faults 1, 9, 10 and 11), as a subprocess."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cutout.batch import write_atomic
from cutout.config import Settings
from tests.conftest import Photos
from tests.helpers import photo_folder
from tests.web.test_faults import header_truncated_jpeg

CUTOUT = [sys.executable, "-m", "cutout"]


def run(
    *args: str | Path, model_settings: Settings, umask: int | None = None
) -> subprocess.CompletedProcess[str]:
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [*CUTOUT, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "CUTOUT_MODEL_DIR": str(model_settings.model_dir)},
        timeout=600,
        check=False,
        preexec_fn=set_umask,
    )


@pytest.fixture
def small(photos: Photos) -> Path:
    return photos.named("rocket")


# -- fault 1 (CLI side): our sentence, not Pillow's --------------------------------------------


def test_a_header_truncated_jpeg_gets_our_sentence(
    tmp_path: Path, model_settings: Settings
) -> None:
    broken = tmp_path / "cut.jpg"
    broken.write_bytes(header_truncated_jpeg())
    result = run("remove", broken, "-o", tmp_path / "out.png", model_settings=model_settings)
    assert result.returncode == 1
    assert "Truncated File Read" not in result.stderr and "Traceback" not in result.stderr
    assert f"error: {broken}: The image data is corrupt or truncated" in result.stderr
    assert not (tmp_path / "out.png").exists()


# -- fault 9: outputs follow the umask ---------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_write_atomic_follows_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        target = tmp_path / "out.png"
        write_atomic(target, b"data")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left


@pytest.mark.model
def test_cli_outputs_follow_the_umask(
    tmp_path: Path, small: Path, model_settings: Settings
) -> None:
    out = tmp_path / "out.png"
    result = run("remove", small, "-o", out, model_settings=model_settings, umask=0o022)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# -- fault 10: the output's extension decides the format, or is refused -----------------------


@pytest.mark.model
@pytest.mark.parametrize(
    ("name", "fmt"), [("a.webp", "WEBP"), ("a.jpg", "JPEG"), ("a.JPEG", "JPEG"), ("a.png", "PNG")]
)
def test_format_follows_the_output_extension(
    tmp_path: Path, small: Path, model_settings: Settings, name: str, fmt: str
) -> None:
    out = tmp_path / name
    result = run("remove", small, "-o", out, model_settings=model_settings)
    assert result.returncode == 0, result.stderr
    with Image.open(out) as image:
        assert image.format == fmt


@pytest.mark.parametrize("name", ["out.gif", "out.tiff", "out.txt"])
def test_an_extension_we_cannot_write_is_a_usage_error(
    tmp_path: Path, small: Path, model_settings: Settings, name: str
) -> None:
    result = run("remove", small, "-o", tmp_path / name, model_settings=model_settings)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"cannot write {Path(name).suffix} files" in result.stderr
    assert ".png, .webp, .jpg" in result.stderr
    assert not (tmp_path / name).exists()


def test_a_format_that_contradicts_the_extension_is_a_usage_error(
    tmp_path: Path, small: Path, model_settings: Settings
) -> None:
    out = tmp_path / "out.png"
    result = run("remove", small, "-o", out, "--format", "jpeg", model_settings=model_settings)
    assert result.returncode == 2 and "--format jpeg" in result.stderr and ".png" in result.stderr
    assert not out.exists()


# -- fault 11: exit codes and what the CLI prints ----------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("-b", "notacolour"),
        ("--background", "300,0,0"),
        ("--format", "gif"),
        ("--margin", "-3"),
        ("--no-such-option",),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path, small: Path, model_settings: Settings, args: tuple[str, ...]
) -> None:
    result = run("remove", small, "-o", tmp_path / "o.png", *args, model_settings=model_settings)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Usage:" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_refusing_to_overwrite_the_input_is_a_usage_error(
    tmp_path: Path, model_settings: Settings
) -> None:
    src = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(src)
    result = run("remove", src, "-o", src, model_settings=model_settings)
    assert result.returncode == 2 and "overwrite" in result.stderr


def test_a_missing_model_is_still_a_setup_error(tmp_path: Path, small: Path) -> None:
    empty = Settings.from_env(environ={"CUTOUT_MODEL_DIR": str(tmp_path)}, dotenv_path=None)
    result = run("remove", small, "-o", tmp_path / "o.png", model_settings=empty)
    assert result.returncode == 3 and "cutout models fetch" in result.stderr


@pytest.mark.model
def test_each_output_is_reported_and_quiet_silences_it(
    tmp_path: Path, photos: Photos, model_settings: Settings
) -> None:
    folder = photo_folder(tmp_path / "in", photos[:2])
    out = tmp_path / "out"
    loud = run("remove", folder, "-o", out, model_settings=model_settings)
    assert loud.returncode == 0, loud.stderr
    expected = sorted(f"{folder / p.name} -> {out / p.stem}.png" for p in photos[:2])
    assert sorted(loud.stdout.splitlines()) == expected

    quiet = run("remove", folder, "-o", tmp_path / "q", "-q", model_settings=model_settings)
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert len(list((tmp_path / "q").iterdir())) == 2


def test_quality_has_only_its_long_name(
    tmp_path: Path, small: Path, model_settings: Settings
) -> None:
    """-q is --quiet now (the Unix convention); --quality keeps working, under its long name."""
    help_text = run("remove", "--help", model_settings=model_settings).stdout
    assert "-q, --quiet" in help_text and "--quality" in help_text
    assert "-q, --quality" not in help_text
