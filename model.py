"""AutoAnnotatorModel: the ML-backend contract (setup / predict / fit) composed from backend parts.

One instance per process, built once (Label Studio's own examples build a model per request and
reload weights each time; here the registry keeps loaded ensembles for the life of the process).
It imports no torch: ensembles are loaded lazily by the registry when a prediction needs one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from backend import metrics
from backend.bundles import BundleRef
from backend.decision.audit import is_audit
from backend.errors import ApiError, InvalidTasks, PayloadTooLarge
from backend.labelconfig import ChoiceControl, LabelConfigError, LabelSpace, parse_label_config
from backend.planning.service import SetupPlanner
from backend.review import HardSampleReview, Outcome
from backend.review_jobs import ReviewJobs
from backend.serving import UNTRAINED_VERSION, ModelRegistry, combined_version
from backend.settings import Settings
from backend.store import Store
from finetune.intake import Intake
from finetune.jobs import TrainingJobs

log = logging.getLogger(__name__)

_CHUNK = 1024  # tasks per ensemble call: bounds memory on a 10,000-task "Retrieve predictions"


def project_key(project: Any) -> str:
    """Label Studio sends "<id>.<created_at>" to /setup and /predict, and {"id": …} in webhooks."""
    if isinstance(project, dict):
        project = project.get("id")
    return str(project).split(".")[0] if project not in (None, "") else "unknown"


class AutoAnnotatorModel:
    def __init__(self, settings: Settings | None = None, registry: ModelRegistry | None = None,
                 store: Store | None = None, background: bool = True):
        self.settings = settings or Settings.from_env()
        self.registry = registry or ModelRegistry(self.settings)
        self.store = store or Store(self.settings.database_url)
        self.intake = Intake(self.store, self.settings, self._project_has_bundle)
        self.review = HardSampleReview(self.settings, self.store.engine)
        self.jobs = TrainingJobs(self.store, self.settings)
        self.review_jobs = ReviewJobs(self.store, self.settings)
        self.planner = SetupPlanner(self.settings)
        self._background = None
        self._review_worker = None
        self.background = background  # False for one-shot commands (prelabel): no learning or review threads
        self._background_lock = threading.Lock()

    def _ensure_background(self) -> None:
        """Start the learning loop once per process, lazily: threads do not survive gunicorn's fork."""
        if not self.background:
            return
        bg = self._background
        if bg is not None and bg.pid == os.getpid() and bg.is_alive():
            return
        with self._background_lock:
            bg = self._background
            if bg is None or bg.pid != os.getpid() or not bg.is_alive():
                from finetune.worker import Background

                self._background = Background(self.settings, self.store)
                self._background.start()

    def _ensure_review_worker(self) -> None:
        """REVIEW_MODE=async: the thread that runs (or, with Redis, sends) review jobs and retries pushes."""
        if not self.background:
            return
        worker = self._review_worker
        if worker is not None and worker.pid == os.getpid() and worker.is_alive():
            worker.wake.set()
            return
        with self._background_lock:
            worker = self._review_worker
            if worker is None or worker.pid != os.getpid() or not worker.is_alive():
                from backend.review_jobs import ReviewWorker

                self._review_worker = ReviewWorker(self.settings, self.store, self.review)
                self._review_worker.start()
            self._review_worker.wake.set()

    @property
    def defer_review(self) -> bool:
        return self.settings.review_mode.strip().lower() == "async"

    # -- label space ---------------------------------------------------------------------------
    def _space(self, label_config: Any) -> LabelSpace:
        if not isinstance(label_config, str) or not label_config.strip():
            raise ApiError("label config is missing: send it as 'schema' (/setup) or 'label_config' (/predict)",
                           status=400)
        try:
            return parse_label_config(label_config)
        except LabelConfigError as exc:
            raise ApiError(str(exc), status=422) from exc

    def _resolve(self, project: Any, space: LabelSpace) -> list[tuple[ChoiceControl, BundleRef | None]]:
        """Each control's serving bundle; one that shares fewer than two labels with the control does not count."""
        out = []
        for control, ref in self.registry.resolve(space, project_key(project)):
            out.append((control, ref if ref is not None and self.registry.columns(ref, control) else None))
        return out

    def _note(self, project: Any, space: LabelSpace, resolved: list, label_config: str) -> str:
        version = combined_version([r for _, r in resolved if r is not None])
        controls = [{"control": c.name, "labels": list(c.labels), "multiple": c.multiple,
                     "bundle_key": r.key if r else c.bundle_key, "model_version": r.version if r else None}
                    for c, r in resolved]
        self.store.note_project(project_key(project), space.config_hash, version, controls, list(space.unsupported),
                                label_config)
        return version

    def _project_has_bundle(self, project_id: str) -> bool:
        project = self.store.project(project_id)
        if not project or not project.get("label_config"):
            return False
        try:
            space = parse_label_config(project["label_config"])
        except LabelConfigError:
            return False
        return any(ref is not None for _, ref in self._resolve(project_id, space))

    # -- contract ------------------------------------------------------------------------------
    def setup(self, project: Any, label_config: Any, extra_params: Any = None) -> dict[str, Any]:
        """Cheap: parse (cached), look up CURRENT pointers (cached), warm models in the background; a control
        nothing serves gets a plan (PLAN_ON_SETUP), made and built in the background too."""
        self._ensure_background()
        if self.defer_review:
            self._ensure_review_worker()  # jobs left by a previous process, pushes to retry
        space = self._space(label_config)
        resolved = self._resolve(project, space)
        version = self._note(project, space, resolved, label_config)
        self.registry.warm([r for _, r in resolved if r is not None])
        out: dict[str, Any] = {"model_version": version}
        missing = [c.name for c, r in resolved if r is None]
        if missing:
            out["untrained_controls"] = missing
            planning = self.planner.on_setup(project_key(project), [c for c, r in resolved if r is None]) \
                if self.background else []
            if planning:
                out["planning"] = planning
        if space.unsupported:
            out["unsupported"] = list(space.unsupported)
        return out

    def predict(self, tasks: Any, label_config: Any, project: Any = None,
                context: Any = None) -> list[dict[str, Any] | list]:
        """One item per task, in order: a prediction dict, or [] when no control has a bundle."""
        if not isinstance(tasks, list):
            raise ApiError("'tasks' must be a list of Label Studio tasks", status=400)
        if len(tasks) > self.settings.max_tasks_per_request:
            raise PayloadTooLarge(f"{len(tasks)} tasks in one request; the limit is "
                                  f"{self.settings.max_tasks_per_request} (MAX_TASKS_PER_REQUEST)")
        space = self._space(label_config)
        resolved = self._resolve(project, space)
        version = self._note(project, space, resolved, label_config)
        served = [(c, r) for c, r in resolved if r is not None]
        if not tasks:
            return []
        texts_by_control = {c.name: self._texts(tasks, c) for c, _ in served}
        if not served:
            metrics.TASKS_UNTRAINED.inc(len(tasks))
            return [[] for _ in tasks]
        pid = project_key(project)
        first = texts_by_control[served[0][0].name]
        # What the project's texts look like, for the domain gate (backend/domain_gate.py).
        if pid != "unknown":
            self.store.note_texts(pid, [(t["id"], x) for t, x in zip(tasks, first, strict=True)
                                        if isinstance(t.get("id"), int) and x])
        defer = self.defer_review
        # LLM_INLINE_SECONDS bounds the LLM's time in this request, whatever its size.
        deadline = time.monotonic() + self.settings.llm_inline_seconds
        queued = 0
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        scores: list[list[float]] = [[] for _ in tasks]
        for control, ref in served:
            ensemble = self.registry.ensemble(ref)
            columns = self.registry.columns(ref, control) or []
            idx, names = [c for c, _ in columns], [n for _, n in columns]
            texts = texts_by_control[control.name]
            for start in range(0, len(texts), _CHUNK):
                chunk = texts[start : start + _CHUNK]
                decisions = ensemble.predict(chunk, idx)
                ids = [t.get("id") if isinstance(t.get("id"), int) else None for t in tasks[start:start + _CHUNK]]
                outcomes = self.review.apply(pid, control.multiple, names, chunk, decisions,
                                             examples=lambda c=control: self._examples(pid, c.name), defer=defer,
                                             audited=self._audited(pid, tasks[start : start + _CHUNK]),
                                             control=control.name, task_ids=ids, deadline=deadline)
                records, pending = [], []
                for i, (d, o) in enumerate(zip(decisions, outcomes, strict=True), start):
                    scores[i].append(o.score)
                    metrics.CONFIDENCE.observe(d.confidence)
                    if o.labels:
                        regions[i].append(self._region(control, o.labels, o.score))
                    records.append(self._provenance(pid, tasks[i], control.name, version, names, d, o))
                    if o.route == "llm" and isinstance(tasks[i].get("id"), int):
                        self.intake.corrections.record_llm(pid, tasks[i]["id"], control.name, o.labels[0], texts[i],
                                                           self.settings.llm_model)
                    if o.route == "pending" and isinstance(tasks[i].get("id"), int):
                        pending.append({"task_id": tasks[i]["id"], "text": texts[i], "to_name": control.to_name,
                                        "confidence": d.confidence, "probabilities": list(d.probabilities),
                                        "labels": o.labels, "score": o.score, "reason": o.reason,
                                        "audit": o.audit})
                self.store.save_provenance([r for r in records if r is not None])
                if pending:  # written before /predict answers: nothing is lost if the process dies
                    self.review_jobs.request(pid, control.name, version, control.multiple, names, pending)
                    queued += len(pending)
            metrics.TASKS_PREDICTED.labels(control.name).inc(len(texts))
        metrics.BUNDLES_LOADED.set(len(self.registry.loaded()))
        if queued:
            self._ensure_review_worker()
        return [{"model_version": version, "score": round(min(s), 4), "result": r}
                for r, s in zip(regions, scores, strict=True)]

    def fit(self, event: str, data: dict[str, Any] | None, raw: str) -> dict[str, Any]:
        """Record the event, then turn it into corrections / training requests; training runs elsewhere."""
        event_id = self.store.record_event(event, raw, data)
        metrics.WEBHOOK_EVENTS.labels(event[:64]).inc()
        out: dict[str, Any] = {"status": "ok", "event_id": event_id, "action": event}
        if data:
            self._ensure_background()
            out.update(self.intake.handle(event, data, event_id))
            if "training_job" in out and self._background is not None:
                self._background.wake.set()
        return out

    # -- helpers -------------------------------------------------------------------------------
    def _audited(self, pid: str, tasks: Sequence[Any]) -> list[bool] | None:
        """Which tasks REVIEW_AUDIT_SHARE sends to a human whatever the confidence; None when there is no audit."""
        share = self.settings.review_audit_share
        if share <= 0 or pid == "unknown":
            return None
        return [is_audit(pid, t.get("id") if isinstance(t.get("id"), int) else None, share) for t in tasks]

    def _texts(self, tasks: Sequence[Any], control: ChoiceControl) -> list[str]:
        texts, bad, huge = [], [], []
        limit = self.settings.max_text_chars
        for n, task in enumerate(tasks):
            data = task.get("data") if isinstance(task, dict) else None
            tid = task.get("id", f"#{n}") if isinstance(task, dict) else f"#{n}"
            value = data.get(control.data_key) if isinstance(data, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                bad.append(tid)
                texts.append("")
            elif len(value) > limit:
                huge.append(tid)
                texts.append("")
            else:
                texts.append(value)
        if huge:
            raise PayloadTooLarge(f"texts longer than {limit} characters (MAX_TEXT_CHARS) in tasks {huge[:20]}",
                                  tasks=huge[:100])
        if bad:
            raise InvalidTasks(f"tasks {bad[:20]} have no text in data.{control.data_key} (the <Text> of control "
                               f"'{control.name}'): empty, missing or not a string", tasks=bad[:100])
        return texts

    def _examples(self, project_id: str, control: str) -> list[tuple[str, str]]:
        """Few-shot examples for the LLM: human-accepted corrections of this project and control."""
        def load() -> list[dict[str, Any]]:
            return [r for r in self.intake.corrections.rows(project_id, control)
                    if r["source"] == "human" and not r["holdout"] and len(r["choices"]) == 1]

        return self.review.examples_for((project_id, control), load)

    @staticmethod
    def _provenance(project_id: str, task: dict[str, Any], control: str, version: str, names: list[str],
                    d: Any, o: Outcome) -> dict[str, Any] | None:
        if not isinstance(task.get("id"), int):
            return None
        return {"project_id": project_id, "task_id": task["id"], "control": control, "model_version": version,
                "route": o.route, "reason": o.reason[:2000], "labels": o.labels,
                "ensemble_labels": [names[j] for j in d.labels], "confidence": round(d.confidence, 6),
                "score": o.score, "votes": [[names[j] for j in v] for v in d.votes],
                "probabilities": {n: round(p, 6) for n, p in zip(names, d.probabilities, strict=True)},
                "llm": {**o.review.as_dict(), "audit": o.audit} if o.review is not None else None}

    @staticmethod
    def _region(control: ChoiceControl, choices: list[str], confidence: float) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex[:10], "from_name": control.name, "to_name": control.to_name, "type": "choices",
                "value": {"choices": choices}, "score": round(confidence, 4)}

    # -- introspection ---------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        store = self.registry.store
        bundles = {k: (r.version if (r := store.current(k)) else None) for k in store.keys()}
        untrained = []
        for p in self.store.projects():
            missing = [c["control"] for c in p["controls"] or [] if not c["model_version"]]
            if missing:
                untrained.append({"project": p["project_id"], "controls": missing})
        learning = {"queue": "rq" if self.settings.redis_url else "in-process",
                    **{status: len(self.jobs.list(status=status)) for status in ("pending", "queued", "running")}}
        review = {"mode": "async" if self.defer_review else "inline", "llm": self.settings.llm_model or None,
                  "jobs": self.review_jobs.counts() if self.defer_review else {}}
        return {"status": "UP", "model_class": type(self).__name__, "bundles": bundles,
                "loaded": self.registry.loaded(), "projects_without_bundle": untrained,
                "untrained_version": UNTRAINED_VERSION, "learning": learning, "review": review}

    def provenance(self, task_id: int, project: Any = None) -> list[dict[str, Any]]:
        return self.store.provenance(task_id, project_key(project) if project else None)

    def llm_usage(self, project: Any = None) -> dict[str, Any]:
        pid = project_key(project) if project else None
        return {"project": pid, **self.review.totals(pid), "routes": self.store.route_counts(pid)}

    def trust(self, project: Any) -> dict[str, Any]:
        """The trust ledger of every (control, LLM model) with checks in this project, and the current model's."""
        pid = project_key(project)
        review = self.review
        out = []
        pairs = set(review.trust.models(pid)) if review.trust is not None else set()
        for c in self.controls(pid):
            if self.settings.llm_model:
                pairs.add((c["control"], self.settings.llm_model))
        labels = {c["control"]: list(c["labels"]) for c in self.controls(pid)}
        for control, llm_model in sorted(pairs):
            names = labels.get(control) or []
            ledger = review.trust.ledger(pid, control, llm_model, names) if review.trust is not None else None
            if ledger is None:
                continue
            out.append({"control": control, "llm_model": llm_model,
                        "current": llm_model == self.settings.llm_model, **ledger.as_dict(),
                        "audit_rate": ledger.audit_rate(self.settings.llm_audit_share)})
        return {"project": pid, "ledgers": out}

    def quality(self, project: Any) -> dict[str, Any]:
        """TARGET_ACCURACY per control: the derived auto-accept threshold and the audit evidence behind it."""
        pid = project_key(project)
        target = self.settings.target_accuracy
        controls = []
        for c in self.controls(pid):
            entry: dict[str, Any] = {"control": c["control"]}
            if target and self.review.trust is not None:
                entry.update(self.review.trust.stated(pid, c["control"], target).as_dict())
            else:
                _, right = (self.review.trust.audit_evidence(pid, c["control"])
                            if self.review.trust is not None else ([], []))
                entry.update({"target_accuracy": None, "audited_tasks": len(right),
                              "audited_accuracy": round(sum(right) / len(right), 4) if right else None})
            controls.append(entry)
        return {"project": pid, "target_accuracy": target or None,
                "review_audit_share": self.settings.review_audit_share, "controls": controls}

    def controls(self, project_id: str) -> list[dict[str, Any]]:
        p = self.store.project(project_id)
        controls = (p or {}).get("controls") or []
        return list(json.loads(controls) if isinstance(controls, str) else controls)

    def versions(self) -> list[str]:
        store = self.registry.store
        out: list[str] = []
        for key in store.keys():
            cur = store.current(key)
            vs = store.versions(key)
            if cur and cur.version in vs:
                vs.remove(cur.version)
                vs.insert(0, cur.version)
            out.extend(vs)
        return out


def dumps_event(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
