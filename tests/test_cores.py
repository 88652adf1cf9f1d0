"""Thread pools and forward passes are sized by the cores the process may use (its affinity and
its CPU quota), not by the machine's count."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cutout import cores
from cutout.cores import cpu_limit, cpu_quota

#: In a process limited to one core, encode a cut-out and refine a mask, recording the size
#: of every thread pool they start.
POOLS_ON_ONE_CORE = """
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
from cutout.cores import usable_cores
png.ThreadPoolExecutor = refine.ThreadPoolExecutor = Recording
rgb = np.random.default_rng(0).integers(0, 256, (1600, 1400, 3), np.uint8)
alpha = np.random.default_rng(1).integers(0, 256, (1600, 1400), np.uint8)
png.encode_cutout(rgb, alpha)
refine.refine_alpha(Image.fromarray(rgb), alpha[::4, ::4] / 255.0)
print(usable_cores(), sorted(set(sizes)))
"""


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) not installed")
def test_pools_follow_the_process_affinity_not_the_machine() -> None:
    run = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", POOLS_ON_ONE_CORE],
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
    monkeypatch.setattr(cores, "affinity_cores", lambda: 4)
    root = tree(tmp_path / "fs", {"cpu.max": quota})
    proc = tree(tmp_path, {"cgroup": "0::/\n"}) / "cgroup"
    assert cpu_limit(root, proc) == limit
