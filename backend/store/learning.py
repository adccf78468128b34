"""The learning loop's tables: corrections (human and LLM-settled) and training jobs."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String, Table, Text, UniqueConstraint

from backend.store.base import metadata

corrections = Table(
    "corrections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("task_id", Integer, index=True),
    Column("annotation_id", Integer),  # null for LLM-settled labels
    Column("control", String(255), nullable=False),
    Column("choices", JSON, nullable=False),
    Column("text", Text, nullable=False),
    Column("annotator", String(255)),
    Column("source", String(16), nullable=False),  # human | llm
    Column("holdout", Boolean, nullable=False, default=False),  # frozen: never trained on, used by the gate
    Column("retracted", Boolean, nullable=False, default=False),
    Column("changed_seq", Integer, nullable=False),  # webhook event id of the last change: orders "new" data
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("project_id", "annotation_id", "control", name="uq_correction_annotation"),
)

training_jobs = Table(
    "training_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("status", String(16), nullable=False, index=True),  # pending|queued|running|promoted|rejected|failed|skipped
    Column("reason", String(255)),  # why it was asked for
    Column("outcome", Text),  # why it ended as it did
    Column("attempts", Integer, nullable=False, default=0),
    Column("rq_job_id", String(64)),
    Column("data_seq", Integer),  # highest correction changed_seq it trained on
    Column("versions", JSON),  # {control: version} it produced
    Column("requested_at", Float, nullable=False),
    Column("started_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
)
# At most one waiting job per project, enforced by the database: two webhooks at once cannot both insert one.
_WAITING_JOB = training_jobs.c.status.in_(("pending", "queued"))
Index("one_waiting_job_per_project", training_jobs.c.project_id, unique=True, sqlite_where=_WAITING_JOB,
      postgresql_where=_WAITING_JOB)
