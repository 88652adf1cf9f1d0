"""The seed's entry point: ``export FLASK_APP=app.py; flask run`` still works.

Production runs gunicorn (``cutout serve``, or the container's command) instead. A setting
that cannot work stops ``flask run`` with one line saying what to fix, not a traceback.
"""

import sys

from cutout import create_app
from cutout.errors import CutoutError

try:
    app = create_app()
except CutoutError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(3) from None
