"""Predictions pushed into Label Studio (`backend.push`): a project's tasks in chunks, one durable job each."""

from __future__ import annotations

from sqlalchemy import JSON, Column, Float, Integer, String, Table, Text, UniqueConstraint

from backend.store.base import metadata

# One row per chunk of tasks to pre-label with one model version: the tasks' ids and data (so a worker needs no
# extra call to Label Studio), and, once done, what the chunk reported. A chunk is keyed by its first task, so a
# re-run of the same project and version never queues the same tasks twice.
prelabel_jobs = Table(
    "prelabel_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False, index=True),  # the store's key of the project
    Column("ls_project", Integer, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("first_task", Integer, nullable=False),
    Column("tasks", JSON, nullable=False),  # [{"id": …, "data": {…}, "previous"?: {control: [choices]}}]
    Column("task_ids", JSON),  # the tasks' ids alone, read by every /predict while the chunk is open
    Column("size", Integer),
    Column("kind", String(16)),  # backend.push.PushKind; empty: prelabel
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("rq_job_id", String(64)),
    Column("error", Text),
    Column("report", JSON),
    Column("requested_at", Float, nullable=False),
    Column("started_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
    UniqueConstraint("ls_project", "model_version", "first_task", name="uq_prelabel_chunk"),
)
