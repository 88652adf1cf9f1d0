"""The repository's Kubernetes manifests run by ``podman kube play`` (issue 15 §3).

The web Deployment, its ConfigMap and a Secret made from ``secret.example.yaml`` (test values,
no MONGO_URI: the SQLite store on the pod's emptyDir) are played with the image built here.
The only changes to the manifests are the ones a cluster would make: the image (kustomize's
job), one replica, and loopback ``hostPort``s in place of a Service. What kube play does not
run (Service, HPA, PDB, KEDA, PodMonitoring) stays with the schema checks in tests/deploy.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image

from cutout.config import Settings
from cutout.memory import MB, estimate
from tests.conftest import Photos
from tests.container.podman import ROOT, SECRET, podman
from tests.container.test_image import JSON, browser
from tests.helpers import free_port

K8S = ROOT / "deploy" / "k8s"
#: A ConfigMap value changed for the test, so the app's answer proves the ConfigMap reached it.
USER_LIMIT = "7"
MEGAPIXELS_24 = (4000, 6000)


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return doc


def quantity(value: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


@dataclass
class Pod:
    url: str
    metrics_url: str
    container: str
    deployment: dict[str, Any]
    config: dict[str, str]

    def exec(self, *command: str) -> str:
        return podman("exec", self.container, *command)


def play_manifest(image: str, port: int, metrics_port: int) -> list[dict[str, Any]]:
    config = load("configmap.yaml")
    config["data"]["USER_LIMIT"] = USER_LIMIT
    secret = load("secret.example.yaml")
    secret["stringData"].update(APP_SECRET_KEY=SECRET, MONGO_URI="", X_RAPID_API_KEY="")
    deployment = copy.deepcopy(load("deployment.yaml"))
    deployment["spec"]["replicas"] = 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    host_ports = {"http": port, "metrics": metrics_port}
    for entry in container["ports"]:
        entry.update(hostIP="127.0.0.1", hostPort=host_ports[entry["name"]])
    return [config, secret, deployment]


@pytest.fixture(scope="module")
def pod(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    tmp = tmp_path_factory.mktemp("kube")
    port, metrics_port = free_port(), free_port()
    docs = play_manifest(image, port, metrics_port)
    manifest = tmp / "play.yaml"
    config, secret, deployment = docs
    manifest.write_text(yaml.safe_dump_all([config, deployment]))
    # podman 4.3 stores a played Secret as YAML but reads a `secretRef` as a JSON object of
    # base64 values (and fails on its own YAML): the Secret's values go in that form through
    # `podman secret create`, under the Secret's name.
    values = secret["stringData"].items()
    secret_file = tmp / "secret.json"
    secret_file.write_text(
        json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in values})
    )
    # kube play has no --ulimit: the machine's limits go through containers.conf
    conf = tmp / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]\n')
    os.environ["CONTAINERS_CONF"] = str(conf)
    name = deployment["metadata"]["name"]
    try:
        podman("secret", "create", secret["metadata"]["name"], str(secret_file))
        podman("kube", "play", str(manifest), timeout=300)
        pod = Pod(
            url=f"http://127.0.0.1:{port}",
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
            container=f"{name}-pod-0-{name}",
            deployment=deployment,
            config=config["data"],
        )
        wait_ready(pod)
        yield pod
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)
        podman("secret", "rm", secret["metadata"]["name"], check=False)
        del os.environ["CONTAINERS_CONF"]


def wait_ready(pod: Pod, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(pod.url + "/ready", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    logs = podman("logs", pod.container, check=False)
    pytest.fail(f"the pod is not ready after {timeout} s:\n{logs[-6000:]}")


def probes(pod: Pod) -> dict[str, str]:
    (container,) = pod.deployment["spec"]["template"]["spec"]["containers"]
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return {kind: container[kind]["httpGet"]["path"] for kind in kinds}


def test_the_pod_starts_and_its_probe_paths_answer(pod: Pod) -> None:
    assert podman("inspect", "--format", "{{.State.Running}}", pod.container) == "true"
    for kind, path in probes(pod).items():
        assert requests.get(pod.url + path, timeout=10).status_code == 200, (kind, path)


def test_the_security_context_holds_in_the_pod(pod: Pod) -> None:
    status = pod.exec("cat", "/proc/1/status")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {"10001"}
    assert pod.exec("sh", "-c", "touch /opt/cutout/x 2>/dev/null; echo $?") != "0"
    assert pod.exec("sh", "-c", "touch /tmp/x /data/x && echo ok") == "ok"


def test_configmap_and_secret_values_reach_the_app(pod: Pod) -> None:
    session, _ = browser(pod.url)
    assert session.get(pod.url + "/", headers=JSON, timeout=30).json()["limit"] == int(USER_LIMIT)
    # CUTOUT_METRICS_HOST=0.0.0.0 from the ConfigMap: else the hostPort would find nothing
    assert "cutout_" in requests.get(pod.metrics_url, timeout=10).text
    # the app refuses to start without APP_SECRET_KEY; the Secret supplied this one
    assert pod.exec("printenv", "APP_SECRET_KEY") == SECRET
    assert (
        pod.exec("printenv", "CUTOUT_INFERENCE_THREADS") == pod.config["CUTOUT_INFERENCE_THREADS"]
    )


def test_requests_and_limits_fit_the_measured_memory(pod: Pod) -> None:
    (container,) = pod.deployment["spec"]["template"]["spec"]["containers"]
    limit = quantity(container["resources"]["limits"]["memory"])
    request = quantity(container["resources"]["requests"]["memory"])
    applied = int(podman("inspect", "--format", "{{.HostConfig.Memory}}", pod.container))
    assert applied == limit, f"kube play applied {applied}, the manifest says {limit}"
    idle = tree_rss(pod)
    settings = Settings.from_env(dotenv_path=None, environ=pod.config)
    budget = settings.memory_budget_bytes
    biggest = estimate(*max_photo(settings.max_megapixels))
    print(
        f"pod idle {idle / MB:.0f} MiB, budget {budget / MB:.0f} MiB, "
        f"largest photo {biggest / MB:.0f} MiB, request {request / MB:.0f}, limit {limit / MB:.0f}"
    )
    # admission keeps removals within the budget: idle + budget must stay under the limit
    assert idle + budget < limit
    # the request covers the idle pod and the largest photo the ConfigMap admits
    assert idle + biggest <= request


def max_photo(megapixels: float) -> tuple[int, int]:
    side = int((megapixels * 1e6) ** 0.5)
    return side, side


def tree_rss(pod: Pod) -> int:
    script = (
        "import glob, os\nt = 0\nme = f'/proc/{os.getpid()}/status'\n"
        "for s in set(glob.glob('/proc/[0-9]*/status')) - {me}:\n"
        "    try: lines = open(s).read().splitlines()\n    except OSError: continue\n"
        "    t += sum(int(l.split()[1]) for l in lines if l.startswith('VmRSS:'))\n"
        "print(t * 1024)\n"
    )
    return int(pod.exec("python", "-c", script))


def test_a_24_mp_upload_is_not_oom_killed_by_the_pods_limit(
    pod: Pod, photos: Photos, tmp_path: Path
) -> None:
    big = tmp_path / "24mp.jpg"
    with Image.open(photos.named("chelsea")) as photo:
        photo.convert("RGB").resize(MEGAPIXELS_24).save(big, quality=90)
    session, token = browser(pod.url)
    peak = [tree_rss(pod)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(tree_rss(pod))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = session.post(
            pod.url + "/",
            headers=JSON,
            data={"name": "24 MP", "csrf_token": token},
            files={"image": ("24mp.jpg", big.read_bytes(), "image/jpeg")},
            timeout=300,
        )
    finally:
        done.set()
        sampler.join()
    assert response.status_code == 201, response.text
    assert podman("inspect", "--format", "{{.State.OOMKilled}}", pod.container) == "false"
    assert podman("inspect", "--format", "{{.RestartCount}}", pod.container) == "0"
    (container,) = pod.deployment["spec"]["template"]["spec"]["containers"]
    limit = quantity(container["resources"]["limits"]["memory"])
    print(f"24 MP upload in the pod: peak RSS {max(peak) / MB:.0f} MiB of {limit / MB:.0f}")
    assert max(peak) < limit


def test_the_worker_deployment_plays_with_the_image(image: str, pod: Pod, tmp_path: Path) -> None:
    """worker.yaml with the web pod's ConfigMap and Secret: its container starts and stays up.

    (Its broker, redis.yaml's Service, has no equivalent in kube play; the job flow through a
    worker is run by the compose test.)
    """
    from tests.container.test_stack import NO_WORKER, has_worker

    assert has_worker(image), NO_WORKER
    worker = load("worker.yaml")
    worker["spec"]["replicas"] = 1
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    manifest = tmp_path / "worker.yaml"
    # the ConfigMap beside it (kube play reads one from the same file); the Secret is the pod's
    manifest.write_text(yaml.safe_dump_all([load("configmap.yaml"), worker]))
    name = worker["metadata"]["name"]
    try:
        podman("kube", "play", str(manifest), timeout=300)
        time.sleep(15)
        running = f"{name}-pod-0-{container['name']}"
        assert podman("inspect", "--format", "{{.State.Running}}", running) == "true"
        assert podman("exec", running, "cat", "/proc/1/cmdline").replace("\0", " ").strip()
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)
