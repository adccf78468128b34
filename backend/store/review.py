"""What was decided per task (provenance) and the asynchronous review's jobs."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Float, Integer, String, Table, Text, UniqueConstraint

from backend.store.base import metadata

provenance = Table(
    "provenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("control", String(255), nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("route", String(8), nullable=False),  # auto | llm | human
    Column("reason", Text),
    Column("labels", JSON),  # the final answer
    Column("ensemble_labels", JSON),
    Column("confidence", Float),
    Column("score", Float),
    Column("votes", JSON),
    Column("probabilities", JSON),
    Column("llm", JSON),  # status, raw answer, verdict, tokens, cost, model, prompt version, latency, error
    Column("created_at", Float, nullable=False),
    UniqueConstraint("project_id", "task_id", "control", "model_version", name="uq_provenance"),
)


# Hard samples waiting for the LLM (REVIEW_MODE=async): the durable record comes first, like training jobs, so a
# review asked for while Redis or Label Studio is down is done and pushed later. `items` holds what the review needs
# (task id, text, confidence, probabilities); `results` what it decided, so a failed push is retried alone.
review_jobs = Table(
    "review_jobs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False, index=True),
    Column("control", String(255), nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("multiple", Boolean, nullable=False, default=False),
    Column("names", JSON, nullable=False),
    Column("items", JSON, nullable=False),
    Column("results", JSON),
    # pending | queued | running | push_failed (reviewed, push retried) | done | failed
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("push_attempts", Integer, nullable=False, default=0),
    Column("pushed", String(16)),  # yes | skipped (no LABEL_STUDIO_URL/API_KEY) | null
    Column("error", Text),
    Column("rq_job_id", String(64)),
    Column("requested_at", Float, nullable=False),
    Column("started_at", Float),
    Column("next_push_at", Float),
    Column("finished_at", Float),
)
