"""Fetch axe-core (the accessibility checker the browser tests inject) from the npm registry.

``make test`` runs this once: it downloads the pinned package tarball, checks the registry's
sha512 integrity (pinned here too, so a changed package is refused), and writes
``package/axe.min.js`` to the path given (``build/axe-core/axe.min.js``). axe-core runs only in
the tests, never in the app; the app serves nothing from npm.

    python scripts/fetch_axe.py build/axe-core/axe.min.js
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path

import requests

PACKAGE = "axe-core"
VERSION = "4.14.1"
INTEGRITY = (
    "sha512-"
    "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
MEMBER = "package/axe.min.js"
TIMEOUT = (10, 60)


def fetch(dest: Path, registry: str) -> None:
    meta = requests.get(f"{registry.rstrip('/')}/{PACKAGE}/{VERSION}", timeout=TIMEOUT)
    meta.raise_for_status()
    dist = meta.json()["dist"]
    if dist["integrity"] != INTEGRITY:
        sys.exit(f"{PACKAGE}@{VERSION}: the registry's integrity is not the pinned one")
    tarball = requests.get(dist["tarball"], timeout=TIMEOUT)
    tarball.raise_for_status()
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.content).digest()).decode()
    if digest != INTEGRITY:
        sys.exit(f"{PACKAGE}@{VERSION}: the tarball failed its sha512 integrity check")
    with tarfile.open(fileobj=io.BytesIO(tarball.content), mode="r:gz") as tar:
        member = tar.extractfile(MEMBER)
        if member is None:
            sys.exit(f"{PACKAGE}@{VERSION} has no {MEMBER}")
        script = member.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(".part")
    part.write_bytes(script)
    part.replace(dest)  # never a half-written file where the tests look
    print(f"{PACKAGE}@{VERSION} -> {dest} ({len(script):,} bytes)")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "build/axe-core/axe.min.js")
    fetch(target, os.environ.get("CUTOUT_NPM_REGISTRY", "https://registry.npmjs.org"))
