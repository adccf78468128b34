"""`Store`: the service's reads and writes of events, projects, provenance and project texts."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from backend.payload import storable
from backend.payload import task_id as valid_id
from backend.store.base import make_engine
from backend.store.events import REPLAY_ATTEMPTS, EventState, webhook_events
from backend.store.projects import MAX_TEXTS_PER_PROJECT, project_instances, project_texts, projects
from backend.store.review import provenance

log = logging.getLogger(__name__)


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
        for _ in range(7):
            try:
                return self._note_texts(project_id, dict(items))
            except IntegrityError:  # another request noted some of them first: what is left is new
                continue
        return 0  # every try lost a race: the others noted these tasks, which is all that is asked

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
