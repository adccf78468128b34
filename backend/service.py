"""AnnotationService: the ML-backend contract (setup / predict / fit) composed from backend parts.

The root `model.py` names it `AutoAnnotatorModel`, as Label Studio's ML backends do.

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
from typing import TYPE_CHECKING, Any

from backend import metrics, payload
from backend.decision.audit import is_audit
from backend.decision.states import RouteName
from backend.errors import ApiError, InvalidTasks, PayloadTooLarge
from backend.labelstudio.config import ChoiceControl, LabelConfigError, LabelSpace, parse_label_config
from backend.planning.service import SetupPlanner
from backend.push import RETRIEVE_CHUNK, PushJobs, PushKind
from backend.review.jobs import ReviewJobs
from backend.review.triage import HardSampleReview, Outcome
from backend.serving.bundles import BundleRef
from backend.serving.registry import UNTRAINED_VERSION, ModelRegistry, combined_version
from backend.settings import Settings
from backend.store import EventState, Store
from finetune.intake import Intake
from finetune.jobs import TrainingJobs

if TYPE_CHECKING:
    from backend.jobs.loop import Background

log = logging.getLogger(__name__)

_CHUNK = 256  # tasks per ensemble call: bounds memory, and the time past PREDICT_SECONDS a /predict can take


class AnnotationService:
    def __init__(self, settings: Settings | None = None, registry: ModelRegistry | None = None,
                 store: Store | None = None, background: bool = True, pushing: bool = False):
        self.settings = settings or Settings.from_env()
        self.registry = registry or ModelRegistry(self.settings)
        self.store = store or Store(self.settings.database_url)
        self.intake = Intake(self.store, self.settings, self._project_has_bundle)
        self.review = HardSampleReview(self.settings, self.store.engine)
        self.jobs = TrainingJobs(self.store, self.settings)
        self.review_jobs = ReviewJobs(self.store, self.settings)
        self.pushes = PushJobs(self.store, self.settings)
        self.planner = SetupPlanner(self.settings)
        self._background: Background | None = None
        self.background = background  # False for one-shot commands (prelabel): no learning or review threads
        self.pushing = pushing  # predicts what `backend.push` pushes: no PREDICT_SECONDS cut, no task held back
        self._background_lock = threading.Lock()
        self._authorizing: set[str] = set()  # projects whose Label Studio webhook is getting our credentials
        self._authorized: set[str] = set()  # … and those where this process saw it done

    def _ensure_background(self) -> None:
        """Start the process's background loop once, lazily (threads do not survive gunicorn's fork), and wake it:
        replay of stored webhook events, training stages, LLM review batches (`backend.jobs.loop`)."""
        if not self.background:
            return
        bg = self._background
        if bg is None or bg.pid != os.getpid() or not bg.is_alive():
            with self._background_lock:
                bg = self._background
                if bg is None or bg.pid != os.getpid() or not bg.is_alive():
                    from backend.jobs.loop import Background
                    from backend.push import PushChore
                    from backend.review.jobs import ReviewChore
                    from finetune.worker import TrainingChore

                    bg = Background([("replay", lambda: bool(self.replay_events())),
                                     ("training", TrainingChore(self.settings, self.store)),
                                     ("review", ReviewChore(self.settings, self.store, self.review)),
                                     ("push", PushChore(self.settings, self.store, self.for_pushes))],
                                    interval=min(self.settings.dispatch_seconds, 1.0))
                    bg.start()
                    self._background = bg
        bg.wake.set()

    @classmethod
    def for_pushing(cls, settings: Settings, store: Store | None = None,
                    registry: ModelRegistry | None = None) -> AnnotationService:
        """A service that predicts what `backend.push` pushes: LLM review inline (a pushed prediction is final), no
        PREDICT_SECONDS cut, no background loop of its own."""
        return cls(settings.with_(review_mode="inline"), registry=registry, store=store, background=False,
                   pushing=True)

    def for_pushes(self) -> AnnotationService:
        """`for_pushing` with this service's models and database."""
        return self.for_pushing(self.settings, self.store, self.registry)

    @property
    def defer_review(self) -> bool:
        return self.settings.review_mode.strip().lower() == "async"

    def project(self, project: Any) -> str:
        """The key this project's data is kept under (backend/store/ `project_for`): the Label Studio id, told
        apart from a project of the same id in another Label Studio by its creation time."""
        return self.store.project_for(*payload.project_ref(project))

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
        """Each control's serving bundle (`ModelRegistry.served`)."""
        return self.registry.served(space, self.project(project))

    def _note(self, project: Any, space: LabelSpace, resolved: list, label_config: str) -> str:
        version = combined_version([r for _, r in resolved if r is not None])
        controls = [{"control": c.name, "labels": list(c.labels), "multiple": c.multiple,
                     "bundle_key": r.key if r else c.bundle_key, "model_version": r.version if r else None}
                    for c, r in resolved]
        self.store.note_project(self.project(project), space.config_hash, version, controls, list(space.unsupported),
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
        self._ensure_background()  # also runs review jobs left by a previous process, retries pushes
        space = self._space(label_config)
        resolved = self._resolve(project, space)
        version = self._note(project, space, resolved, label_config)
        self.registry.warm([r for _, r in resolved if r is not None])
        self._authorize_webhooks(self.project(project))
        out: dict[str, Any] = {"model_version": version}
        missing = [c.name for c, r in resolved if r is None]
        if missing:
            out["untrained_controls"] = missing
            planning = self.planner.on_setup(self.project(project), [c for c, r in resolved if r is None]) \
                if self.background else []
            if planning:
                out["planning"] = planning
        if space.unsupported:
            out["unsupported"] = list(space.unsupported)
        return out

    def predict(self, tasks: Any, label_config: Any, project: Any = None,
                context: Any = None) -> list[dict[str, Any] | list]:
        """One item per task, in order: a prediction dict, or [] when no control has a bundle, when PREDICT_SECONDS
        ran out before the task (`_defer`), or when its prediction is already on its way to Label Studio."""
        received = time.monotonic()
        if not isinstance(tasks, list):
            raise ApiError("'tasks' must be a list of Label Studio tasks", status=400)
        if len(tasks) > self.settings.max_tasks_per_request:
            raise PayloadTooLarge(f"{len(tasks)} tasks in one request; the limit is "
                                  f"{self.settings.max_tasks_per_request} (MAX_TASKS_PER_REQUEST)")
        odd = [t["id"] for t in tasks if isinstance(t, dict) and t.get("id") is not None
               and payload.task_id(t["id"]) is None]
        if odd:
            raise InvalidTasks(f"task ids must be whole numbers from 0 to {payload.MAX_ID}; got {odd[:5]}",
                               tasks=[repr(i)[:40] for i in odd[:100]])
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
        pid = self.project(project)
        first = texts_by_control[served[0][0].name]
        # What the project's texts look like, for the domain router (backend/specialists/domain.py).
        if pid != "unknown":
            self.store.note_texts(pid, [(t["id"], x) for t, x in zip(tasks, first, strict=True)
                                        if isinstance(t.get("id"), int) and x])
        ls_id = self._ls_project(project)
        held = self.pushes.held(ls_id, version) if ls_id is not None and not self.pushing else set()
        todo = [i for i, t in enumerate(tasks) if t.get("id") not in held] if held else list(range(len(tasks)))
        models = [(control, self.registry.ensemble(ref), self.registry.columns(ref, control) or [])
                  for control, ref in served]
        defer = self.defer_review
        started = time.monotonic()  # models loaded: the pace of the work is counted from here
        # PREDICT_SECONDS bounds the whole answer, LLM_INLINE_SECONDS the LLM's part of it.
        answer_by = received + (self.settings.predict_seconds if not self.pushing else float("inf"))
        deadline = min(started + self.settings.llm_inline_seconds, answer_by)
        queued = 0
        regions: list[list[dict[str, Any]]] = [[] for _ in tasks]
        scores: list[list[float]] = [[] for _ in tasks]
        pos, last = 0, 0.0
        while pos < len(todo):
            size = min(_CHUNK, len(todo) - pos)
            if pos:  # as many tasks as the slower of the average and the last chunk's pace leaves time for
                per_task = max((time.monotonic() - started) / pos, last)
                size = min(size, int((answer_by - time.monotonic()) / per_task)) if per_task > 0 else size
                if size < 1:
                    break
            chunk_started = time.monotonic()
            part = todo[pos:pos + size]
            part_tasks = [tasks[i] for i in part]
            ids = [t.get("id") if isinstance(t.get("id"), int) else None for t in part_tasks]
            audited = self._audited(pid, part_tasks)
            for control, ensemble, columns in models:
                idx, names = [c for c, _ in columns], [n for _, n in columns]
                texts = texts_by_control[control.name]
                chunk = [texts[i] for i in part]
                decisions = ensemble.predict(chunk, idx)
                outcomes = self.review.apply(pid, control.multiple, names, chunk, decisions,
                                             examples=lambda c=control: self._examples(pid, c.name), defer=defer,
                                             audited=audited, control=control.name, task_ids=ids, deadline=deadline)
                records, pending = [], []
                for i, d, o in zip(part, decisions, outcomes, strict=True):
                    scores[i].append(o.score)
                    metrics.CONFIDENCE.observe(d.confidence)
                    if o.labels:
                        regions[i].append(self._region(control, o.labels, o.score))
                    records.append(self._provenance(pid, tasks[i], control.name, version, names, d, o))
                    if o.route == RouteName.LLM and isinstance(tasks[i].get("id"), int):
                        self.intake.corrections.record_llm(pid, tasks[i]["id"], control.name, o.labels[0], texts[i],
                                                           self.settings.llm_model)
                    if o.route == RouteName.PENDING and isinstance(tasks[i].get("id"), int):
                        pending.append({"task_id": tasks[i]["id"], "text": texts[i], "to_name": control.to_name,
                                        "confidence": d.confidence, "probabilities": list(d.probabilities),
                                        "labels": o.labels, "score": o.score, "reason": o.reason,
                                        "audit": o.audit})
                self.store.save_provenance([r for r in records if r is not None])
                if pending:  # written before /predict answers: nothing is lost if the process dies
                    self.review_jobs.request(pid, control.name, version, control.multiple, names, pending)
                    queued += len(pending)
                metrics.TASKS_PREDICTED.labels(control.name).inc(len(part))
            pos += len(part)
            last = (time.monotonic() - chunk_started) / len(part)
        if pos < len(todo):
            self._defer(pid, ls_id, version, [tasks[i] for i in todo[pos:]])
        metrics.BUNDLES_LOADED.set(len(self.registry.loaded()))
        if queued:
            self._ensure_background()
        return [{"model_version": version, "score": round(min(s), 4), "result": r} if s else []
                for r, s in zip(regions, scores, strict=True)]

    def _ls_project(self, project: Any) -> int | None:
        """The Label Studio id of the project a request names, when it is one (predictions can be pushed to it)."""
        key = payload.project_ref(project)[0]
        return int(key) if key.isdigit() and len(key) <= 12 else None

    def _defer(self, pid: str, ls_id: int | None, version: str, tasks: list[dict[str, Any]]) -> None:
        """Tasks PREDICT_SECONDS left unpredicted, answered empty: pushed to Label Studio once predicted, or, with
        nothing to push to, their features computed so that the next "Retrieve predictions" is answered from the
        store. Their progress is in /jobs."""
        keep = [{"id": t["id"], "data": t.get("data") or {}} for t in tasks if isinstance(t.get("id"), int)]
        s = self.settings
        kind = PushKind.RETRIEVE if s.label_studio_url and s.label_studio_api_key and ls_id is not None \
            else PushKind.WARM
        if keep:
            self.pushes.write(pid, ls_id or 0, version, keep, RETRIEVE_CHUNK, kind=kind)
            self._ensure_background()
        metrics.TASKS_DEFERRED.labels(kind).inc(len(tasks))
        log.info("project %s: %d tasks not predicted within PREDICT_SECONDS (%s s) were answered empty; %s",
                 pid, len(tasks), s.predict_seconds,
                 "their predictions are pushed when ready" if kind == PushKind.RETRIEVE else
                 "their features are computed for the next request (no LABEL_STUDIO_URL/KEY to push to)")

    def compute_features(self, tasks: list[dict[str, Any]], label_config: str, project: Any = None) -> int:
        """Run the ensembles over the tasks' texts only (no routing, no review, nothing recorded): what they
        compute per text lands in the feature store. Returns how many tasks were run."""
        space = self._space(label_config)
        done = 0
        for control, ref in self._resolve(project, space):
            if ref is None:
                continue
            columns = self.registry.columns(ref, control) or []
            texts = self._texts(tasks, control)
            for start in range(0, len(texts), _CHUNK):
                self.registry.ensemble(ref).predict(texts[start:start + _CHUNK], [c for c, _ in columns])
            done = len(texts)
        return done

    def fit(self, event: str, data: dict[str, Any] | None, raw: str, problem: str | None = None) -> dict[str, Any]:
        """Store the event first, whatever it holds; then check it and turn it into corrections and training
        requests (training runs elsewhere). A body Label Studio would not send is kept and answered 400; a
        failure on our side is kept as FAILED and retried by the learning loop."""
        event_id = self.store.record_event(event, raw, data)
        metrics.WEBHOOK_EVENTS.labels(payload.storable(event)[:64]).inc()
        if problem is None:
            problem = payload.webhook_problem(data) if isinstance(data, dict) else \
                "webhook body must be a JSON object with an 'action'"
        if problem:
            self.store.finish_event(event_id, EventState.REJECTED, problem)
            raise ApiError(problem, status=400, event_id=event_id)
        return self._apply(event_id, event, data)

    def unauthenticated_webhook(self, raw: bytes) -> int:
        """A webhook without valid credentials: stored as UNAUTHENTICATED (never applied), counted and logged."""
        text = raw.decode("utf-8", errors="replace")
        try:
            data = payload.loads(raw)
        except ApiError:
            data = None
        action = data.get("action") if isinstance(data, dict) else None
        event_id = self.store.record_event(action if isinstance(action, str) and action else "INVALID_PAYLOAD", text,
                                           data if isinstance(data, dict) else None, EventState.UNAUTHENTICATED)
        metrics.WEBHOOKS_UNAUTHENTICATED.inc()
        try:
            pid = payload.project_key(data.get("project")) if isinstance(data, dict) else "unknown"
        except ApiError:
            pid = "unknown"
        self._authorize_webhooks(pid, again=True)  # the header is missing again: set it, then apply what came
        log.warning("webhook %s without valid credentials stored as event %s and not applied: Label Studio sends "
                    "its ML webhook without headers unless they are set on it", payload.storable(str(action))[:64],
                    event_id)
        return event_id

    def _authorize_webhooks(self, pid: str, again: bool = False) -> None:
        """Basic auth on and Label Studio reachable: once per project and process, put our credentials on its ML
        webhook (in the background: Label Studio makes the webhook only after /setup validated the backend),
        then apply the annotations that arrived without them, once Label Studio confirms each one."""
        s = self.settings
        if not (s.auth_enabled and s.label_studio_url and s.label_studio_api_key and self.background and pid.isdigit()):
            return
        with self._background_lock:
            if pid in self._authorizing or (pid in self._authorized and not again):
                return
            self._authorizing.add(pid)
        threading.Thread(target=self._authorize_loop, args=(pid,), daemon=True,
                         name=f"autoannotator-webhook-auth-{pid}").start()

    def _authorize_loop(self, pid: str) -> None:
        import base64

        from backend.labelstudio.client import LabelStudioClient

        creds = f"{self.settings.basic_auth_user}:{self.settings.basic_auth_pass}".encode()
        header = "Basic " + base64.b64encode(creds).decode()
        try:
            client = LabelStudioClient.from_settings(self.settings)
            for delay in (0.5, 2, 5, 10, 20, 40):
                time.sleep(delay)
                if client.authorize_webhooks(int(pid), self.settings.basic_auth_user, header):
                    self._authorized.add(pid)
                    self.recover_unauthenticated(client, pid)
                    return
            log.warning("project %s: no Label Studio webhook of this backend found to set credentials on; "
                        "annotation webhooks are refused until the next /setup", pid)
        except Exception as exc:  # Label Studio down or the key refused: the next /setup or webhook tries again
            log.warning("could not set credentials on project %s's Label Studio webhook: %s", pid, exc)
        finally:
            self._authorizing.discard(pid)

    def recover_unauthenticated(self, client: Any, pid: str) -> int:
        """Annotations that reached /webhook without credentials: applied when Label Studio, asked with our API
        key, returns the same result for that annotation id; the others stay stored, marked why."""
        applied = 0
        for row in self.store.events_in(EventState.UNAUTHENTICATED, pid):
            try:
                data = payload.loads(row["payload"])
            except ApiError:
                continue
            annotation = data.get("annotation") if isinstance(data, dict) else None
            if row["action"] not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED") or not isinstance(annotation, dict) \
                    or payload.webhook_problem(data) or payload.task_id(annotation.get("id")) is None:
                continue
            try:
                real = client.annotation(annotation["id"])
            except Exception as exc:
                log.info("annotation %s of unauthenticated event %s not confirmed: %s", annotation.get("id"),
                         row["id"], exc)
                continue
            if real.get("result") != annotation.get("result"):
                self.store.finish_event(row["id"], EventState.REJECTED, "Label Studio holds another result for "
                                                                          "this annotation")
                continue
            out = self._apply(row["id"], row["action"], data)
            applied += out["status"] == "ok"
        if applied:
            log.info("project %s: %d annotations that came without credentials were confirmed by Label Studio and "
                     "applied", pid, applied)
        return applied

    def _apply(self, event_id: int, event: str, data: dict[str, Any]) -> dict[str, Any]:
        self._ensure_background()
        try:
            out = self.intake.handle(event, data, event_id)
        except Exception as exc:
            # The message may hold SQL and the annotated text: only the kind of failure is kept and answered.
            log.exception("webhook event %s is stored but applying it failed; the learning loop retries it", event_id)
            self.store.finish_event(event_id, EventState.FAILED, type(exc).__name__)
            metrics.WEBHOOK_FAILURES.inc()
            return {"status": "stored", "event_id": event_id, "action": event, "applied": False,
                    "retry": f"applying it failed ({type(exc).__name__}); it is retried"}
        self.store.finish_event(event_id, EventState.APPLIED)
        if "training_job" in out:
            self._ensure_background()
        return {"status": "ok", "event_id": event_id, "action": event, **out}

    def replay_events(self, limit: int = 50) -> int:
        """Apply again what was stored but not applied: FAILED events, and RECEIVED ones whose process died."""
        done = 0
        while done < limit and (row := self.store.claim_event_retry()) is not None:
            done += 1
            try:
                data = payload.loads(row["payload"])
            except ApiError as exc:
                self.store.finish_event(row["id"], EventState.REJECTED, exc.message)
                continue
            problem = payload.webhook_problem(data) if isinstance(data, dict) else "not a JSON object"
            if problem:
                self.store.finish_event(row["id"], EventState.REJECTED, problem)
                continue
            out = self._apply(row["id"], row["action"], data)
            log.info("webhook event %s replayed (attempt %s): %s", row["id"], row["attempts"],
                     "applied" if out["status"] == "ok" else "failed again")
        return done

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
        states = self.store.event_states()
        webhooks: dict[str, Any] = {"events": states}
        last = self.store.last_event(EventState.UNAUTHENTICATED)
        if last:
            webhooks["last_unauthenticated"] = {"event_id": last["id"], "at": last["received_at"],
                                                "action": last["action"], "project": last["project_id"]}
            webhooks["hint"] = ("webhooks arrive without credentials and are not applied: set LABEL_STUDIO_URL and "
                                "LABEL_STUDIO_API_KEY so the backend sets them on its Label Studio webhook")
        if states.get(EventState.FAILED.value):
            webhooks["failed"] = "events stored but not applied yet: the learning loop retries them"
        return {"status": "UP", "model_class": type(self).__name__, "bundles": bundles,
                "loaded": self.registry.loaded(), "projects_without_bundle": untrained,
                "untrained_version": UNTRAINED_VERSION, "learning": learning, "review": review,
                "webhooks": webhooks}

    def provenance(self, task_id: int, project: Any = None) -> list[dict[str, Any]]:
        return self.store.provenance(task_id, self.project(project) if project else None)

    def llm_usage(self, project: Any = None) -> dict[str, Any]:
        pid = self.project(project) if project else None
        return {"project": pid, **self.review.totals(pid), "routes": self.store.route_counts(pid)}

    def trust(self, project: Any) -> dict[str, Any]:
        """The trust ledger of every (control, LLM model) with checks in this project, and the current model's."""
        pid = self.project(project)
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
        pid = self.project(project)
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
