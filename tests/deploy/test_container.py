"""The image's command, run outside Docker: same gunicorn settings, same environment.

There is no Docker engine here, so the container is approximated as closely as a process can
be: the exact ``CMD`` (exec form) of the Dockerfile's final stage, with the ``ENV`` of that
stage. Only paths that exist inside the image are swapped for local ones (the data dir, the
model dir, ``HOME``, the venv on ``PATH``); the host and port are made local and free, and
``APP_SECRET_KEY`` gets a test value, as a Kubernetes Secret would supply one.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image, ImageOps

from cutout.config import Settings
from cutout.engine.files import is_installed, model_path
from cutout.engine.registry import get_spec
from tests.conftest import Photos, missing
from tests.deploy import dockerfile
from tests.helpers import free_port
from tests.slowclients import SlowClients, health_latencies, p99

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.prefix) / "bin"
READY_TIMEOUT = 90.0


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def image_env(tmp: Path, model_dir: Path, port: int) -> dict[str, str]:
    """The final stage's ENV with the image-only paths replaced by local ones."""
    stage = dockerfile.parse(ROOT / "Dockerfile").final
    env = dict(stage.env)
    home = tmp / "home"  # gunicorn's control socket goes under $HOME: keep it per test run
    home.mkdir()
    env.update(
        CUTOUT_DATA_DIR=str(tmp / "data"),
        CUTOUT_MODEL_DIR=str(model_dir),
        CUTOUT_HOST="127.0.0.1",
        CUTOUT_PORT=str(port),
        CUTOUT_METRICS_PORT=str(free_port()),  # other servers may run on this machine
        HOME=str(home),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        APP_SECRET_KEY="deploy-smoke-test-secret-key-0123456789abcdef",
    )
    return env


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the image's command exited ({process.returncode}):\n{log.read_text()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not 200 after {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_settings: Settings) -> Iterator[Server]:
    """``CMD`` of the Dockerfile, started in a clean environment, stopped (SIGTERM) at the end."""
    if not is_installed(get_spec(model_settings.model), model_settings.model_dir):
        missing(f"model not installed in {model_settings.model_dir}; run `make install`")
    tmp = tmp_path_factory.mktemp("image")
    port = free_port()
    env = image_env(tmp, model_settings.model_dir, port)
    argv = dockerfile.parse(ROOT / "Dockerfile").final.cmd
    assert argv, "the Dockerfile has no CMD"
    resolved = shutil.which(argv[0], path=env["PATH"])
    assert resolved and Path(resolved).parent == VENV_BIN, f"{argv[0]} resolves to {resolved}"
    log = tmp / "server.log"
    with log.open("wb") as out:
        # cwd without a .env: like the image's WORKDIR, settings come from the environment only
        process = subprocess.Popen(argv, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    code: int | None = None
    try:
        wait_for(url + "/health", process, log, READY_TIMEOUT)
        wait_for(url + "/ready", process, log, READY_TIMEOUT)
        yield Server(url, env, process, log)
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert code == 0, f"gunicorn did not stop cleanly on SIGTERM ({code}):\n{log.read_text()}"


def test_health_and_ready_answer(server: Server) -> None:
    health = requests.get(server.url + "/health", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "Healthy"}
    ready = requests.get(server.url + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "Ready"}


def test_slow_clients_leave_the_probes_fast(server: Server) -> None:
    """The image's server receives requests whole before a thread sees them (cutout.front):
    50 connections dripping headers and 50 dripping bodies leave /health fast."""
    port = int(server.url.rsplit(":", 1)[1])
    with SlowClients("127.0.0.1", port, headers=50, bodies=50) as slow:
        time.sleep(2.5)
        took = health_latencies(server.url, 60)
        assert slow.closed == 0
    assert p99(took) < 0.2, sorted(took)[-5:]


def test_deployment_probe_paths_answer_200(server: Server) -> None:
    (container,) = yaml.safe_load((ROOT / "deploy/k8s/deployment.yaml").read_text())["spec"][
        "template"
    ]["spec"]["containers"]
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[kind]["httpGet"]["path"]
        assert requests.get(server.url + path, timeout=10).status_code == 200, (kind, path)


def test_a_real_photo_goes_through_end_to_end(server: Server, photos: Photos) -> None:
    photo = photos.named("rocket")
    with Image.open(photo) as original:
        expected_size = ImageOps.exif_transpose(original).size
    session = requests.Session()
    page = session.get(server.url + "/", timeout=30)
    assert page.status_code == 200
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert match, "the page has no csrf-token meta tag"

    response = session.post(
        server.url + "/",
        headers={"Accept": "application/json"},
        data={"name": "deploy smoke test", "csrf_token": match.group(1)},
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    assert record["image_name"] == "deploy smoke test"
    assert record["model"] == "isnet+modnet"
    assert 0.0 <= record["confidence"] <= 1.0

    image = session.get(server.url + record["processed_url"], timeout=30)
    assert image.status_code == 200
    assert image.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(image.content)) as cutout:
        assert cutout.format == "PNG" and cutout.mode == "RGBA"
        assert cutout.size == expected_size
        alpha = cutout.getchannel("A")
        histogram = alpha.histogram()
    transparent, opaque = sum(histogram[:16]), sum(histogram[240:])
    assert transparent and opaque, "expected a real cut-out: transparent and opaque pixels"
    # It was stored in the data dir the environment points at (SQLite, no MONGO_URI).
    assert Path(server.env["CUTOUT_DATA_DIR"]).is_dir()


def test_docker_healthcheck_command_reports_the_server_state(server: Server) -> None:
    check = dockerfile.parse(ROOT / "Dockerfile").final.healthcheck
    assert check and check[0] == "python"
    command = [str(VENV_BIN / "python"), *check[1:]]
    up = subprocess.run(command, env=server.env, capture_output=True, timeout=30)
    assert up.returncode == 0, up.stderr
    nobody = {**server.env, "CUTOUT_PORT": str(free_port())}
    down = subprocess.run(command, env=nobody, capture_output=True, timeout=30)
    assert down.returncode != 0


# -- the model dir on a read-only root file system --------------------------------------------

ENGINE_CHECK = """
from PIL import Image
from cutout.config import Settings
from cutout.engine import local_engine
engine = local_engine(Settings.from_env(dotenv_path=None))
engine.predict_mask(Image.new("RGB", (64, 64)))
print(engine.runtime)
"""


def without_write_access() -> list[str]:
    """A command prefix under which permission bits bind, even for root (no DAC override)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing("running as root without setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    assert setpriv is not None
    return [setpriv, "--bounding-set=-all", "--inh-caps=-all"]


INT8_FILES = ("xml", "bin", "json")


def run_engine_on_read_only_dir(
    tmp_path: Path, model_settings: Settings, *, with_cache_dir: bool
) -> subprocess.CompletedProcess[str]:
    spec = get_spec(model_settings.model)
    if not is_installed(spec, model_settings.model_dir):
        missing(f"model not installed in {model_settings.model_dir}; run `make install`")
    models = tmp_path / "models"
    models.mkdir()
    (models / spec.filename).symlink_to(model_path(spec, model_settings.model_dir))
    # MODNet and both INT8 builds too, as `cutout models fetch` leaves them in the image
    builds = [f"{name}.int8.{ext}" for name in (spec.name, "modnet") for ext in INT8_FILES]
    for name in ("modnet.onnx", *builds):
        (models / name).symlink_to(model_settings.model_dir / name)
    if with_cache_dir:
        (models / "openvino-cache").mkdir()
    read_only = [models, *([models / "openvino-cache"] if with_cache_dir else [])]
    for path in read_only:
        path.chmod(0o555)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CUTOUT_MODEL_DIR": str(models),
    }
    try:
        prefix = without_write_access()
        probe = subprocess.run([*prefix, "touch", str(models / "probe")], capture_output=True)
        assert probe.returncode != 0, "the model dir should not be writable in this check"
        return subprocess.run(
            [*prefix, str(VENV_BIN / "python"), "-c", ENGINE_CHECK],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for path in read_only:
            path.chmod(0o755)


def test_engine_loads_from_a_read_only_model_dir_with_the_cache_dir_present(
    tmp_path: Path, model_settings: Settings
) -> None:
    """The image's layout: model + an (empty) openvino-cache folder, nothing writable."""
    result = run_engine_on_read_only_dir(tmp_path, model_settings, with_cache_dir=True)
    assert result.returncode == 0, result.stderr
    assert not any((tmp_path / "models" / "openvino-cache").iterdir())


def test_engine_loads_from_a_read_only_model_dir_without_a_cache_dir(
    tmp_path: Path, model_settings: Settings
) -> None:
    """A model dir mounted read-only without the cache folder: no cache, but a working engine."""
    result = run_engine_on_read_only_dir(tmp_path, model_settings, with_cache_dir=False)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "models" / "openvino-cache").exists()
