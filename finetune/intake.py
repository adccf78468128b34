"""Webhook events → durable corrections and training requests, fast enough for Label Studio's 1 s
webhook timeout: a few SQL statements and, at most, one Redis push; training never runs here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from backend.labelstudio.config import LabelConfigError, parse_label_config
from backend.payload import project_ref
from backend.settings import Settings
from backend.store import Store
from backend.store.trust import TrustLedger
from finetune.corrections import CorrectionLog, extract
from finetune.jobs import TrainingJobs
from finetune.policy import training_reason
from finetune.trainer import policy_from

log = logging.getLogger(__name__)

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")


def project_id_of(body: dict[str, Any], store: Store) -> str | None:
    """The key of the webhook's project (its id, told apart from another Label Studio's by its creation time)."""
    project = body.get("project")
    if project in (None, "") or (isinstance(project, dict) and project.get("id") in (None, "")):
        return None
    return store.project_for(*project_ref(project))


class Intake:
    def __init__(self, store: Store, settings: Settings, has_bundle: Callable[[str], bool]):
        self.store = store
        self.corrections = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
        self.jobs = TrainingJobs(store, settings)
        self.trust = TrustLedger(store.engine)
        self.policy = policy_from(settings)
        self.has_bundle = has_bundle

    def handle(self, action: str, body: dict[str, Any], event_id: int) -> dict[str, Any]:
        pid = project_id_of(body, self.store)
        if pid is None:
            return {}
        if action in ANNOTATION_EVENTS:
            project = self.store.project(pid)
            records = extract(body, project.get("label_config") if project else None)
            # The LLM's checks first: what it said on these tasks, against the person's label (backend/store/trust.py).
            checks = self.trust.from_annotation(pid, records, lambda t: self.corrections.audited(pid, t))
            out: dict[str, Any] = {"corrections": self.corrections.record(pid, records, event_id)}
            if checks:
                out["trust_checks"] = checks
            job = self.maybe_train(pid)
            if job:
                out["training_job"] = job["id"]
            return out
        if action == "ANNOTATIONS_DELETED":
            ids = [a.get("id") for a in body.get("annotations") or [] if isinstance(a, dict) and a.get("id")]
            return {"retracted": self.corrections.retract(pid, ids, event_id) if ids else 0}
        if action == "START_TRAINING":
            return {"training_job": self.jobs.request(pid, "START_TRAINING")["id"]}
        if action == "PROJECT_UPDATED":
            project = body.get("project")
            config = project.get("label_config") if isinstance(project, dict) else None
            if isinstance(config, str):
                try:
                    space = parse_label_config(config)
                except LabelConfigError:
                    return {"label_config": "unsupported"}
                return {"label_config_changed": self.store.set_label_config(pid, config, space.config_hash)}
        return {}

    def maybe_train(self, project_id: str) -> dict[str, Any] | None:
        seen = self.jobs.last_data_seq(project_id)
        new = self.corrections.new_since(project_id, seen)
        reason = training_reason(new, self.corrections.human_count(project_id), self.has_bundle(project_id),
                                 self.policy)
        return self.jobs.request(project_id, reason, seen_seq=seen) if reason else None
