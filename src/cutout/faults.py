"""Fault points, for crash-consistency tests only: stop or fail the process at a named point.

The store calls :meth:`Faults.reached` at the points of an upload where a crash matters
(``add.start``, ``write.original.half``, ``add.after_original``, ``write.processed.half``,
``add.after_processed``, ``add.after_row``). In production this does nothing: the only way to
configure a fault is ``CUTOUT_TEST_FAULTS``, and :class:`~cutout.config.Settings` refuses to
start with it set unless ``CUTOUT_ENV=testing`` (a mode the container and ``cutout serve``
never use). Tests that run in-process build :class:`Faults` with their own callables.

``CUTOUT_TEST_FAULTS`` is a comma-separated list of ``point=action``:

* ``pause``: create ``<marker_dir>/fault-<point>`` (so the test knows the process got there)
  and sleep until the process is killed;
* ``fail``: raise ``OSError(EIO)``, as a failing disk would;
* ``bug``: raise ``RuntimeError``, as a bug of ours would (the app answers 500 and logs it);
* ``hang``: armed by the test creating ``<marker_dir>/arm-<point>``, so it strikes when the
  test chooses (a server's warm-up passes come first): the first arrival after that renames
  it to ``fault-<point>`` and blocks for ever *holding the GIL*, as a native call that never
  returns may (``engine.pass``: a forward pass; see :mod:`cutout.engine.watchdog`). Every
  other arrival goes on.

``engine.pass`` is reached as each forward pass of a local model starts.
"""

from __future__ import annotations

import ctypes
import errno
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from cutout.errors import ConfigError

Action = Callable[[], None]
ACTIONS = ("pause", "fail", "bug", "hang")


class Faults:
    """Named points and what happens there; an empty one (:data:`NO_FAULTS`) does nothing."""

    def __init__(self, actions: Mapping[str, Action] | None = None) -> None:
        self._actions = MappingProxyType(dict(actions or {}))

    @property
    def active(self) -> bool:
        return bool(self._actions)

    def reached(self, point: str) -> None:
        action = self._actions.get(point)
        if action is not None:
            action()

    @classmethod
    def from_spec(cls, spec: str, marker_dir: Path) -> Faults:
        """Parse ``CUTOUT_TEST_FAULTS`` (``point=pause,point=fail``)."""
        actions: dict[str, Action] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            point, _, action = item.partition("=")
            if action == "pause":
                actions[point] = _pause(marker_dir / f"fault-{point}")
            elif action == "fail":
                actions[point] = _fail(point)
            elif action == "bug":
                actions[point] = _bug(point)
            elif action == "hang":
                actions[point] = _hang(marker_dir / f"arm-{point}", marker_dir / f"fault-{point}")
            else:
                raise ConfigError(
                    f"CUTOUT_TEST_FAULTS: {item!r} is not point=action ({', '.join(ACTIONS)})."
                )
        return cls(actions)


NO_FAULTS = Faults()


def configured(spec: str | None, env: str, marker_dir: Path) -> Faults:
    """The faults of ``CUTOUT_TEST_FAULTS`` (*spec*), or none outside ``CUTOUT_ENV=testing``
    (where the settings refuse to start with any)."""
    return Faults.from_spec(spec, marker_dir) if spec and env == "testing" else NO_FAULTS


def _pause(marker: Path) -> Action:
    def pause() -> None:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        while True:  # until the test kills the process
            time.sleep(3600)

    return pause


def _fail(point: str) -> Action:
    def fail() -> None:
        raise OSError(errno.EIO, f"Input/output error (fault injected at {point})")

    return fail


def _bug(point: str) -> Action:
    def bug() -> None:
        raise RuntimeError(f"a bug (fault injected at {point})")

    return bug


def _hang(armed: Path, marker: Path) -> Action:
    def hang() -> None:
        try:
            armed.rename(marker)  # atomic: one arrival wins, in whatever process
        except FileNotFoundError:
            return  # not armed, or armed and taken already
        # ctypes.PyDLL keeps the GIL through the call, so no Python thread of this process
        # runs again: the worst a stuck native call can do.
        libc = ctypes.PyDLL(None)
        while True:
            libc.pause()

    return hang
