"""Durable records: every webhook event as received, and what we know of each project.

SQLAlchemy Core over SQLite by default (WAL, so readers never block the webhook's write) or
PostgreSQL via DATABASE_URL. An event is committed before /webhook answers: Label Studio does not
resend a webhook, so whatever we do not write down is lost.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from backend.payload import storable
from backend.payload import task_id as valid_id

log = logging.getLogger(__name__)

metadata = MetaData()


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


# The texts of a project's tasks as /predict saw them, before anyone annotates them: the domain gate
# (backend/domain_gate.py) learns what the project's texts look like from all of them, not only the hard ones.
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


# The trust ledger's evidence: one row per LLM answer that a person also labelled (backend/trust.py). A task's later
# annotation replaces its row, so the ledger counts each task once, with the person's latest word.
trust_checks = Table(
    "trust_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("control", String(255), nullable=False),
    Column("llm_model", String(255), nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("llm_answer", String(255), nullable=False),
    Column("human_label", String(255), nullable=False),
    Column("ensemble_label", String(255)),
    Column("confidence", Float),
    Column("audited", Boolean, nullable=False, default=False),  # picked by the LLM audit, not annotated by chance
    Column("created_at", Float, nullable=False),
    UniqueConstraint("project_id", "control", "llm_model", "task_id", name="uq_trust_check"),
)

# The random audit's evidence for TARGET_ACCURACY (backend/decision/quality.py): the ensemble's answer and confidence
# on tasks a person labelled whatever the confidence.
audit_checks = Table(
    "audit_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", String(64), nullable=False),
    Column("control", String(255), nullable=False),
    Column("task_id", Integer, nullable=False),
    Column("ensemble_label", String(255), nullable=False),
    Column("human_label", String(255), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("project_id", "control", "task_id", name="uq_audit_check"),
)

# What a project has spent, per resource and period ("" for all time, "YYYY-MM-DD" for a day), as exact counters:
# every reservation is one conditional UPDATE, so gunicorn workers, rq workers and restarts share them
# (backend/spend.py).
spend = Table(
    "spend",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("resource", String(32), primary_key=True),
    Column("period", String(16), primary_key=True),
    Column("used", Float, nullable=False, default=0.0),
)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    ensure_tables(engine, metadata.sorted_tables)
    add_missing_columns(engine, metadata)
    _fresh_pool_after_fork(engine)
    return engine


def ensure_tables(engine: Engine, tables: list[Table]) -> None:
    """Create the missing tables. Several processes may do it at once on a fresh database (gunicorn workers, rq
    workers): PostgreSQL then refuses the second CREATE TABLE with a duplicate type, which is not an error here
    once the table is there."""
    for attempt in range(3):
        try:
            tables[0].metadata.create_all(engine, tables=tables)
            return
        except DBAPIError:
            have = set(inspect(engine).get_table_names())
            if all(t.name in have for t in tables):
                return
            if attempt == 2:
                raise
            time.sleep(0.1 * (attempt + 1))


def _fresh_pool_after_fork(engine: Engine) -> None:
    """gunicorn forks its workers after the app (and this engine) is built: a child that reused the parent's pooled
    connections would share their sockets with its siblings, and PostgreSQL answers get crossed. The child drops
    them (without closing the parent's) and opens its own."""
    ref = weakref.ref(engine)

    def after_fork() -> None:
        forked = ref()
        if forked is not None:
            forked.dispose(close=False)

    os.register_at_fork(after_in_child=after_fork)


def add_missing_columns(engine: Engine, meta: MetaData) -> None:
    """Columns added to a table after a database was made: added as nullable, so older databases keep working."""
    found = inspect(engine)
    for table in meta.sorted_tables:
        if not found.has_table(table.name):
            continue
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            kind = column.type.compile(engine.dialect)
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            log.info("added column %s.%s to an older database", table.name, column.name)
        have_indexes = {i["name"] for i in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in have_indexes:
                try:
                    index.create(engine)
                except DBAPIError as exc:  # rows from before it break it (two waiting jobs): said, not fatal
                    log.warning("index %s not added to an older database: %s", index.name, type(exc).__name__)


class Store:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        self._project_cache: dict[str, tuple[str | None, str | None]] = {}
        self._instances: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()

    # -- project identity ----------------------------------------------------------------------
    def project_for(self, ls_id: str, created_at: int | None) -> str:
        """The key a project's data is kept under. Without a creation time (an API query, the CLI) it is the id."""
        if created_at is None or ls_id == "unknown":
            return ls_id
        cached = self._instances.get((ls_id, created_at))
        if cached:
            return cached
        c = project_instances.c
        for _ in range(3):
            with self.engine.connect() as conn:
                rows = {r.created_at: r.project_key for r in conn.execute(
                    select(c.project_key, c.created_at).where(c.ls_id == ls_id))}
            key = rows.get(created_at) or (ls_id if not rows else f"{ls_id}-{created_at}")
            if created_at not in rows:
                try:
                    with self.engine.begin() as conn:
                        conn.execute(insert(project_instances).values(project_key=key, ls_id=ls_id,
                                                                      created_at=created_at))
                except IntegrityError:  # another process registered it (or took the bare id) first: read again
                    continue
            self._instances[(ls_id, created_at)] = key
            return key
        raise RuntimeError(f"could not register project {ls_id} created at {created_at}")

    # -- webhook events ------------------------------------------------------------------------
    def record_event(self, action: str, payload_text: str, body: dict[str, Any] | None,
                     status: EventState = EventState.RECEIVED) -> int:
        """Written first, whatever the body holds: the indexed fields are taken only when they are plausible."""
        project_id = task_id = annotation_id = None
        if isinstance(body, dict):
            project = body.get("project")
            project = project.get("id") if isinstance(project, dict) else project
            project_id = str(project)[:64] if isinstance(project, int | str) and project != "" else None
            task = body.get("task")
            task_id = valid_id(task.get("id") if isinstance(task, dict) else task)
            annotation = body.get("annotation")
            annotation_id = valid_id(annotation.get("id") if isinstance(annotation, dict) else None)
        row = {
            "received_at": time.time(),
            "action": storable(action)[:64],
            "project_id": storable(project_id) if project_id else None,
            "task_id": task_id,
            "annotation_id": annotation_id,
            "payload": storable(payload_text),
            "status": status.value,
            "attempts": 0,
        }
        if status is EventState.UNAUTHENTICATED:
            row["processed_at"] = row["received_at"]
        with self.engine.begin() as conn:
            return int(conn.execute(insert(webhook_events).values(**row)).inserted_primary_key[0])

    def finish_event(self, event_id: int, status: EventState, error: str = "") -> None:
        """APPLIED, REJECTED, or FAILED (counted: the learning loop retries it REPLAY_ATTEMPTS times)."""
        values = {"status": status.value, "error": storable(error)[:300] or None, "processed_at": time.time()}
        with self.engine.begin() as conn:
            conn.execute(update(webhook_events).where(webhook_events.c.id == event_id).values(**values))

    def claim_event_retry(self, stale_after: float = 60.0) -> dict[str, Any] | None:
        """One event to process again: FAILED with attempts left, or RECEIVED long ago (its process died).
        Claimed by an atomic attempts+1, so two processes never replay the same event at once."""
        now = time.time()
        c = webhook_events.c
        last = func.coalesce(c.processed_at, c.received_at)  # the last time someone worked on it
        due = ((c.status == EventState.FAILED.value) & (func.coalesce(c.attempts, 0) < REPLAY_ATTEMPTS)
               & (last < now - 5.0 * func.coalesce(c.attempts, 0))) | (
            (c.status == EventState.RECEIVED.value) & (last < now - stale_after))
        with self.engine.begin() as conn:
            row = conn.execute(select(c.id, c.attempts, c.status).where(due).order_by(c.id).limit(1)).first()
            if row is None:
                return None
            claimed = conn.execute(update(webhook_events).where(
                c.id == row.id, func.coalesce(c.attempts, 0) == (row.attempts or 0), c.status == row.status).values(
                attempts=(row.attempts or 0) + 1, status=EventState.RECEIVED.value, processed_at=now)).rowcount
            if not claimed:
                return None
            full = conn.execute(select(webhook_events).where(c.id == row.id)).first()
        return dict(full._mapping) if full else None

    def events_in(self, status: EventState, project_id: str, limit: int = 10_000) -> list[dict[str, Any]]:
        c = webhook_events.c
        q = select(webhook_events).where(c.status == status.value, c.project_id == project_id).order_by(
            c.id).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def event_states(self) -> dict[str, int]:
        q = select(webhook_events.c.status, func.count()).group_by(webhook_events.c.status)
        with self.engine.connect() as conn:
            return {(s or "legacy"): int(n) for s, n in conn.execute(q)}

    def last_event(self, status: EventState) -> dict[str, Any] | None:
        c = webhook_events.c
        q = select(c.id, c.received_at, c.action, c.project_id, c.error).where(c.status == status.value).order_by(
            c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return dict(row._mapping) if row else None

    def events(self, action: str | None = None, project_id: str | None = None, limit: int = 1000) -> list[dict]:
        q = select(webhook_events).order_by(webhook_events.c.id.desc()).limit(limit)
        if action:
            q = q.where(webhook_events.c.action == action)
        if project_id:
            q = q.where(webhook_events.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def event_counts(self) -> dict[str, int]:
        q = select(webhook_events.c.action, func.count()).group_by(webhook_events.c.action)
        with self.engine.connect() as conn:
            return {a: int(n) for a, n in conn.execute(q)}

    # -- provenance ----------------------------------------------------------------------------
    def save_provenance(self, rows: list[dict[str, Any]]) -> None:
        """Replace the records of these (project, task, control, version): a re-prediction overwrites."""
        if not rows:
            return
        now = time.time()
        with self.engine.begin() as conn:
            for (pid, control, version), group in _group(rows).items():
                conn.execute(delete(provenance).where(
                    provenance.c.project_id == pid, provenance.c.control == control,
                    provenance.c.model_version == version,
                    provenance.c.task_id.in_([r["task_id"] for r in group])))
            conn.execute(insert(provenance), [{**r, "created_at": now} for r in rows])

    def provenance(self, task_id: int, project_id: str | None = None) -> list[dict[str, Any]]:
        q = select(provenance).where(provenance.c.task_id == task_id).order_by(provenance.c.id.desc())
        if project_id:
            q = q.where(provenance.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def route_counts(self, project_id: str | None = None) -> dict[str, int]:
        q = select(provenance.c.route, func.count()).group_by(provenance.c.route)
        if project_id:
            q = q.where(provenance.c.project_id == project_id)
        with self.engine.connect() as conn:
            return {r: int(n) for r, n in conn.execute(q)}

    # -- project texts -------------------------------------------------------------------------
    def note_texts(self, project_id: str, items: list[tuple[int, str]]) -> int:
        """Remember tasks' texts (first sight wins), up to MAX_TEXTS_PER_PROJECT per project; returns how many
        were new."""
        if not items:
            return 0
        try:
            return self._note_texts(project_id, dict(items))
        except IntegrityError:  # another process noted some of them first: what is left is new
            return self._note_texts(project_id, dict(items))

    def _note_texts(self, project_id: str, by_task: dict[int, str]) -> int:
        with self.engine.begin() as conn:
            have = conn.execute(select(func.count()).select_from(project_texts)
                                .where(project_texts.c.project_id == project_id)).scalar_one()
            room = MAX_TEXTS_PER_PROJECT - int(have)
            if room <= 0:
                return 0
            known: set[int] = set()
            ids = list(by_task)
            for i in range(0, len(ids), 1000):  # bounded IN lists
                known.update(conn.execute(select(project_texts.c.task_id).where(
                    project_texts.c.project_id == project_id,
                    project_texts.c.task_id.in_(ids[i:i + 1000]))).scalars())
            now = time.time()
            new = [{"project_id": project_id, "task_id": t, "text": x, "seen_at": now}
                   for t, x in by_task.items() if t not in known][:room]
            if new:
                conn.execute(insert(project_texts), new)
        return len(new)

    def texts(self, project_id: str) -> list[str]:
        """A project's noted task texts (at most MAX_TEXTS_PER_PROJECT), in the order first seen."""
        q = select(project_texts.c.text).where(project_texts.c.project_id == project_id).order_by(project_texts.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    # -- projects ------------------------------------------------------------------------------
    def note_project(self, project_id: str, config_hash: str, model_version: str | None,
                     controls: list[dict[str, Any]], unsupported: list[str], label_config: str | None = None) -> None:
        """Upsert only on change: /setup runs on nearly every Label Studio page view."""
        state = (config_hash, model_version)
        with self._lock:
            if self._project_cache.get(project_id) == state:
                return
            self._project_cache[project_id] = state
        values = {"config_hash": config_hash, "model_version": model_version, "controls": controls,
                  "unsupported": unsupported, "updated_at": time.time()}
        if label_config is not None:
            values["label_config"] = label_config
        with self.engine.begin() as conn:
            done = conn.execute(update(projects).where(projects.c.project_id == project_id).values(**values))
            if done.rowcount == 0:
                conn.execute(insert(projects).values(project_id=project_id, **values))

    def project(self, project_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(projects).where(projects.c.project_id == project_id)).first()
        return dict(row._mapping) if row else None

    def set_label_config(self, project_id: str, label_config: str, config_hash: str) -> bool:
        """Record a project's config from a PROJECT_UPDATED webhook; True if it changed."""
        current = self.project(project_id)
        if current and current.get("config_hash") == config_hash:
            return False
        with self._lock:
            self._project_cache.pop(project_id, None)
        with self.engine.begin() as conn:
            values = {"label_config": label_config, "config_hash": config_hash, "updated_at": time.time()}
            if current:
                conn.execute(update(projects).where(projects.c.project_id == project_id).values(**values))
            else:
                conn.execute(insert(projects).values(project_id=project_id, controls=[], unsupported=[], **values))
        return True

    def projects(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(select(projects).order_by(projects.c.project_id))]
        for r in rows:
            for k in ("controls", "unsupported"):
                if isinstance(r[k], str):
                    r[k] = json.loads(r[k])
        return rows


def _group(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["project_id"], r["control"], r["model_version"]), []).append(r)
    return out
