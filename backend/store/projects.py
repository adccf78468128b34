"""What we know of each project: its identity across Label Studio instances, its config, its texts."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Integer, String, Table, Text, UniqueConstraint

from backend.store.base import metadata

# Which Label Studio project a key stands for: the first project seen with an id keeps the bare id as its key,
# a project of the same id created at another time (another Label Studio) gets "<id>-<created_at>".
project_instances = Table(
    "project_instances",
    metadata,
    Column("project_key", String(64), primary_key=True),
    Column("ls_id", String(64), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False),
)

projects = Table(
    "projects",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("config_hash", String(32)),
    Column("label_config", Text),
    Column("controls", JSON),  # [{control, labels, multiple, bundle_key, model_version|null}]
    Column("model_version", String(128)),
    Column("unsupported", JSON),
    Column("updated_at", Float),
)


# The texts of a project's tasks as /predict saw them, before anyone annotates them: the domain gate
# (backend/specialists/domain.py) learns what the project's texts look like from all of them, not only the hard ones.
project_texts = Table(
    "project_texts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("task_id", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("seen_at", Float, nullable=False),
    UniqueConstraint("project_id", "task_id", name="uq_project_text"),
)

MAX_TEXTS_PER_PROJECT = 20_000  # a sample of the project's domain, not an archive of its tasks
