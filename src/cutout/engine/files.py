"""Where the installed models are: found and size-checked on disk, with no network code.

The engine calls this at every start; :mod:`cutout.engine.fetch` (``requests``, 50 ms to
import) is for ``cutout models fetch`` only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cutout.engine.registry import ModelSpec
from cutout.errors import ModelNotFetched


def model_path(spec: ModelSpec, model_dir: Path) -> Path:
    """Return the installed file for *spec*, or raise :class:`ModelNotFetched` naming the fix."""
    path = model_dir / spec.filename
    if not path.is_file() or (
        spec.size_bytes is not None and path.stat().st_size != spec.size_bytes
    ):
        raise ModelNotFetched(
            f"Model {spec.name!r} is not installed in {model_dir}. "
            f"Run `cutout models fetch {spec.name}` (or `make install`) first."
        )
    return path


def is_installed(spec: ModelSpec, model_dir: Path) -> bool:
    try:
        model_path(spec, model_dir)
    except ModelNotFetched:
        return False
    return True


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of the file at *path* with hashlib's *algorithm*, read 1 MiB at a time."""
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
