"""gunicorn entry point: `gunicorn backend.commands.wsgi:app`."""

from backend.commands.serve import build_app
from backend.logs import configure_logging
from backend.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level)
app = build_app(settings)
