"""What this process may use of the machine: cores and memory, as its cgroup limits them.

Every thread pool is sized by :func:`usable_cores`. Two things limit it, and
``os.cpu_count()`` sees neither:

* the affinity (a container's cpuset, ``taskset``): which cores the threads may run on;
* the CPU quota of the process's cgroup (``docker run --cpus``, a Kubernetes CPU limit): how
  much CPU time they may use. A container given 1 CPU of this 2-core machine still has both
  cores in its affinity, and OpenVINO ran its passes on 2 threads there: 0.853 s an ISNet pass
  against 0.787 s on 1 thread (median of 6 interleaved, ``podman run --cpus 1``). On a large
  node the same limit meant a thread per node core.

:func:`memory_limit` is the cgroup's memory limit (``--memory``, a Kubernetes memory limit),
which the default memory budget is fitted to (:func:`cutout.memory.fitted_budget`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
_Parse = Callable[[list[str]], float | None]


def usable_cores() -> int:
    """The cores this process may keep busy: its affinity, lowered to its CPU quota."""
    return cpu_limit() or affinity_cores()


def affinity_cores() -> int:
    """The cores this process may run on (its affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The CPU quota, rounded up to whole cores, when it is below the affinity; else None.

    Rounded up: a limit of 1.5 CPUs keeps 2 threads busy part of the time, where 1 would
    leave half a core unused.
    """
    quota = cpu_quota(root, proc_cgroup)
    if quota is None:
        return None
    cores = max(1, math.ceil(quota - 1e-9))
    return cores if cores < affinity_cores() else None


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The smallest CPU quota (in CPUs) on the way from this process's cgroup to the root."""
    quotas = _limits(root, proc_cgroup, "cpu", ["cpu.max"], _v2_quota,
                     ["cpu.cfs_quota_us", "cpu.cfs_period_us"], _v1_quota)  # fmt: skip
    return min(quotas, default=None)


def memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """The smallest memory limit (bytes) on the way from this process's cgroup to the root."""
    limits = _limits(root, proc_cgroup, "memory", ["memory.max"], _v2_memory,
                     ["memory.limit_in_bytes"], _v1_memory)  # fmt: skip
    return int(min(limits)) if limits else None


def _limits(
    root: Path,
    proc_cgroup: Path,
    controller: str,
    v2_files: list[str],
    v2_parse: _Parse,
    v1_files: list[str],
    v1_parse: _Parse,
) -> list[float]:
    """Every limit that *controller*'s files set from this process's group up to the root.

    Both cgroup versions. In a container the cgroup file system usually shows the container's
    own group at its root while ``/proc/self/cgroup`` names the host's path, and on a host it
    is the other way round, so every directory from the named group up to the root is read.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    found: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy-ID:controllers:path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: one hierarchy, every controller's files in it
            found += _read_up(root, path, v2_files, v2_parse)
        elif controller in controllers.split(","):  # v1: a hierarchy per controller (group)
            for mount in dict.fromkeys([root / controllers, root / controller]):
                found += _read_up(mount, path, v1_files, v1_parse)
    return found


def _read_up(mount: Path, path: str, names: list[str], parse: _Parse) -> list[float]:
    """*parse* of the files *names* in every directory from mount/path up to mount."""
    found = []
    directory = mount / path.strip("/")
    while True:
        try:
            limit = parse([(directory / name).read_text() for name in names])
        except (OSError, ValueError, IndexError):
            limit = None
        if limit is not None:
            found.append(limit)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(texts: list[str]) -> float | None:
    quota, period = texts[0].split()[:2]  # "max 100000" or "<quota> <period>"
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(texts: list[str]) -> float | None:
    quota, period = int(texts[0]), int(texts[1])  # the quota is -1 when unlimited
    return None if quota <= 0 else quota / period


#: cgroup v1 writes "no limit" as the largest page-aligned 64-bit number; nothing real is
#: within a factor of 1000 of it.
_NO_MEMORY_LIMIT = 1 << 60


def _v2_memory(texts: list[str]) -> float | None:
    text = texts[0].strip()  # "max" or bytes
    return None if text == "max" else float(text)


def _v1_memory(texts: list[str]) -> float | None:
    limit = int(texts[0])
    return None if limit >= _NO_MEMORY_LIMIT else float(limit)
