"""Asynchronous review of hard samples (REVIEW_MODE=async): /predict answers at once with the ensemble's labels
(hard samples get the human-side score and the provenance route "pending"), and the LLM reviews them here.

The durable record is a row of `review_jobs`, written before /predict answers, as with training jobs: with
REDIS_URL the row is sent to rq (`autoannotator worker` runs it), without it a thread of the server takes it.
A job reviews its items, rewrites their provenance (route llm or human, the LLM's answer, tokens, cost), records
LLM-settled labels as lower-trust corrections, then pushes the outcome to Label Studio when LABEL_STUDIO_URL and
LABEL_STUDIO_API_KEY are set: the LLM's label into the task's prediction of this model version (updated in place,
or created when Label Studio has none yet) and the route flag `autoannotator_route` for every reviewed task.
A push that fails (Label Studio down, a 5xx) leaves the job `push_failed`, notes it in the provenance reason,
and is retried every REVIEW_PUSH_RETRY_SECONDS — the review itself is never redone — up to
REVIEW_PUSH_MAX_ATTEMPTS; `GET /review/jobs` reports what is left.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, select, update

from backend.review import HardSampleReview, Outcome
from backend.rq_sender import RqSender
from backend.settings import Settings
from backend.store import Store, provenance, review_jobs

if TYPE_CHECKING:
    from backend.labelstudio import LabelStudioClient

log = logging.getLogger(__name__)

WAITING = ("pending", "queued")
_PUSH_NOTE = "; not yet pushed to Label Studio: "
_SETTLE_DELAY_S = 1.0  # let Label Studio store the /predict answer before a job may update it


class ReviewJobs:
    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.settings = settings
        self.sender = RqSender(settings)

    # -- asking for work ------------------------------------------------------------------------
    def request(self, project_id: str, control: str, model_version: str, multiple: bool, names: list[str],
                items: list[dict[str, Any]]) -> int:
        """Write the job (no Redis call here: /predict must stay fast); the worker or dispatcher takes it."""
        with self.store.engine.begin() as conn:
            return int(conn.execute(insert(review_jobs).values(
                project_id=project_id, control=control, model_version=model_version, multiple=multiple,
                names=names, items=items, status="pending", attempts=0, push_attempts=0,
                requested_at=time.time())).inserted_primary_key[0])

    def dispatch(self) -> int:
        """Send pending jobs to rq; a no-op without REDIS_URL (the server's review thread runs them)."""
        return self.sender.send(self.list(status="pending"), "backend.review_jobs.run_review_job", "aa-review",
                                lambda job_id, rq_id: self._set(job_id, "pending", status="queued", rq_job_id=rq_id))

    # -- doing work -----------------------------------------------------------------------------
    def claim(self, job_id: int) -> bool:
        now = time.time()
        with self.store.engine.begin() as conn:
            done = conn.execute(update(review_jobs).where(and_(
                review_jobs.c.id == job_id, review_jobs.c.status.in_(WAITING))).values(
                status="running", attempts=review_jobs.c.attempts + 1, started_at=now))
            return done.rowcount == 1

    def claim_next(self, older_than: float = 0.0) -> int | None:
        cutoff = time.time() - older_than
        for job in sorted(self.list(status="pending"), key=lambda j: j["id"]):
            if job["requested_at"] <= cutoff and self.claim(job["id"]):
                return job["id"]
        return None

    def due_pushes(self) -> list[int]:
        now = time.time()
        return [j["id"] for j in self.list(status="push_failed")
                if j["push_attempts"] < self.settings.review_push_max_attempts and (j["next_push_at"] or 0) <= now]

    def reap(self) -> int:
        """Running jobs whose process died (far past any review's time budget) go back to pending, or fail."""
        cutoff = time.time() - (2 * self.settings.llm_batch_seconds + self.settings.job_stale_seconds)
        stale = [j for j in self.list(status="running") if (j["started_at"] or 0) < cutoff]
        for job in stale:
            status = "pending" if job["attempts"] < self.settings.job_max_attempts else "failed"
            self._set(job["id"], "running", status=status, error=f"worker lost during attempt {job['attempts']}")
        return len(stale)

    def _set(self, job_id: int, expect: str | None = None, **values: Any) -> None:
        q = update(review_jobs).where(review_jobs.c.id == job_id)
        if expect:
            q = q.where(review_jobs.c.status == expect)
        with self.store.engine.begin() as conn:
            conn.execute(q.values(**values))

    # -- reading --------------------------------------------------------------------------------
    def get(self, job_id: int) -> dict[str, Any] | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(review_jobs).where(review_jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list(self, project_id: str | None = None, status: str | None = None, limit: int = 1000,
             brief: bool = False) -> list[dict[str, Any]]:
        cols = [c for c in review_jobs.c if not brief or c.name not in ("items", "results", "names")]
        q = select(*cols).order_by(review_jobs.c.id.desc()).limit(limit)
        if project_id:
            q = q.where(review_jobs.c.project_id == project_id)
        if status:
            q = q.where(review_jobs.c.status == status)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for j in self.list(limit=100_000, brief=True):
            out[j["status"]] = out.get(j["status"], 0) + 1
        return out


# -- one job ----------------------------------------------------------------------------------------
def execute(job_id: int, settings: Settings, store: Store, review: HardSampleReview | None = None,
            ls: LabelStudioClient | None = None, claimed: bool = False) -> str:
    """Review a claimed job's items (unless already reviewed), save provenance, push to Label Studio."""
    jobs = ReviewJobs(store, settings)
    if not claimed and not jobs.claim(job_id):
        return "not claimed"
    job = jobs.get(job_id)
    if job is None:
        return "missing"
    try:
        if job["results"] is None:
            review = review or HardSampleReview(settings, store.engine)
            results = _review(job, settings, store, review)
            jobs._set(job_id, results=results)
            job["results"] = results
    except Exception as exc:
        log.exception("review job %s failed", job_id)
        status = "pending" if job["attempts"] < settings.job_max_attempts else "failed"
        jobs._set(job_id, status=status, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return "failed"
    return push(job_id, settings, store, ls)


def _review(job: dict[str, Any], settings: Settings, store: Store, review: HardSampleReview) -> list[dict]:
    from finetune.corrections import CorrectionLog

    pid, control, names, items = job["project_id"], job["control"], list(job["names"]), job["items"]
    corrections = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
    shots = review.examples_for((pid, control), lambda: [
        r for r in corrections.rows(pid, control)
        if r["source"] == "human" and not r["holdout"] and len(r["choices"]) == 1])
    pending = [Outcome(list(it["labels"]), float(it["score"]), "pending", it["reason"]) for it in items]
    outcomes = review.settle(pid, names, [it["text"] for it in items],
                             [(float(it["confidence"]), it["probabilities"]) for it in items], pending, shots,
                             settings.llm_batch_seconds, control=control,
                             audits=[bool(it.get("audit")) for it in items])
    review.count(outcomes)
    results = []
    with store.engine.begin() as conn:
        for it, o in zip(items, outcomes, strict=True):
            conn.execute(update(provenance).where(
                provenance.c.project_id == pid, provenance.c.task_id == it["task_id"],
                provenance.c.control == control, provenance.c.model_version == job["model_version"]).values(
                route=o.route, reason=o.reason[:2000], labels=o.labels, score=o.score,
                llm={**o.review.as_dict(), "audit": o.audit} if o.review is not None else None))
            results.append({"task_id": it["task_id"], "route": o.route, "labels": o.labels, "score": o.score,
                            "reason": o.reason[:2000]})
    for it, o in zip(items, outcomes, strict=True):
        if o.route == "llm":
            corrections.record_llm(pid, it["task_id"], control, o.labels[0], it["text"], settings.llm_model)
    return results


def push(job_id: int, settings: Settings, store: Store, ls: LabelStudioClient | None = None) -> str:
    """Push a reviewed job's outcome to Label Studio; idempotent, so a retry after a partial push is safe."""
    from backend.labelstudio import LabelStudioClient, route_of

    jobs = ReviewJobs(store, settings)
    job = jobs.get(job_id)
    if job is None or job["results"] is None:
        return "not reviewed"
    ls = ls or LabelStudioClient.from_settings(settings)
    if ls is None:
        jobs._set(job_id, status="done", pushed="skipped", finished_at=time.time())
        return "done"
    pid, control, version = job["project_id"], job["control"], job["model_version"]
    to_name = job["items"][0].get("to_name", "text") if job["items"] else "text"
    try:
        for res in job["results"]:
            tid = int(res["task_id"])
            if res["route"] == "llm":
                region = {"id": uuid.uuid4().hex[:10], "from_name": control, "to_name": to_name, "type": "choices",
                          "value": {"choices": res["labels"]}, "score": res["score"]}
                _put_prediction(ls, tid, region, res["score"], version)
            records = [r for r in store.provenance(tid, pid) if r["model_version"] == version]
            route, reason = route_of(records)
            ls.set_route(tid, route, reason)
    except Exception as exc:
        attempts = job["push_attempts"] + 1
        why = f"{type(exc).__name__}: {str(exc)[:300]}"
        log.warning("review job %s: push to Label Studio failed (attempt %d): %s", job_id, attempts, why)
        _note_push(store, job, why)
        jobs._set(job_id, status="push_failed", push_attempts=attempts, error=why,
                  next_push_at=time.time() + settings.review_push_retry_seconds)
        return "push_failed"
    _note_push(store, job, None)
    jobs._set(job_id, status="done", pushed="yes", error=None, finished_at=time.time())
    return "done"


def _put_prediction(ls: LabelStudioClient, task_id: int, region: dict[str, Any], score: float, version: str) -> None:
    """The LLM's label into the task's prediction of this version (one per task and version, so the score column,
    an average over them, stays the task's own), or a new prediction when Label Studio stored none."""
    ours = [p for p in ls.predictions(task_id) if p.get("model_version") == version]
    if not ours:
        ls.create_prediction(task_id, [region], score, version)
        return
    newest = max(ours, key=lambda p: p["id"])
    result = [r for r in newest.get("result") or [] if r.get("from_name") != region["from_name"]] + [region]
    scores = [r["score"] for r in result if isinstance(r.get("score"), (int, float))]
    ls.sdk.predictions.update(id=int(newest["id"]), result=result, score=min(scores) if scores else score,
                              model_version=version)
    for extra in ours:  # a duplicate of the same version would drag the averaged score
        if extra["id"] != newest["id"]:
            ls.delete_prediction(extra["id"])


def _note_push(store: Store, job: dict[str, Any], why: str | None) -> None:
    with store.engine.begin() as conn:
        for res in job["results"]:
            base = res["reason"].split(_PUSH_NOTE)[0]
            conn.execute(update(provenance).where(
                provenance.c.project_id == job["project_id"], provenance.c.task_id == res["task_id"],
                provenance.c.control == job["control"], provenance.c.model_version == job["model_version"]).values(
                reason=(base + (_PUSH_NOTE + why if why else ""))[:2000]))


def run_review_job(job_id: int) -> str:
    """The rq job function: everything comes from the environment, like the server's."""
    settings = Settings.from_env()
    return execute(job_id, settings, Store(settings.database_url))


class ReviewWorker(threading.Thread):
    """Per server process: sends pending jobs to rq (with REDIS_URL) or runs them here; retries failed pushes."""

    def __init__(self, settings: Settings, store: Store, review: HardSampleReview):
        super().__init__(name="autoannotator-review", daemon=True)
        self.settings, self.store, self.review = settings, store, review
        self.jobs = ReviewJobs(store, settings)
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.pid = os.getpid()

    def run(self) -> None:
        while not self.stopped.is_set():
            busy = False
            try:
                self.jobs.reap()
                if self.settings.redis_url:
                    self.jobs.dispatch()
                else:
                    job_id = self.jobs.claim_next(older_than=_SETTLE_DELAY_S)
                    if job_id is not None:
                        execute(job_id, self.settings, self.store, self.review, claimed=True)
                        busy = True
                for job_id in self.jobs.due_pushes():
                    push(job_id, self.settings, self.store)
            except Exception:
                log.exception("review loop iteration failed")
            if busy:
                continue
            self.wake.wait(min(self.settings.dispatch_seconds, _SETTLE_DELAY_S))
            self.wake.clear()
