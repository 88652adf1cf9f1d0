"""How many cores this process may use: the one count every thread pool is sized by.

Two things limit it, and ``os.cpu_count()`` sees neither:

* the affinity (a container's cpuset, ``taskset``): which cores the threads may run on;
* the CPU quota of the process's cgroup (``docker run --cpus``, a Kubernetes CPU limit): how
  much CPU time they may use. A container given 1 CPU of this 2-core machine still has both
  cores in its affinity, and OpenVINO ran its passes on 2 threads there: 0.853 s an ISNet pass
  against 0.787 s on 1 thread (median of 6 interleaved, ``podman run --cpus 1``). On a large
  node the same limit meant a thread per node core.
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
    """The smallest CPU quota (in CPUs) on the way from this process's cgroup to the root.

    Both cgroup versions. In a container the cgroup file system usually shows the container's
    own group at its root while ``/proc/self/cgroup`` names the host's path, and on a host it
    is the other way round, so every directory from the named group up to the root is read.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        fields = line.split(":", 2)  # hierarchy-ID:controllers:path
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if controllers == "":  # cgroup v2: cpu.max is "max 100000" or "<quota> <period>"
            quotas += _read_up(root, path, ["cpu.max"], _v2_quota)
        elif "cpu" in controllers.split(","):  # v1: cfs_quota_us is -1 when unlimited
            for mount in dict.fromkeys([root / controllers, root / "cpu", root / "cpu,cpuacct"]):
                quotas += _read_up(
                    mount, path, ["cpu.cfs_quota_us", "cpu.cfs_period_us"], _v1_quota
                )
    return min(quotas, default=None)


def _read_up(mount: Path, path: str, names: list[str], parse: _Parse) -> list[float]:
    """*parse* of the files *names* in every directory from mount/path up to mount."""
    found = []
    directory = mount / path.strip("/")
    while True:
        try:
            quota = parse([(directory / name).read_text() for name in names])
        except (OSError, ValueError, IndexError):
            quota = None
        if quota is not None:
            found.append(quota)
        if directory == mount or mount not in directory.parents:
            return found
        directory = directory.parent


def _v2_quota(texts: list[str]) -> float | None:
    quota, period = texts[0].split()[:2]
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(texts: list[str]) -> float | None:
    quota, period = int(texts[0]), int(texts[1])
    return None if quota <= 0 else quota / period
