"""gunicorn entry point: `gunicorn backend.wsgi:app`."""

from backend.app import create_app
from backend.logs import configure_logging
from backend.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level)
app = create_app(settings)
