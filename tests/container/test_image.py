"""The image built from the repository's Dockerfile, run and checked from outside (issue 15 §1).

One container (read-only root, /data a volume, /tmp a tmpfs, no capabilities) serves the
module's HTTP checks; the stop/restart and offline checks start their own, one at a time.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Photos
from tests.container.podman import APP_UID, ROOT, ULIMITS, Container, data_dir, podman
from tests.deploy import dockerfile

JSON = {"Accept": "application/json"}


def start_period() -> float:
    """The ``--start-period`` of the Dockerfile's HEALTHCHECK, seconds."""
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"HEALTHCHECK[^\n]*--start-period=(\d+)s", text)
    assert match, "the Dockerfile's HEALTHCHECK has no --start-period"
    return float(match.group(1))


@pytest.fixture(scope="module")
def server(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    data = data_dir(tmp_path_factory.mktemp("image") / "data")
    with Container(image, data) as container:
        container.health_seconds = container.wait("/health", timeout=start_period())
        container.wait("/ready")
        yield container


def browser(url: str) -> tuple[requests.Session, str]:
    session = requests.Session()
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', session.get(url + "/").text)
    assert match, "the page has no csrf-token"
    return session, match.group(1)


def upload(url: str, session: requests.Session, token: str, photo: Path, name: str) -> Any:
    response = session.post(
        url + "/",
        headers=JSON,
        data={"name": name, "csrf_token": token},
        files={"image": (photo.name, photo.read_bytes(), "image/jpeg")},
        timeout=180,
    )
    return response


def records(url: str, session: requests.Session) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = session.get(url + "/", headers=JSON, timeout=30).json()[
        "records"
    ]
    return listed


# -- health, user, file system ----------------------------------------------------------------


def test_health_answers_within_the_healthcheck_start_period(server: Container) -> None:
    # the fixture waited at most the start period for /health: the figure is the container's
    print(f"/health 200 after {server.health_seconds:.1f} s (start period {start_period():.0f} s)")
    assert server.health_seconds < start_period()
    # podman runs the image's own HEALTHCHECK command inside the container: exit 0 = healthy
    podman("healthcheck", "run", server.name)


def test_the_process_runs_as_the_non_root_user(server: Container) -> None:
    status = server.exec("cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(APP_UID)}, uids
    assert server.exec("cat", "/proc/1/comm").startswith("gunicorn")


def test_the_root_file_system_is_read_only_and_data_tmp_are_writable(server: Container) -> None:
    result = podman("exec", server.name, "sh", "-c", "touch /opt/cutout/x; echo $?")
    assert result.strip() != "0", "the root file system should be read-only"
    assert server.exec("sh", "-c", "touch /tmp/x /data/x && rm /tmp/x /data/x && echo ok") == "ok"
    assert "/data" in server.inspect("{{json .Mounts}}")


# -- the models, offline ----------------------------------------------------------------------


VERIFY = """
import hashlib
from cutout.config import Settings
from cutout.engine import required_models
from cutout.engine.files import model_path
settings = Settings.from_env(dotenv_path=None)
for spec in required_models(settings):
    algorithm, expected = spec.checksum.split(":")
    digest = hashlib.new(algorithm, model_path(spec, settings.model_dir).read_bytes()).hexdigest()
    assert digest == expected, (spec.name, digest)
    print(spec.name, "ok")
"""


def test_the_models_are_in_the_image_and_verified(image: str) -> None:
    offline = ["run", "--rm", *ULIMITS, "--network", "none", "--read-only", image]
    # the checksums the registry pins, recomputed on the files inside the image
    assert podman(*offline, "python", "-c", VERIFY).split() == ["isnet", "ok", "modnet", "ok"]
    # `models fetch` with no network and a read-only root: everything is already there
    fetched = podman(*offline, "cutout", "models", "fetch", timeout=300)
    assert "isnet int8: already built" in fetched, fetched
    assert "modnet int8: already built" in fetched, fetched


def test_cutout_remove_runs_with_no_network_at_all(
    image: str, photos: Photos, tmp_path: Path
) -> None:
    out = data_dir(tmp_path / "out")
    photo = photos.named("rocket")
    args = ["run", "--rm", *ULIMITS, "--network", "none", "--read-only", "--tmpfs", "/tmp"]
    args += ["-v", f"{photo.parent}:/in:ro", "-v", f"{out}:/out", image]
    podman(*args, "cutout", "remove", f"/in/{photo.name}", "-o", "/out/rocket.png", timeout=300)
    from PIL import Image

    with Image.open(out / "rocket.png") as cutout:
        assert cutout.mode == "RGBA"
        histogram = cutout.getchannel("A").histogram()
    assert sum(histogram[:16]) and sum(histogram[240:]), "expected a real cut-out"


#: Inside the container: the cores cutout counts, and the threads of the ISNet pass it compiles
#: with CUTOUT_INFERENCE_THREADS left at 0.
CORES = """
from pathlib import Path
from cutout.machine import usable_cores
from cutout.engine.runtimes import OpenVINORuntime
isnet = OpenVINORuntime(Path("/opt/cutout/models/isnet.int8.xml"), input_name=None,
    output_name=None, precision="int8", threads=0, slots=1, cache_dir=None)
print(usable_cores(), isnet.threads)
"""


def test_a_cpu_limit_caps_the_threads_below_the_cores_in_view(image: str) -> None:
    """`--cpus 1` leaves every core in the container's affinity; OpenVINO alone ran its pass
    on all of them (0.853 s against 0.787 s on one thread, on 2 cores)."""
    args = ["run", "--rm", *ULIMITS, "--network", "none", "--read-only", "--cpus", "1", image]
    assert podman(*args, "python", "-c", CORES, timeout=180).split() == ["1", "1"]


#: Inside the container: the memory budget one process of the image's settings admits against.
BUDGET = """
import logging, sys
logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
from cutout.app import memory_budget
from cutout.config import Settings
print(memory_budget(Settings.from_env(), processes=1) // 2**20)
"""


def test_a_memory_limit_lowers_the_default_budget_to_fit_and_says_so(image: str) -> None:
    """Left at 1024 MB in a 1 GiB container, a burst of large uploads would meet the kernel's
    OOM killer rather than a 503; a budget set on purpose is kept."""
    args = ["run", "--rm", *ULIMITS, "--network", "none", "--read-only", "--memory", "1g"]
    fitted = podman(*args, image, "python", "-c", BUDGET, timeout=120)
    assert fitted.split()[-1] == "478", fitted  # (1024 - 450) / 1.2: memory.fitted_budget
    assert "WARNING Memory budget lowered to 478 MB" in fitted
    chosen = podman(*args, "-e", "CUTOUT_MEMORY_BUDGET_MB=1024", image, "python", "-c", BUDGET)
    assert chosen.split()[-1] == "1024" and "may not fit the memory limit" in chosen, chosen


# -- the seed's flow, the remove.bg API, metrics ----------------------------------------------


def test_upload_list_rename_delete_through_the_published_port(
    server: Container, photos: Photos
) -> None:
    session, token = browser(server.url)
    created = upload(server.url, session, token, photos.named("rocket"), "container")
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["model"] == "isnet+modnet"
    assert [r["_id"] for r in records(server.url, session)] == [record["_id"]]
    image = session.get(server.url + record["processed_url"], timeout=30)
    assert image.status_code == 200 and image.headers["Content-Type"] == "image/png"

    rename = session.put(
        f"{server.url}/update/{record['_id']}",
        json={"record_id": record["_id"], "record_name": "renamed"},
        headers={"X-CSRFToken": token},
        timeout=30,
    )
    assert rename.status_code == 200, rename.text
    assert records(server.url, session)[0]["image_name"] == "renamed"
    gone = session.delete(
        f"{server.url}/remove/{record['_id']}", headers={"X-CSRFToken": token}, timeout=30
    )
    assert gone.status_code == 200, gone.text
    assert records(server.url, session) == []


def test_removebg_with_a_key_made_inside_the_container(server: Container, photos: Photos) -> None:
    output = server.exec("cutout", "keys", "create", "container-test", "--credits", "5")
    secret = output.splitlines()[-1]
    response = requests.post(
        server.url + "/v1.0/removebg",
        headers={"X-Api-Key": secret},
        files={"image_file": ("rocket.jpg", photos.named("rocket").read_bytes())},
        data={"size": "preview"},
        timeout=180,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/png"
    refused = requests.post(
        server.url + "/v1.0/removebg",
        headers={"X-Api-Key": secret + "x"},
        files={"image_file": ("rocket.jpg", photos.named("rocket").read_bytes())},
        timeout=60,
    )
    assert refused.status_code in (401, 403), refused.status_code


def test_metrics_are_served_on_their_own_port(server: Container, photos: Photos) -> None:
    text = requests.get(server.metrics_url, timeout=30).text
    assert "cutout_" in text and "# TYPE" in text
    assert requests.get(server.url + "/metrics", timeout=30).status_code == 404


# -- stop and restart -------------------------------------------------------------------------


def test_sigterm_finishes_the_request_in_flight_and_data_survives_a_restart(
    image: str, photos: Photos, tmp_path: Path
) -> None:
    data = data_dir(tmp_path / "data")
    big = tmp_path / "big.jpg"
    from PIL import Image

    with Image.open(photos.named("rocket")) as photo:  # ~6 MP: a few seconds of work
        photo.convert("RGB").resize((2000, 3000)).save(big, quality=90)
    with Container(image, data) as first:
        first.wait()
        session, token = browser(first.url)
        result: dict[str, Any] = {}

        def post() -> None:
            result["response"] = upload(first.url, session, token, big, "in flight")

        thread = threading.Thread(target=post)
        thread.start()
        wait_in_flight(first)
        code = first.stop(timeout=45)
        thread.join(timeout=60)
        assert code == 0, f"exit code {code} after SIGTERM:\n{first.logs()}"
        assert result["response"].status_code == 201, result["response"].text
        saved = result["response"].json()["_id"]
    with Container(image, data) as second:
        second.wait()
        assert [r["_id"] for r in records(second.url, session)] == [saved]


def wait_in_flight(container: Container, timeout: float = 60) -> None:
    """Until the server's gauge says one request is being processed."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = requests.get(container.metrics_url, timeout=10).text
        for line in text.splitlines():
            if line.startswith("cutout_admission_active") and float(line.split()[-1]) >= 1:
                return
        time.sleep(0.05)
    pytest.fail(f"no request in flight within {timeout} s")


# -- what the image holds ---------------------------------------------------------------------


def test_image_size_layers_and_no_build_tools(image: str) -> None:
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image))
    history = json.loads(podman("history", "--format", "json", image))
    layers = [h for h in history if h.get("size", 0) > 0]
    report = {"image": image, "size_mb": round(size / 1e6), "layers": len(layers)}
    report["biggest"] = [
        {"mb": round(h["size"] / 1e6), "by": h.get("CreatedBy", h.get("created_by", ""))[:100]}
        for h in sorted(layers, key=lambda h: -int(h["size"]))[:4]
    ]
    out = ROOT / "build" / "container"
    out.mkdir(parents=True, exist_ok=True)
    (out / "image-report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert size < 1.4e9, f"the image grew to {size / 1e6:.0f} MB"
    final = dockerfile.parse(ROOT / "Dockerfile").final
    assert final.user and final.user.split(":")[0] == str(APP_UID)
    probe = (
        "for t in gcc cc c++ g++ make ld; do command -v $t; done;"
        " ls -d /root/.cache/pip /tmp/.cache/pip /src /opt/cutout/venv/lib/*/site-packages/tests"
        " /opt/cutout/tests 2>/dev/null; true"
    )
    found = podman("run", "--rm", *ULIMITS, "--network", "none", image, "sh", "-c", probe)
    assert found == "", f"the runtime image holds build-time things:\n{found}"
