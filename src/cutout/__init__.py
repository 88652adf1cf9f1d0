"""cutout: self-hosted background removal (image-background-processor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

__version__ = "0.1.0"


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The Flask application factory (see :func:`cutout.app.create_app`).

    Imported lazily so that ``cutout --version`` and the engine need not load Flask.
    """
    from cutout.app import create_app as factory

    return factory(*args, **kwargs)
