"""The WSGI entry point gunicorn imports in each worker, after the fork."""

from service.app import create_app

app = create_app()
