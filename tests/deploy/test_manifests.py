"""The deployment files: schemas, linters, and agreement with each other and with the app.

Nothing here needs Docker or a cluster: manifests are validated offline against the Kubernetes
schemas that ``kubernetes-validate`` bundles, rendered with ``kubectl kustomize`` (client-side
only), and cross-checked against ``cutout.config`` (the variables the app reads) and the
Dockerfile. The running server is exercised in ``test_container.py``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cutout.config import ENV_FIELDS, Settings
from tests.conftest import missing
from tests.deploy import dockerfile
from tests.helpers import load_script

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VENV_BIN = Path(sys.prefix) / "bin"
#: The oldest Kubernetes we claim to support and a current GKE release-channel version.
K8S_VERSIONS = ("1.30", "1.34")
APP = "image-background-processor"
IMAGE_PLACEHOLDER = "REGION-docker.pkg.dev/PROJECT/REPO/image-background-processor"
SECRET_KEYS = {"APP_SECRET_KEY", "X_RAPID_API_KEY", "X_RAPID_API_HOST", "MONGO_URI"}
APP_ENV = {f.metadata["env"] for f in ENV_FIELDS}
#: Variables that deployment files may set although the app does not read them, and why.
NOT_APP_ENV = {
    "PYTHONUNBUFFERED": "Python: write logs straight to stdout, where containers collect them",
    "PYTHONDONTWRITEBYTECODE": "Python: no .pyc writes on the read-only root file system",
    "PATH": "the image puts its venv's bin/ first, so `gunicorn` is the venv's",
    "HOME": "a writable home (/tmp) for gunicorn's control socket and telemetry ids",
    "MALLOC_ARENA_MAX": "glibc: two malloc arenas, not 8 per core (peak RSS of a burst -30%)",
    # The job worker's settings (issue 14, branch `jobs`): read by the app once it is merged.
    "CUTOUT_QUEUE_URL": "the job broker (Redis) of `cutout worker`, issue 14",
    "CUTOUT_WEB_RUNS_JOBS": "whether the web process also runs job items, issue 14",
}
SECRET_LOOKING = re.compile(r"SECRET|KEY|PASSWORD|PASSWD|TOKEN|CREDENTIAL|MONGO_URI", re.I)
URI_WITH_CREDENTIALS = re.compile(r"://[^/@\s]+:[^/@\s]*@")


def load(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def one(path: Path) -> dict[str, Any]:
    docs = load(path)
    assert len(docs) == 1, f"{path.name}: expected one document, found {len(docs)}"
    return docs[0]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def deployment() -> dict[str, Any]:
    return one(K8S / "deployment.yaml")


def container() -> dict[str, Any]:
    containers = deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def image_stage() -> dockerfile.Stage:
    return dockerfile.parse(ROOT / "Dockerfile").final


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make any network connection attempt fail loudly: validation must work offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def validate_strict(doc: dict[str, Any], where: str) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(
                f"{where}: {doc['kind']} invalid for Kubernetes {version} at {path}: {exc.message}"
            )


# -- 1. schemas --------------------------------------------------------------------------------


#: Custom resources: kubernetes-validate has no schema for them; checked by hand below.
CUSTOM_KINDS = {"PodMonitoring", "ScaledObject"}


@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_matches_the_kubernetes_schema_strictly(path: Path, offline: None) -> None:
    docs = load(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        if doc["kind"] not in CUSTOM_KINDS:
            validate_strict(doc, path.name)


def test_prometheus_scrapes_the_metrics_port_of_the_pods() -> None:
    """GKE managed Prometheus (PodMonitoring, monitoring.googleapis.com/v1) and the common
    prometheus.io annotations both point at the container's `metrics` port, which matches
    CUTOUT_METRICS_PORT, listens on the pod network, and no Service exposes."""
    monitor = one(K8S / "podmonitoring.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.googleapis.com/v1",
                                                        "PodMonitoring")  # fmt: skip
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    spec = monitor["spec"]
    assert set(spec) == {"selector", "endpoints"}
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = spec["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    config = one(K8S / "configmap.yaml")["data"]
    assert ports["metrics"] == int(config["CUTOUT_METRICS_PORT"]) == 9464
    assert config["CUTOUT_METRICS_HOST"] == "0.0.0.0"  # the pod network; the LB never sees it
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ports["metrics"]),
        "prometheus.io/path": "/metrics",
    }
    (service_port,) = one(K8S / "service.yaml")["spec"]["ports"]
    assert service_port["targetPort"] == "http"


def test_strict_validation_rejects_unknown_fields(offline: None) -> None:
    """Guard the guard: a misspelt field must fail, or the test above proves nothing."""
    doc = deployment()
    doc["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def kustomize_build() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        missing("kubectl not found: it renders deploy/k8s (kubectl kustomize, offline)")
    assert kubectl is not None
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


def test_kustomization_renders_valid_manifests_with_the_real_image() -> None:
    rendered = kustomize_build()
    kinds = sorted(doc["kind"] for doc in rendered)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PodMonitoring",
        "ScaledObject",
        "Service",
        "Service",
    ]
    for doc in rendered:
        if doc["kind"] not in CUSTOM_KINDS:
            validate_strict(doc, "kubectl kustomize deploy/k8s")
    (entry,) = one(K8S / "kustomization.yaml")["images"]
    images = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in rendered
        if d["kind"] == "Deployment"
    }
    ours = f"{entry['newName']}:{entry['newTag']}"
    assert images == {APP: ours, f"{APP}-worker": ours, f"{APP}-redis": "redis:7"}


def test_kustomization_lists_every_manifest_except_the_secret_example() -> None:
    kustomization = one(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifests()} - {"secret.example.yaml", "worker-hpa.yaml"}
    assert "secret.example.yaml" in (K8S / "kustomization.yaml").read_text(), (
        "say in a comment that the secret example is applied by hand"
    )
    assert "worker-hpa.yaml" in (K8S / "kustomization.yaml").read_text(), (
        "say in a comment when the CPU fallback replaces the KEDA ScaledObject"
    )


# -- 2. and 3. linters -------------------------------------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in {VENV_BIN} or on PATH; install the dev extras: make dev")
    return found


def test_yamllint_passes_on_every_yaml_file_in_the_repository() -> None:
    yamllint = tool("yamllint")
    config = ROOT / ".yamllint.yaml"
    listed = subprocess.run(
        [yamllint, "-c", str(config), "--list-files", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    files = {Path(line).as_posix().removeprefix("./") for line in listed.stdout.split()}
    expected = {f"deploy/k8s/{p.name}" for p in K8S.glob("*.yaml")}
    expected |= {"docker-compose.yml", "cloudbuild.yaml", ".yamllint.yaml"}
    assert expected <= files, f"yamllint would skip {sorted(expected - files)}"
    assert not any(f.startswith(".venv/") for f in files)
    result = subprocess.run(
        [yamllint, "-c", str(config), "--strict", "-f", "parsable", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- 4. consistency ----------------------------------------------------------------------------


def test_ports_agree_everywhere() -> None:
    port, _metrics = container()["ports"]
    assert port["name"] == "http"
    (service_port,) = one(K8S / "service.yaml")["spec"]["ports"]
    target = service_port["targetPort"]
    resolved = port["containerPort"] if target == port["name"] else target
    default_port = Settings.from_env(environ={}, dotenv_path=None).port
    stage = image_stage()
    compose_port = one(ROOT / "docker-compose.yml")["services"]["app"]["ports"]
    published = {int(p.split(":")[-1]) for p in compose_port}
    assert port["containerPort"] == resolved == default_port == 5000
    assert stage.expose == [str(default_port)]
    assert stage.env["CUTOUT_PORT"] == str(default_port)
    assert published == {default_port}
    assert service_port["port"] == 80  # the seed's load balancer port


def env_keys_by_file() -> dict[str, set[str]]:
    config = one(K8S / "configmap.yaml")
    secret = one(K8S / "secret.example.yaml")
    spec = deployment()["spec"]["template"]["spec"]
    in_deployment = {
        e["name"]
        for c in spec["containers"] + spec.get("initContainers", [])
        for e in c.get("env", [])
    }
    # Only the app's: the mongo service is configured by its own image's variables.
    in_compose = set(one(ROOT / "docker-compose.yml")["services"]["app"]["environment"])
    return {
        "configmap.yaml": set(config["data"]),
        "secret.example.yaml": set(secret["stringData"]),
        "deployment.yaml": in_deployment,
        "docker-compose.yml": in_compose,
        "Dockerfile": dockerfile.parse(ROOT / "Dockerfile").all_env_keys(),
    }


def test_every_environment_variable_set_is_one_the_app_reads() -> None:
    unknown = {
        name: sorted(keys - APP_ENV - set(NOT_APP_ENV)) for name, keys in env_keys_by_file().items()
    }
    assert not any(unknown.values()), (
        f"variables cutout.config does not read (typo? or allow-list them with a reason): {unknown}"
    )


def test_configured_values_are_valid_settings() -> None:
    """The image's ENV plus the ConfigMap must form settings the app accepts as they are."""
    env = {k: v for k, v in image_stage().env.items() if k in APP_ENV}
    env.update(one(K8S / "configmap.yaml")["data"])
    settings = Settings.from_env(environ=env, dotenv_path=None)
    assert settings.env == "production"
    assert settings.inference_threads == cpu_cores(container()["resources"]["limits"]["cpu"])


def test_configmap_holds_no_secrets() -> None:
    data: dict[str, str] = one(K8S / "configmap.yaml")["data"]
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    leaks = [
        k for k, v in data.items() if SECRET_LOOKING.search(k) or URI_WITH_CREDENTIALS.search(v)
    ]
    assert not leaks, f"secrets belong in the Secret, not the ConfigMap: {leaks}"


def test_secret_example_holds_exactly_the_secrets_as_placeholders() -> None:
    secret = one(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret" and "data" not in secret
    assert set(secret["stringData"]) == SECRET_KEYS
    assert "REPLACE" in secret["stringData"]["APP_SECRET_KEY"]
    assert "EXAMPLE" in (K8S / "secret.example.yaml").read_text()
    refs = {
        kind: {r[f"{kind}Ref"]["name"] for r in container()["envFrom"] if f"{kind}Ref" in r}
        for kind in ("configMap", "secret")
    }
    assert refs == {
        "configMap": {one(K8S / "configmap.yaml")["metadata"]["name"]},
        "secret": {secret["metadata"]["name"]},
    }


def test_selectors_match_the_pod_labels() -> None:
    deploy = deployment()
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == APP and deploy["metadata"]["labels"]["app"] == APP
    selectors = {
        "deployment": deploy["spec"]["selector"]["matchLabels"],
        "service": one(K8S / "service.yaml")["spec"]["selector"],
        "pdb": one(K8S / "pdb.yaml")["spec"]["selector"]["matchLabels"],
    }
    for name, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), f"{name} selector {selector}"
    assert deploy["spec"]["replicas"] == 2
    hpa = one(K8S / "hpa.yaml")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert one(K8S / "pdb.yaml")["spec"]["minAvailable"] == 1
    service = one(K8S / "service.yaml")
    assert (service["metadata"]["name"], service["spec"]["type"]) == (f"{APP}-lb", "LoadBalancer")


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def to_bytes(quantity: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?|[kE]|)", str(quantity))
    assert match, f"unsupported quantity {quantity!r}"
    number, unit = float(match.group(1)), match.group(2)
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    decimal = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return number * (binary.get(unit) or decimal[unit])


def test_resource_requests_do_not_exceed_limits() -> None:
    resources = container()["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)
    for key, request in requests.items():
        parse = cpu_cores if key == "cpu" else to_bytes
        assert parse(request) <= parse(limits[key]), f"{key}: request {request} > limit"
    # The measured idle footprint (one model copy, ~0.52 GiB) must fit the request.
    assert to_bytes(requests["memory"]) >= 1 * 2**30


def test_pod_runs_as_the_image_user_on_a_read_only_root() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    ctx = container()["securityContext"]
    uid = int(str(image_stage().user).split(":")[0])
    assert uid == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == ctx["runAsUser"] == uid
    assert ctx["runAsNonRoot"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # Everything the app writes must be on a writable volume: /tmp, $HOME and the data dir.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container()["volumeMounts"]}
    env = image_stage().env
    for path in ("/tmp", env["HOME"], env["CUTOUT_DATA_DIR"]):
        assert path in mounts and "emptyDir" in mounts[path], f"{path} is not writable"
    assert not any(p.startswith(env["CUTOUT_MODEL_DIR"]) for p in mounts), (
        "mounting over the model dir would hide the model baked into the image"
    )


def test_probes_use_the_apps_health_endpoints() -> None:
    c = container()
    probes = {
        kind: c[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    assert {p["port"] for p in probes.values()} == {"http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_image_reference_agrees_across_deployment_kustomization_and_cloud_build() -> None:
    image = container()["image"]
    assert image == f"{IMAGE_PLACEHOLDER}:TAG"
    (entry,) = one(K8S / "kustomization.yaml")["images"]
    assert entry["name"] == IMAGE_PLACEHOLDER
    assert re.fullmatch(
        r"[a-z0-9-]+-docker\.pkg\.dev/[a-z0-9-]+/[a-z0-9-]+/" + APP, entry["newName"]
    )

    build = one(ROOT / "cloudbuild.yaml")
    subs: dict[str, str] = build["substitutions"]
    steps = {s["id"]: s for s in build["steps"]}
    path = subs["_IMAGE_PATH"]
    assert path == "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_IMAGE}"
    assert subs["_IMAGE"] == APP
    tagged = "${_IMAGE_PATH}:${SHORT_SHA}"
    assert f"--tag={tagged}" in steps["build"]["args"]
    assert steps["push"]["args"] == ["push", tagged]
    assert steps["set-image"]["dir"] == "deploy/k8s"
    assert steps["set-image"]["args"] == ["edit", "set", "image", f"{IMAGE_PLACEHOLDER}={tagged}"]
    assert steps["deploy"]["args"] == ["apply", "-k", "deploy/k8s"]
    assert f"deployment/{deployment()['metadata']['name']}" in steps["rollout"]["args"]
    assert list(steps) == ["build", "push", "set-image", "deploy", "rollout"]
    # Cloud Build rejects a substitution that is defined but unused, or used but undefined.
    text = (ROOT / "cloudbuild.yaml").read_text()
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", text))
    assert used == set(subs), f"defined {sorted(subs)}, used {sorted(used)}"


def test_dockerfile_builds_a_non_root_image_with_the_model_baked_in() -> None:
    parsed = dockerfile.parse(ROOT / "Dockerfile")
    names = [s.name for s in parsed.stages]
    assert names == ["base", "builder", "runtime"]
    assert parsed.stages[0].base == "python:3.11-slim-bookworm"
    builder, runtime = parsed.stages[1], parsed.final
    runs = " ".join(builder.runs)
    # the pinned third-party layer (the library's and the server's), then the package alone
    assert "['dependencies'] + p['optional-dependencies']['server']" in runs
    assert "pip install --no-cache-dir -c requirements.lock -r /tmp/deps.txt" in runs
    assert "pip install --no-cache-dir --no-deps . && pip check" in runs
    assert "cutout models fetch" in runs
    assert 'mkdir -p "${CUTOUT_MODEL_DIR}/openvino-cache"' in runs, (
        "keep the cache folder in the image (a baked cache can only be used if it is there)"
    )
    assert runtime.cmd == [
        "gunicorn",
        "--config",
        "python:cutout.gunicorn_config",
        "cutout:create_app()",
    ]
    assert runtime.user == "10001:10001"
    assert runtime.env["PATH"].startswith("/opt/cutout/venv/bin:")
    assert runtime.healthcheck and "/health" in " ".join(runtime.healthcheck)
    for key, value in {
        "CUTOUT_ENV": "production",
        "CUTOUT_HOST": "0.0.0.0",
        "CUTOUT_DATA_DIR": "/data",
        "CUTOUT_MODEL_DIR": "/opt/cutout/models",
        "PYTHONUNBUFFERED": "1",
    }.items():
        assert runtime.env[key] == value, key
    assert not SECRET_KEYS & set(runtime.env), "secrets must not be baked into the image"


def test_dockerignore_keeps_secrets_and_the_venv_out_of_the_context() -> None:
    """Checked on the files .dockerignore's allow-list admits (``context_files``, which also
    asserts that the file starts with ``*``): only the package's sources and metadata, so no
    .env, .venv, .git, tests or data."""
    files = [f.relative_to(ROOT).as_posix() for f in load_script("container_build").context_files()]
    tops = {f.split("/")[0] for f in files}
    assert tops == {"pyproject.toml", "requirements.lock", "README.md", "LICENSE", "src"}, tops


def test_the_image_inputs_are_those_of_a_clean_clone() -> None:
    """What `pip install -e .` writes into a working copy (src/*.egg-info) is neither in the
    build context nor in the digest that tags the test image: a working copy's tag is a clean
    clone's, and no host's metadata lands in the image (stop 30)."""
    build = load_script("container_build")
    stray = ROOT / "src" / "stray-0.egg-info"  # as an editable install of another name would
    stray.mkdir(exist_ok=True)
    try:
        (stray / "PKG-INFO").write_text("Name: stray\n")
        files = [f.relative_to(ROOT).as_posix() for f in build.context_files()]
    finally:
        shutil.rmtree(stray)
    assert "src/cutout/__init__.py" in files and "pyproject.toml" in files
    assert not [f for f in files if ".egg-info" in f or "__pycache__" in f]


def test_compose_runs_web_worker_and_redis_on_one_store_with_mongodb_behind_a_profile() -> None:
    compose = one(ROOT / "docker-compose.yml")
    services = compose["services"]
    app, worker, redis, mongo = (services[n] for n in ("app", "worker", "redis", "mongo"))
    assert app["build"]["context"] == "." and worker["image"] == app["image"]
    assert worker["command"] == ["cutout", "worker"]
    assert re.fullmatch(r"\$\{APP_SECRET_KEY:\?.+\}", app["environment"]["APP_SECRET_KEY"])
    for service in (app, worker):
        env = service["environment"]
        assert env["CUTOUT_QUEUE_URL"] == "redis://redis:6379/0"
        assert env["CUTOUT_WEB_RUNS_JOBS"] == "false"
        assert env["MONGO_URI"] is None  # from the shell if set; else SQLite on the volume
        assert "cutout-data:/data" in service["volumes"] and service["read_only"] is True
        assert service["depends_on"] == ["redis"]
    assert redis["image"] == "${REDIS_IMAGE:-redis:7}"
    # Nothing depends on mongo: `--profile mongo` adds it for MONGO_URI=mongodb://mongo:27017/...
    assert mongo["profiles"] == ["mongo"] and mongo["image"] == "mongo:7"
    assert not any("mongo" in s.get("depends_on", []) for s in services.values())
    for service, volume in ((redis, "redis-data"), (mongo, "mongo-data"), (app, "cutout-data")):
        assert any(v.startswith(volume + ":") for v in service["volumes"] if isinstance(v, str))
        assert volume in compose["volumes"], f"{volume} must be a named volume"
    test = " ".join(mongo["healthcheck"]["test"])
    assert "mongosh" in test and "ping" in test


def test_worker_deployment_runs_the_web_image_with_its_settings_and_envelope() -> None:
    worker = one(K8S / "worker.yaml")
    (c,) = worker["spec"]["template"]["spec"]["containers"]
    web = container()
    assert c["command"] == ["cutout", "worker"] and c["image"] == web["image"]
    assert c["envFrom"] == web["envFrom"]
    assert c["resources"] == web["resources"]
    assert c["securityContext"] == web["securityContext"]
    assert (
        worker["spec"]["template"]["spec"]["securityContext"]
        == (deployment()["spec"]["template"]["spec"]["securityContext"])
    )
    config = one(K8S / "configmap.yaml")["data"]
    redis_deploy, service = load(K8S / "redis.yaml")
    assert (redis_deploy["kind"], service["kind"]) == ("Deployment", "Service")
    assert service["spec"]["selector"] == redis_deploy["spec"]["template"]["metadata"]["labels"]
    (port,) = service["spec"]["ports"]
    assert config["CUTOUT_QUEUE_URL"] == f"redis://{service['metadata']['name']}:{port['port']}/0"


def test_workers_scale_on_the_celery_list_or_on_cpu_without_keda() -> None:
    keda = one(K8S / "keda-scaledobject.yaml")
    worker = one(K8S / "worker.yaml")["metadata"]["name"]
    assert (keda["apiVersion"], keda["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert set(keda) == {"apiVersion", "kind", "metadata", "spec"}
    spec = keda["spec"]
    assert set(spec) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount",
                         "pollingInterval", "cooldownPeriod", "triggers"}  # fmt: skip
    assert spec["scaleTargetRef"] == {"name": worker}
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    from cutout.jobs.broker import QUEUE

    assert metadata["listName"] == QUEUE  # the Redis list the job items wait on
    assert int(metadata["listLength"]) > 0 and all(isinstance(v, str) for v in metadata.values())
    (service,) = (d for d in load(K8S / "redis.yaml") if d["kind"] == "Service")
    host, port = metadata["address"].rsplit(":", 1)
    assert host.startswith(service["metadata"]["name"] + ".") and int(port) == 6379
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    hpa = one(K8S / "worker-hpa.yaml")
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
