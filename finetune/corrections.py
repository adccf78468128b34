"""Corrections: what annotators (and, with lower trust, the LLM) said each task's label is.

Webhook payloads are turned into one row per annotated `<Choices>` control, written before
/webhook answers. ANNOTATION_UPDATED replaces the row of its annotation; ANNOTATIONS_DELETED
retracts rows (kept, never trained on). A fixed share of tasks — chosen by a hash of the task id,
so the choice never changes — is held out from training to gate new versions; so are audited tasks
(REVIEW_AUDIT_SHARE, backend/decision/audit.py), which the temperature is fitted on.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from backend.decision.audit import is_audit
from backend.labelstudio.config import LabelConfigError, parse_label_config
from backend.store import Store, corrections


def is_holdout(project_id: str, task_id: int | None, every: int) -> bool:
    """Deterministic: the same task is in the holdout whenever it is annotated, on every machine."""
    if every <= 0 or task_id is None:
        return False
    digest = hashlib.sha256(f"{project_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % every == 0


def _data_keys(label_config: str | None) -> dict[str, str]:
    if not label_config:
        return {}
    try:
        return {c.name: c.data_key for c in parse_label_config(label_config).controls}
    except LabelConfigError:
        return {}


def extract(body: dict[str, Any], fallback_config: str | None = None) -> list[dict[str, Any]]:
    """One record per choices region of an ANNOTATION_CREATED/UPDATED payload; cancelled ones give none."""
    annotation = body.get("annotation") or {}
    task = body.get("task") or {}
    if not isinstance(annotation, dict) or not isinstance(task, dict) or annotation.get("was_cancelled"):
        return []
    project = body.get("project")
    config = project.get("label_config") if isinstance(project, dict) else None
    keys = _data_keys(config) or _data_keys(fallback_config)
    data = task.get("data") if isinstance(task.get("data"), dict) else {}
    out = []
    for region in annotation.get("result") or []:
        if not isinstance(region, dict) or region.get("type") != "choices":
            continue
        control = region.get("from_name")
        choices = (region.get("value") or {}).get("choices")
        key = keys.get(control) or next((k for k, v in data.items() if isinstance(v, str)), None)
        text = data.get(key) if key else None
        if not control or not isinstance(choices, list) or not choices or not isinstance(text, str) or not text.strip():
            continue
        out.append({"control": control, "choices": [str(c) for c in choices], "text": text,
                    "annotator": str(annotation.get("completed_by") or annotation.get("updated_by") or ""),
                    "annotation_id": annotation.get("id"), "task_id": task.get("id") or annotation.get("task")})
    return out


class CorrectionLog:
    def __init__(self, store: Store, holdout_every: int = 5, audit_share: float = 0.0):
        self.store = store
        self.holdout_every = holdout_every
        self.audit_share = audit_share

    def audited(self, project_id: str, task_id: int | None) -> bool:
        """Whether the task is one REVIEW_AUDIT_SHARE sent to a human whatever the confidence."""
        return is_audit(project_id, task_id, self.audit_share)

    def held_out(self, project_id: str, task_id: int | None) -> bool:
        """Frozen from training: the gate's holdout, and the audit (a sample is only unbiased if never trained on)."""
        return is_holdout(project_id, task_id, self.holdout_every) or self.audited(project_id, task_id)

    def record(self, project_id: str, records: list[dict[str, Any]], seq: int, source: str = "human") -> int:
        """Insert or replace (same annotation and control) each record; returns how many were written."""
        now = time.time()
        with self.store.engine.begin() as conn:
            for r in records:
                values = {"choices": r["choices"], "text": r["text"], "annotator": r.get("annotator"),
                          "retracted": False, "changed_seq": seq, "updated_at": now}
                existing = None
                if r.get("annotation_id") is not None:
                    existing = conn.execute(select(corrections.c.id).where(and_(
                        corrections.c.project_id == project_id,
                        corrections.c.annotation_id == r["annotation_id"],
                        corrections.c.control == r["control"]))).scalar()
                if existing:
                    conn.execute(update(corrections).where(corrections.c.id == existing).values(**values))
                else:
                    conn.execute(insert(corrections).values(
                        project_id=project_id, task_id=r.get("task_id"), annotation_id=r.get("annotation_id"),
                        control=r["control"], source=source, created_at=now,
                        holdout=source == "human" and self.held_out(project_id, r.get("task_id")),
                        **values))
        return len(records)

    def record_llm(self, project_id: str, task_id: int, control: str, label: str, text: str,
                   llm_model: str = "") -> None:
        """An LLM-settled hard sample: a label weighed by the LLM's measured trust (finetune/trainer.py), one per
        task and control; `annotator` names the model ("llm:<model>") whose ledger weighs it."""
        now = time.time()
        with self.store.engine.begin() as conn:
            existing = conn.execute(select(corrections.c.id).where(
                corrections.c.project_id == project_id, corrections.c.task_id == task_id,
                corrections.c.control == control, corrections.c.source == "llm")).scalar()
            values = {"choices": [label], "text": text, "retracted": False, "updated_at": now, "changed_seq": 0}
            if existing:
                conn.execute(update(corrections).where(corrections.c.id == existing).values(**values))
            else:
                conn.execute(insert(corrections).values(project_id=project_id, task_id=task_id, control=control,
                                                        source="llm", holdout=False, created_at=now,
                                                        annotator=f"llm:{llm_model}"[:255], **values))

    def retract(self, project_id: str | None, annotation_ids: list[int], seq: int) -> int:
        q = update(corrections).where(corrections.c.annotation_id.in_(annotation_ids))
        if project_id:
            q = q.where(corrections.c.project_id == project_id)
        with self.store.engine.begin() as conn:
            return conn.execute(q.values(retracted=True, changed_seq=seq, updated_at=time.time())).rowcount

    def rows(self, project_id: str, control: str | None = None) -> list[dict[str, Any]]:
        q = select(corrections).where(corrections.c.project_id == project_id, corrections.c.retracted.is_(False))
        if control:
            q = q.where(corrections.c.control == control)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(corrections.c.id))]

    def new_since(self, project_id: str, seq: int) -> int:
        """Human corrections changed after `seq` (the last trained-on change): drives TRAIN_EVERY_N."""
        q = select(func.count()).select_from(corrections).where(
            corrections.c.project_id == project_id, corrections.c.source == "human",
            corrections.c.retracted.is_(False), corrections.c.changed_seq > seq)
        with self.store.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def human_count(self, project_id: str) -> int:
        q = select(func.count()).select_from(corrections).where(
            corrections.c.project_id == project_id, corrections.c.source == "human",
            corrections.c.retracted.is_(False), corrections.c.holdout.is_(False))
        with self.store.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)
