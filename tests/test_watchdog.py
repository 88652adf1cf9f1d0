"""The forward-pass watchdog, in processes of its own (it ends the process it watches).

The passes here are stand-ins (a sleep, or the ``hang`` fault, which holds the GIL as a stuck
native call may); the real model under the watchdog is in test_cli.py (``cutout remove``) and
tests/jobs/test_embedded.py (a live server's worker running a job item).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

PRELUDE = """
import sys, threading, time
from pathlib import Path
from cutout.engine.watchdog import WATCHDOG
from cutout.faults import Faults
WATCHDOG.set_limit(float(sys.argv[1]))
"""


def run(body: str, limit: float, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    script = PRELUDE + textwrap.dedent(body)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, str(limit), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done, time.monotonic() - started


def test_a_pass_that_outlives_the_limit_ends_the_process_with_every_stack(
    tmp_path: Path,
) -> None:
    done, took = run(
        """
        def stuck_pass():
            with WATCHDOG.watching():
                time.sleep(30)
        stuck_pass()
        print("never here")
        """,
        1.0,
        tmp_path,
    )
    assert done.returncode == 1 and "never here" not in done.stdout
    assert "Timeout" in done.stderr and "in stuck_pass" in done.stderr, done.stderr
    assert took < 15


def test_a_stuck_slot_is_caught_while_the_other_slot_keeps_finishing_passes(
    tmp_path: Path,
) -> None:
    """The deadline is the oldest pass's: passes finishing on another slot do not push it."""
    done, took = run(
        """
        def stuck_pass():
            with WATCHDOG.watching():
                time.sleep(30)
        threading.Thread(target=stuck_pass, daemon=True).start()
        started = time.monotonic()
        while True:
            with WATCHDOG.watching():
                time.sleep(0.05)
            print(round(time.monotonic() - started, 2), flush=True)
        """,
        2.0,
        tmp_path,
    )
    assert done.returncode == 1 and "in stuck_pass" in done.stderr, done.stderr
    finished = [float(line) for line in done.stdout.split()]
    assert len(finished) > 5 and max(finished) < 2.0 + 1.0  # the other slot ran until the end
    assert took < 15


def test_passes_that_finish_never_end_the_process_however_long_it_runs(
    tmp_path: Path,
) -> None:
    done, _ = run(
        """
        for _ in range(30):  # 1.5 s of passes under a 0.5 s limit
            with WATCHDOG.watching():
                time.sleep(0.05)
        time.sleep(0.8)  # and idle past the limit: no pass in flight
        print("done")
        """,
        0.5,
        tmp_path,
    )
    assert done.returncode == 0 and done.stdout.split() == ["done"], done.stderr


def test_a_pass_stuck_holding_the_gil_is_caught_too(tmp_path: Path) -> None:
    """The ``hang`` fault blocks in C with the GIL held: no Python thread could end it."""
    (tmp_path / "arm-engine.pass").touch()
    done, took = run(
        """
        faults = Faults.from_spec("engine.pass=hang", Path(sys.argv[2]))
        with WATCHDOG.watching():
            faults.reached("engine.pass")
        """,
        1.0,
        tmp_path,
    )
    assert done.returncode == 1 and "in hang" in done.stderr, done.stderr
    assert (tmp_path / "fault-engine.pass").exists() and not (tmp_path / "arm-engine.pass").exists()
    assert took < 15


def test_a_limit_of_zero_never_ends_the_process(tmp_path: Path) -> None:
    done, _ = run(
        """
        with WATCHDOG.watching():
            time.sleep(1.5)
        print("done")
        """,
        0.0,
        tmp_path,
    )
    assert done.returncode == 0 and done.stdout.split() == ["done"], done.stderr


def test_with_no_limit_the_hosts_own_faulthandler_timer_is_left_alone(tmp_path: Path) -> None:
    """A program that uses the library arms faulthandler for itself: passes under a limit of
    zero (the library's default) neither cancel nor move its timer."""
    done, took = run(
        """
        import faulthandler
        faulthandler.dump_traceback_later(1.5, exit=True)
        for _ in range(5):
            with WATCHDOG.watching():
                time.sleep(0.05)
        def the_hosts_wait():
            time.sleep(30)
        the_hosts_wait()
        """,
        0.0,
        tmp_path,
    )
    assert done.returncode == 1 and "in the_hosts_wait" in done.stderr, done.stderr
    assert took < 15
