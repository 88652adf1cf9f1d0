"""cutout: self-hosted background removal (image-background-processor).

The library, shaped like rembg's::

    from cutout import remove, new_session

    session = new_session()             # loads the models once; share it between threads
    png = remove(photo_bytes, session=session)

Importing ``cutout`` is cheap: numpy, the runtimes and Flask load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from cutout.library import QUALITY_MODES, Result, Session, new_session, remove, remove_result

__version__ = "0.1.0"

__all__ = [
    "QUALITY_MODES",
    "Result",
    "Session",
    "__version__",
    "create_app",
    "new_session",
    "remove",
    "remove_result",
]
_LIBRARY = frozenset(
    {"QUALITY_MODES", "Result", "Session", "new_session", "remove", "remove_result"}
)


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The Flask application factory (see :func:`cutout.app.create_app`).

    Imported lazily so that ``cutout --version`` and the engine need not load Flask (and the
    library works without the ``server`` extra).
    """
    from cutout.app import create_app as factory

    return factory(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """The library's names, imported on first use (PEP 562)."""
    if name in _LIBRARY:
        from cutout import library

        return getattr(library, name)
    raise AttributeError(f"module 'cutout' has no attribute {name!r}")
