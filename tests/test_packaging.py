"""The wheel `make test` builds (``make package``: ``python -m build``, ``twine check``),
installed into a fresh virtualenv as a user would: the ``cutout`` command and the library work
without the server's dependencies, and ``cutout serve`` names the extra it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from cutout import __version__
from cutout.config import Settings
from tests.conftest import ROOT, Photos, missing

pytestmark = pytest.mark.model
WHEEL_DIR = Path(os.environ.get("CUTOUT_WHEEL_DIR") or ROOT / "build" / "dist")


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtualenv with the wheel and its core dependencies only (pinned by the lock)."""
    wheels = sorted(WHEEL_DIR.glob(f"cutout-{__version__}-*.whl"))
    if not wheels:
        missing(f"no wheel in {WHEEL_DIR}: `make package` builds it (make test does)")
    folder = tmp_path_factory.mktemp("fresh") / "venv"
    # This venv's pip installs into it (--python): the same install as the new venv's own pip
    # would make, without ensurepip's 8 s. --no-compile: Python writes the bytecode of what
    # the checks import (run_in drops PYTHONDONTWRITEBYTECODE); byte-compiling all of the
    # dependencies took 25 s of the 54 s install on an AVX2 Zen 3.
    venv.create(folder, with_pip=False)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", folder / "bin" / "python", "install",
         "--quiet", "--no-compile", "-c", ROOT / "requirements.lock", wheels[-1]],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    yield folder


def run_in(
    folder: Path, *argv: str | Path, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CUTOUT_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**clean, "PATH": f"{folder / 'bin'}:{clean['PATH']}", **env},
    )


def test_the_wheel_gives_the_command_and_the_library_without_the_server(
    fresh_venv: Path, photos: Photos, model_settings: Settings, tmp_path: Path
) -> None:
    env = {"CUTOUT_MODEL_DIR": str(model_settings.model_dir)}
    version = run_in(fresh_venv, "cutout", "--version", env=env, cwd=tmp_path)
    assert version.returncode == 0 and __version__ in version.stdout

    photo = photos.named("chelsea")
    cli = run_in(fresh_venv, "cutout", "remove", photo, "-o", "cat.png", env=env, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    with Image.open(tmp_path / "cat.png") as cut:
        assert cut.mode == "RGBA" and cut.size == (451, 300)

    code = (
        "import cutout, sys\n"
        "assert cutout.__file__.startswith(sys.prefix), cutout.__file__\n"
        "from cutout import remove, new_session\n"
        f"out = remove(open({str(photo)!r}, 'rb').read(), session=new_session())\n"
        "open('lib.png', 'wb').write(out)\n"
        "import importlib.util\n"
        "print(importlib.util.find_spec('flask'), importlib.util.find_spec('gunicorn'))\n"
    )
    library = run_in(fresh_venv, "python", "-c", code, env=env, cwd=tmp_path)
    assert library.returncode == 0, library.stderr
    assert library.stdout.strip() == "None None"  # the server's packages are not installed
    assert (tmp_path / "lib.png").read_bytes() == (tmp_path / "cat.png").read_bytes()

    serve = run_in(fresh_venv, "cutout", "serve", env=env, cwd=tmp_path)
    assert serve.returncode == 3 and "Traceback" not in serve.stderr
    assert "pip install 'cutout[server]'" in serve.stderr


def test_the_wheel_carries_what_the_app_reads_at_run_time() -> None:
    import zipfile

    wheels = sorted(WHEEL_DIR.glob(f"cutout-{__version__}-*.whl"))
    if not wheels:
        missing(f"no wheel in {WHEEL_DIR}: `make package` builds it (make test does)")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        names = set(wheel.namelist())
    source = ROOT / "src"
    wanted = {
        str(p.relative_to(source))
        for p in source.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and not p.parts[-2].endswith(".egg-info")  # `pip install -e` metadata
        and p.name != "README.md"  # notes for developers (storage/migrations)
    }
    assert wanted <= names, sorted(wanted - names)
