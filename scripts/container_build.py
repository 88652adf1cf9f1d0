"""Build the images the container tests run, with podman, skipping what is already built.

No container registry is reachable here, so the official ``python:3.11-slim-bookworm`` base
cannot be pulled. A stand-in base is made from Debian's own packages (``mmdebstrap``) and
passed through the Dockerfile's ``PYTHON_IMAGE`` argument; the Dockerfile itself is built
unchanged. Settings that belong to this machine's network (the CA bundle that ``requests``
must use inside a build) live in the stand-in base, never in the Dockerfile.

Every image is tagged by a digest of its inputs (the stand-in recipe; the Dockerfile, its
build context and the base), so a rerun with no change finds the tag and builds nothing.

    python scripts/container_build.py            # prints the app image's tag
    python scripts/container_build.py --redis    # also the Redis stand-in; prints both
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SUITE = "bookworm"
#: podman's flags this machine needs (issue 15): builds in a chroot, the host's CA bundle.
#: The Docker image format, not OCI: OCI has no HEALTHCHECK, and podman would drop it.
BUILD_FLAGS = ["--isolation", "chroot", "-v", "/etc/ssl/certs:/etc/ssl/certs:ro"]
BUILD_FLAGS += ["--format", "docker"]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

#: The stand-in for ``python:3.11-slim-bookworm``: Debian's Python 3.11 with venv, ``python``
#: on PATH (the Dockerfile calls it), and requests pointed at the mounted CA bundle.
PYTHON_BASE: dict[str, Any] = {
    "name": "localhost/cutout-standin-python",
    "packages": ["python3", "python3-venv", "python-is-python3", "ca-certificates"],
    "changes": [
        f"ENV REQUESTS_CA_BUNDLE={CA_BUNDLE}",
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["python3"]',
    ],
}

#: The stand-in for the official ``redis:7`` image's contract: ``redis-server`` as uid 999 in
#: /data, arguments after the image name are options passed to redis-server.
REDIS_BASE: dict[str, Any] = {
    "name": "localhost/cutout-standin-redis",
    "packages": ["redis-server"],
    "changes": [
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "WORKDIR /data",
        "USER 999:999",
        "EXPOSE 6379",
        'ENTRYPOINT ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", '
        '"--dir", "/data"]',
    ],
    # redis' uid/gid made 999 (like the official image), owner of /data
    "customize": (
        'chroot "$1" sh -c "usermod -u 999 redis && groupmod -g 999 redis'
        ' && install -d -o 999 -g 999 /data && rm -rf /var/lib/apt/lists/*"'
    ),
}


def log(message: str) -> None:
    print(f"[container-build] {message}", file=sys.stderr, flush=True)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def exists(tag: str) -> bool:
    return subprocess.run(["podman", "image", "exists", tag]).returncode == 0


def stand_in(recipe: dict[str, Any]) -> str:
    """Build (once per recipe) a base image from Debian packages; returns its tag."""
    tag = f"{recipe['name']}:{digest(SUITE.encode(), json.dumps(recipe, sort_keys=True).encode())}"
    if exists(tag):
        log(f"{tag}: cached")
        return tag
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / "rootfs.tar"
        packages = ",".join(recipe["packages"])
        command = ["mmdebstrap", "--variant=minbase", f"--include={packages}", "--quiet"]
        command += ["--dpkgopt=path-exclude=/usr/share/doc/*"]
        command += ["--dpkgopt=path-exclude=/usr/share/man/*"]
        command += ["--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*.bin"]
        if "customize" in recipe:
            command.append(f"--customize-hook={recipe['customize']}")
        subprocess.run([*command, SUITE, str(tarball)], check=True, stdout=sys.stderr)
        changes = [arg for c in recipe["changes"] for arg in ("--change", c)]
        subprocess.run(
            ["podman", "import", *changes, str(tarball), tag], check=True, stdout=sys.stderr
        )
    log(f"{tag}: built in {time.monotonic() - started:.0f} s")
    return tag


def context_files() -> list[Path]:
    """The build context as .dockerignore's allow-list admits it (``*`` then ``!path``)."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", ".dockerignore is expected to start with `*` (an allow-list)"
    allowed = [r[1:].rstrip("/") for r in rules[1:] if r.startswith("!")]
    denied = [r.removeprefix("**/").rstrip("/") for r in rules[1:] if not r.startswith("!")]
    files: list[Path] = []
    for entry in allowed:
        path = ROOT / entry
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in candidates:
            parts = file.relative_to(ROOT).parts
            if file.is_file() and not any(fnmatch.fnmatch(p, d) for p in parts for d in denied):
                files.append(file)
    return files


def app_image(base: str) -> str:
    """The repository's Dockerfile built on ``base``; tagged by a digest of all its inputs."""
    inputs = [base.encode(), " ".join(BUILD_FLAGS).encode(), (ROOT / "Dockerfile").read_bytes()]
    inputs.append((ROOT / ".dockerignore").read_bytes())
    for file in context_files():
        inputs += [file.relative_to(ROOT).as_posix().encode(), file.read_bytes()]
    tag = f"localhost/image-background-processor:test-{digest(*inputs)}"
    if exists(tag):
        log(f"{tag}: cached")
        return tag
    started = time.monotonic()
    command = ["podman", "build", *BUILD_FLAGS, "--build-arg", f"PYTHON_IMAGE={base}"]
    # the build's progress goes to stderr: stdout carries only the tags (JSON, last line)
    subprocess.run([*command, "--tag", tag, str(ROOT)], check=True, stdout=sys.stderr)
    log(f"{tag}: built in {time.monotonic() - started:.0f} s")
    forget_old_builds(tag)
    return tag


def forget_old_builds(tag: str, keep: int = 3) -> None:
    """Untag all but the newest *keep* test builds (1 GB each); one in use stays (no force)."""
    repository = tag.rsplit(":", 1)[0]
    listed = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", "--sort", "created"],
        capture_output=True,
        text=True,
    ).stdout.split()
    builds = [t for t in listed if t.startswith(repository + ":test-") and t != tag]
    for old in builds[keep - 1 :]:
        subprocess.run(["podman", "rmi", old], capture_output=True)
    prune_when_short_of_disk()


#: Below this much free space where podman keeps its images, the untagged images go too.
PRUNE_BELOW = 20 * 2**30


def prune_when_short_of_disk() -> None:
    """Remove the untagged images (each build leaves its 2 GB builder stage) once the disk
    runs short. Not on every build: the newest builder stage is the cache of the dependency
    layer, and without it the next build installs every dependency again (minutes)."""
    root = subprocess.run(
        ["podman", "info", "--format", "{{.Store.GraphRoot}}"], capture_output=True, text=True
    ).stdout.strip()
    if root and shutil.disk_usage(root).free < PRUNE_BELOW:
        log(f"less than {PRUNE_BELOW >> 30} GiB free under {root}: pruning untagged images")
        subprocess.run(["podman", "image", "prune", "--force"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", action="store_true", help="also the Redis stand-in image")
    args = parser.parse_args()
    tags = {"app": app_image(stand_in(PYTHON_BASE))}
    if args.redis:
        tags["redis"] = stand_in(REDIS_BASE)
    print(json.dumps(tags))


if __name__ == "__main__":
    main()
