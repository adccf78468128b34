"""Webhook events as received: stored before anything else is tried."""

from __future__ import annotations

import enum

from sqlalchemy import Column, Float, Integer, String, Table, Text

from backend.store.base import metadata


class EventState(enum.StrEnum):
    """Where a stored webhook event stands. RECEIVED for longer than a minute means its process died mid-way."""

    RECEIVED = "received"
    APPLIED = "applied"
    FAILED = "failed"  # our side failed (database, bug): retried by the learning loop, then left visible
    REJECTED = "rejected"  # the body is not something Label Studio sends: kept, never applied
    UNAUTHENTICATED = "unauthenticated"  # no valid credentials: kept and counted, never applied


REPLAY_ATTEMPTS = 5

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Float, nullable=False),
    Column("action", String(64), nullable=False, index=True),
    Column("project_id", String(64), index=True),
    Column("task_id", Integer, index=True),
    Column("annotation_id", Integer),
    Column("payload", Text, nullable=False),  # the body as received (even when it was not JSON)
    Column("processed_at", Float),  # the last time it was worked on (applied, rejected, failed, retried)
    Column("status", String(16), index=True),  # EventState; null on rows written before states existed
    Column("attempts", Integer),
    Column("error", String(300)),
)
