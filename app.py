"""The seed's entry point: ``export FLASK_APP=app.py; flask run`` still works.

Production runs gunicorn (``cutout serve``, or the container's command) instead.
"""

from cutout import create_app

app = create_app()
