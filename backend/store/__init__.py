"""Durable records: webhook events as received, projects, corrections and jobs, provenance, trust and spending.

One MetaData (`base.metadata`) holds every table; a module per table group defines its tables beside the code that
owns them. SQLAlchemy Core over SQLite by default (WAL, so readers never block the webhook's write) or PostgreSQL
via DATABASE_URL. An event is committed before /webhook answers: Label Studio does not resend a webhook, so
whatever is not written down is lost.
"""

from backend.store.base import add_missing_columns, ensure_tables, make_engine, metadata
from backend.store.db import Store
from backend.store.events import REPLAY_ATTEMPTS, EventState, webhook_events
from backend.store.learning import corrections, training_jobs
from backend.store.prelabel import prelabel_jobs
from backend.store.projects import MAX_TEXTS_PER_PROJECT, project_instances, project_texts, projects
from backend.store.review import provenance, review_jobs
from backend.store.spend import spend_counters
from backend.store.trust import audit_checks, trust_checks

__all__ = ["MAX_TEXTS_PER_PROJECT", "REPLAY_ATTEMPTS", "EventState", "Store", "add_missing_columns", "audit_checks",
           "corrections", "ensure_tables", "make_engine", "metadata", "prelabel_jobs", "project_instances",
           "project_texts", "projects", "provenance", "review_jobs", "spend_counters", "training_jobs",
           "trust_checks", "webhook_events"]
