"""Thread pools are sized by the cores the process may use, not by the machine's count."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

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
