"""``python -m cutout`` is the ``cutout`` command."""

from cutout.cli import run

run()
