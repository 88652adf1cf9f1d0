"""What the process may use of the machine: thread pools and forward passes are sized by its
affinity and CPU quota, not by the machine's count; the memory budget fits its memory limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cutout import machine
from cutout.machine import cpu_limit, cpu_quota, memory_limit
from cutout.memory import HEADROOM, MB, PROCESS_BYTES, SMALLEST_BUDGET, fitted_budget

GIB = 1024 * MB

#: In a process that limits itself to one core (as `taskset -c` would), encode a cut-out and
#: refine a mask, recording the size of every thread pool they start.
POOLS_ON_ONE_CORE = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import concurrent.futures as cf
import numpy as np
from PIL import Image
sizes = []
class Recording(cf.ThreadPoolExecutor):
    def __init__(self, max_workers=None, **kw):
        sizes.append(max_workers)
        super().__init__(max_workers, **kw)
cf.ThreadPoolExecutor = Recording
import cutout.imaging.png as png, cutout.imaging.refine as refine
from cutout.machine import usable_cores
png.ThreadPoolExecutor = refine.ThreadPoolExecutor = Recording
rgb = np.random.default_rng(0).integers(0, 256, (1600, 1400, 3), np.uint8)
alpha = np.random.default_rng(1).integers(0, 256, (1600, 1400), np.uint8)
png.encode_cutout(rgb, alpha)
refine.refine_alpha(Image.fromarray(rgb), alpha[::4, ::4] / 255.0)
print(usable_cores(), sorted(set(sizes)))
"""


def test_pools_follow_the_process_affinity_not_the_machine() -> None:
    run = subprocess.run(
        [sys.executable, "-c", POOLS_ON_ONE_CORE],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.split(None, 1) == ["1", "[1]\n"], run.stdout + run.stderr


# -- the CPU quota, read from cgroup trees laid out as the kernel shows them ------------------


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_v2_the_smallest_quota_from_the_group_up_to_the_root(tmp_path: Path) -> None:
    # a Kubernetes pod: 1.5 CPUs on the pod's group, none on the container's
    root = tree(tmp_path / "fs", {"pod/cpu.max": "150000 100000\n", "pod/c1/cpu.max": "max 100000"})
    proc = tree(tmp_path, {"cgroup": "0::/pod/c1\n"}) / "cgroup"
    assert cpu_quota(root, proc) == 1.5
    proc.write_text("0::/elsewhere\n")
    assert cpu_quota(root, proc) is None


def test_v1_a_container_sees_its_own_group_at_the_mount_root(tmp_path: Path) -> None:
    # what `podman run --cpus 1` showed on this machine: the host's path in /proc/self/cgroup,
    # the container's own quota at the root of the cpu mount
    files = {
        "cpu,cpuacct/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    }
    root = tree(tmp_path / "fs", files)
    proc = tree(tmp_path, {"cgroup": "4:memory:/libpod/x\n2:cpu,cpuacct:/libpod/x\n0::/\n"})
    assert cpu_quota(root, proc / "cgroup") == 1.0
    (root / "cpu,cpuacct/cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(root, proc / "cgroup") is None


def test_unreadable_or_odd_files_mean_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path, tmp_path / "missing") is None
    root = tree(tmp_path / "fs", {"cpu.max": "garbage"})
    proc = tree(tmp_path, {"cgroup": "0::/\nnot a cgroup line\n"})
    assert cpu_quota(root, proc / "cgroup") is None


@pytest.mark.parametrize(
    ("quota", "limit"), [("50000 100000", 1), ("100000 100000", 1), ("150000 100000", 2),
                         ("400000 100000", None), ("800000 100000", None), ("max 100000", None)]
)  # fmt: skip
def test_the_limit_is_the_quota_rounded_up_when_below_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: str, limit: int | None
) -> None:
    monkeypatch.setattr(machine, "affinity_cores", lambda: 4)
    root = tree(tmp_path / "fs", {"cpu.max": quota})
    proc = tree(tmp_path, {"cgroup": "0::/\n"}) / "cgroup"
    assert cpu_limit(root, proc) == limit


# -- the memory limit, and the budget fitted to it ----------------------------------------------


def test_memory_limits_of_both_versions_smallest_wins_and_unlimited_is_none(tmp_path: Path) -> None:
    v2 = tree(tmp_path / "v2", {"pod/memory.max": "1610612736\n", "pod/c/memory.max": "max\n"})
    proc = tree(tmp_path, {"cgroup": "0::/pod/c\n"}) / "cgroup"
    assert memory_limit(v2, proc) == 1536 * MB
    # v1, as `podman run --memory 1g` showed it on this machine, and the host's "no limit"
    v1 = tree(tmp_path / "v1", {"memory/memory.limit_in_bytes": "1073741824\n"})
    proc.write_text("4:memory:/libpod_parent/libpod-x\n3:cpuset:/libpod_parent/libpod-x\n")
    assert memory_limit(v1, proc) == 1024 * MB
    (v1 / "memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert memory_limit(v1, proc) is None


def test_a_default_budget_is_fitted_to_the_limit_and_a_chosen_one_kept_with_a_warning() -> None:
    default = 1024 * MB
    assert fitted_budget(default, chosen=False, processes=1, streams=1, limit=None) == (
        default,
        None,
    )
    # 1 GiB, one process: (1024 - 450) / 1.2 MB
    one_gib, warning = fitted_budget(default, chosen=False, processes=1, streams=1, limit=GIB)
    assert one_gib == int((GIB - PROCESS_BYTES) / HEADROOM)
    assert warning and "lowered to 478 MB" in warning and "31 MP get 413" in warning
    # the Kubernetes pod: 1536 MiB and CUTOUT_MEMORY_BUDGET_MB=800 fit
    assert fitted_budget(800 * MB, chosen=True, processes=1, streams=1, limit=1536 * MB) == (
        800 * MB,
        None,
    )
    # a chosen budget that does not fit is kept, and said
    budget, warning = fitted_budget(default, chosen=True, processes=1, streams=1, limit=GIB)
    assert budget == default and warning and "may not fit" in warning
    # two gunicorn workers, or two streams each, leave less
    two = fitted_budget(default, chosen=False, processes=2, streams=1, limit=2 * GIB)[0]
    streams = fitted_budget(default, chosen=False, processes=1, streams=2, limit=GIB)[0]
    assert two == one_gib and streams == int((GIB - 550 * MB) / HEADROOM)
    # a limit too small for the models: the smallest budget, and a warning that says why
    budget, warning = fitted_budget(default, chosen=False, processes=1, streams=1, limit=256 * MB)
    assert budget == SMALLEST_BUDGET and warning and "too small for the models" in warning
