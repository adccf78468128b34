"""The trust ledger, in the database: every LLM answer a person also labelled, and the random audit's evidence.

Checks arrive two ways, both as Label Studio annotations (webhooks): a task the LLM reviewed that an annotator later
labels (the audit sends a share of them on purpose), and a task of the random audit (REVIEW_AUDIT_SHARE). What the
LLM and the ensemble said is read back from the task's provenance. The rules on top are pure:
`backend.decision.trust` (accept an answer, weigh a label, audit rate) and `backend.decision.quality` (a threshold
for TARGET_ACCURACY).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine

from backend.decision.quality import Stated, threshold_for_target
from backend.decision.trust import Check, Ledger
from backend.store.base import ensure_tables, metadata
from backend.store.review import provenance

# The trust ledger's evidence: one row per LLM answer that a person also labelled. A task's later annotation
# replaces its row, so the ledger counts each task once, with the person's latest word.
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

_VERDICT = ("valid", "cached")


class TrustLedger:
    def __init__(self, engine: Engine):
        self.engine = engine
        ensure_tables(engine, [trust_checks, audit_checks])

    # -- evidence -------------------------------------------------------------------------------------------------
    def record(self, project_id: str, control: str, llm_model: str, task_id: int, llm_answer: str,
               human_label: str, ensemble_label: str | None, confidence: float | None = None,
               audited: bool = False) -> None:
        """One check; a later label for the same task replaces it (a person's latest word counts)."""
        key = and_(trust_checks.c.project_id == project_id, trust_checks.c.control == control,
                   trust_checks.c.llm_model == llm_model, trust_checks.c.task_id == task_id)
        with self.engine.begin() as conn:
            conn.execute(delete(trust_checks).where(key))
            conn.execute(insert(trust_checks).values(
                project_id=project_id, control=control, llm_model=llm_model, task_id=task_id,
                llm_answer=llm_answer[:255], human_label=human_label[:255],
                ensemble_label=None if ensemble_label is None else ensemble_label[:255], confidence=confidence,
                audited=audited, created_at=time.time()))

    def record_audit(self, project_id: str, control: str, task_id: int, ensemble_label: str, human_label: str,
                     confidence: float) -> None:
        key = and_(audit_checks.c.project_id == project_id, audit_checks.c.control == control,
                   audit_checks.c.task_id == task_id)
        with self.engine.begin() as conn:
            conn.execute(delete(audit_checks).where(key))
            conn.execute(insert(audit_checks).values(
                project_id=project_id, control=control, task_id=task_id, ensemble_label=ensemble_label[:255],
                human_label=human_label[:255], confidence=float(confidence), created_at=time.time()))

    def from_annotation(self, project_id: str, records: Sequence[dict[str, Any]], random_audit: Any) -> int:
        """Turn annotated tasks into checks, reading what the LLM and the ensemble said from the provenance.

        `random_audit(task_id)` says whether the task is one of the random audit's. Returns the checks written."""
        written = 0
        for r in records:
            task_id, control, choices = r.get("task_id"), r.get("control"), r.get("choices")
            if not isinstance(task_id, int) or not isinstance(control, str) or not choices or len(choices) != 1:
                continue
            human = str(choices[0])
            rows = self._provenance(project_id, task_id, control)
            if not rows:
                continue
            for row in rows:  # the newest prediction the LLM gave a verdict on
                llm = row.get("llm") or {}
                if isinstance(llm, dict) and llm.get("status") in _VERDICT and llm.get("verdict"):
                    ens = (row.get("ensemble_labels") or [None])[0]
                    self.record(project_id, control, str(llm.get("model") or ""), task_id, str(llm["verdict"]),
                                human, ens, row.get("confidence"), bool(llm.get("audit")))
                    written += 1
                    break
            newest = rows[0]
            if random_audit(task_id) and newest.get("ensemble_labels") and newest.get("confidence") is not None:
                self.record_audit(project_id, control, task_id, str(newest["ensemble_labels"][0]), human,
                                  float(newest["confidence"]))
                written += 1
        return written

    def _provenance(self, project_id: str, task_id: int, control: str) -> list[dict[str, Any]]:
        q = (select(provenance).where(provenance.c.project_id == project_id, provenance.c.task_id == task_id,
                                      provenance.c.control == control).order_by(provenance.c.id.desc()))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    # -- what it says ---------------------------------------------------------------------------------------------
    def ledger(self, project_id: str, control: str, llm_model: str, labels: Sequence[str]) -> Ledger:
        q = (select(trust_checks.c.llm_answer, trust_checks.c.human_label, trust_checks.c.ensemble_label,
                    func.count())
             .where(trust_checks.c.project_id == project_id, trust_checks.c.control == control,
                    trust_checks.c.llm_model == llm_model)
             .group_by(trust_checks.c.llm_answer, trust_checks.c.human_label, trust_checks.c.ensemble_label))
        with self.engine.connect() as conn:
            grouped = conn.execute(q).all()
        checks = [Check(a, h, e or "") for a, h, e, n in grouped for _ in range(int(n))]
        return Ledger.from_checks(checks, labels)

    def models(self, project_id: str) -> list[tuple[str, str]]:
        """(control, LLM model) pairs with checks in this project."""
        q = (select(trust_checks.c.control, trust_checks.c.llm_model).where(trust_checks.c.project_id == project_id)
             .distinct().order_by(trust_checks.c.control, trust_checks.c.llm_model))
        with self.engine.connect() as conn:
            return [(c, m) for c, m in conn.execute(q)]

    def audit_evidence(self, project_id: str, control: str) -> tuple[list[float], list[bool]]:
        q = select(audit_checks.c.confidence, audit_checks.c.ensemble_label, audit_checks.c.human_label).where(
            audit_checks.c.project_id == project_id, audit_checks.c.control == control)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [float(c) for c, _, _ in rows], [e == h for _, e, h in rows]

    def stated(self, project_id: str, control: str, target: float) -> Stated:
        confidences, right = self.audit_evidence(project_id, control)
        return threshold_for_target(confidences, right, target)
