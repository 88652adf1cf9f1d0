"""Fixtures of the container tests: the images, built once per session (or found cached)."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import missing
from tests.container.podman import build_images


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Tags of the app image and the Redis stand-in (``make container-test`` builds them)."""
    for tool in ("podman", "mmdebstrap", "runc"):
        if shutil.which(tool) is None:
            missing(f"{tool} not found: `make container-setup` installs it (root + apt)")
    return build_images(redis=True)


@pytest.fixture(scope="session")
def image(images: dict[str, str]) -> str:
    return images["app"]
