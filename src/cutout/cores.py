"""How many cores this process may use: the one count every thread pool is sized by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its affinity (a container's cpuset, ``taskset``).

    ``os.cpu_count()`` counts the whole machine: in a container given 2 of a node's 64 cores,
    a pool sized by it starts up to 64 threads that take turns on 2 cores.
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
