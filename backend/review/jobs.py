"""Asynchronous review of hard samples (REVIEW_MODE=async): /predict answers at once with the ensemble's labels
(hard samples get the human-side score and the provenance route "pending"), and the LLM reviews them here.

The durable record is a row of `review_jobs`, written before /predict answers, as with training jobs: with
REDIS_URL the row is sent to rq (`autoannotator worker` runs it), without it the server's background loop takes it.
A job reviews its items, rewrites their provenance (route llm or human, the LLM's answer, tokens, cost), records
LLM-settled labels as lower-trust corrections, then pushes the outcome to Label Studio when LABEL_STUDIO_URL and
LABEL_STUDIO_API_KEY are set: the LLM's label into the task's prediction of this model version (updated in place,
or created when Label Studio has none yet) and the route flag `autoannotator_route` for every reviewed task.
A push that fails (Label Studio down, a 5xx) leaves the job `push_failed`, notes it on the provenance (`llm.push`),
and is retried every REVIEW_PUSH_RETRY_SECONDS — the review itself is never redone — up to
REVIEW_PUSH_MAX_ATTEMPTS; `GET /review/jobs` reports what is left.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from backend.decision.states import JobState, RouteName
from backend.jobs.base import DurableJobs
from backend.review.triage import HardSampleReview, Outcome
from backend.settings import Settings
from backend.store import Store, provenance, review_jobs

if TYPE_CHECKING:
    from backend.labelstudio.client import LabelStudioClient

log = logging.getLogger(__name__)

_SETTLE_DELAY_S = 1.0  # let Label Studio store the /predict answer before a job may update it


class ReviewJobs(DurableJobs):
    table = review_jobs
    rq_function = "backend.review.jobs.run_review_job"
    rq_prefix = "aa-review"
    heavy_columns = ("items", "results", "names")

    def request(self, project_id: str, control: str, model_version: str, multiple: bool, names: list[str],
                items: list[dict[str, Any]]) -> int:
        """Write the job (no Redis call here: /predict must stay fast); the loop or an rq worker takes it."""
        with self.store.engine.begin() as conn:
            return int(conn.execute(insert(review_jobs).values(
                project_id=project_id, control=control, model_version=model_version, multiple=multiple,
                names=names, items=items, status=JobState.PENDING, attempts=0, push_attempts=0,
                requested_at=time.time())).inserted_primary_key[0])

    def is_stale(self, job: dict[str, Any], now: float) -> bool:
        """Far past any review's time budget."""
        budget = 2 * self.settings.llm_batch_seconds + self.settings.job_stale_seconds
        return (job["started_at"] or 0) < now - budget

    def due_pushes(self) -> list[int]:
        now = time.time()
        return [j["id"] for j in self.list(status=JobState.PUSH_FAILED, brief=True)
                if j["push_attempts"] < self.settings.review_push_max_attempts and (j["next_push_at"] or 0) <= now]


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
            jobs.set(job_id, results=results)
            job["results"] = results
    except Exception as exc:
        log.exception("review job %s failed", job_id)
        jobs.retry_or_fail(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
        return "failed"
    return push(job_id, settings, store, ls)


def _review(job: dict[str, Any], settings: Settings, store: Store, review: HardSampleReview) -> list[dict]:
    from finetune.corrections import CorrectionLog

    pid, control, names, items = job["project_id"], job["control"], list(job["names"]), job["items"]
    corrections = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
    shots = review.examples_for((pid, control), lambda: [
        r for r in corrections.rows(pid, control)
        if r["source"] == "human" and not r["holdout"] and len(r["choices"]) == 1])
    pending = [Outcome(list(it["labels"]), float(it["score"]), RouteName.PENDING, it["reason"]) for it in items]
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
        if o.route == RouteName.LLM:
            corrections.record_llm(pid, it["task_id"], control, o.labels[0], it["text"], settings.llm_model)
    return results


def push(job_id: int, settings: Settings, store: Store, ls: LabelStudioClient | None = None) -> str:
    """Push a reviewed job's outcome to Label Studio; idempotent, so a retry after a partial push is safe."""
    from backend.labelstudio.client import LabelStudioClient, route_of

    jobs = ReviewJobs(store, settings)
    job = jobs.get(job_id)
    if job is None or job["results"] is None:
        return "not reviewed"
    ls = ls or LabelStudioClient.from_settings(settings)
    if ls is None:
        jobs.set(job_id, status=JobState.DONE, pushed="skipped", finished_at=time.time())
        return JobState.DONE
    pid, control, version = job["project_id"], job["control"], job["model_version"]
    to_name = job["items"][0].get("to_name", "text") if job["items"] else "text"
    try:
        for res in job["results"]:
            tid = int(res["task_id"])
            if res["route"] == RouteName.LLM:
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
        jobs.set(job_id, status=JobState.PUSH_FAILED, push_attempts=attempts, error=why,
                  next_push_at=time.time() + settings.review_push_retry_seconds)
        return JobState.PUSH_FAILED
    _note_push(store, job, None)
    jobs.set(job_id, status=JobState.DONE, pushed="yes", error=None, finished_at=time.time())
    return JobState.DONE


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
    """Say on each reviewed task's provenance whether its push to Label Studio is still owed (`llm.push`)."""
    where = [provenance.c.project_id == job["project_id"], provenance.c.control == job["control"],
             provenance.c.model_version == job["model_version"]]
    with store.engine.begin() as conn:
        for res in job["results"]:
            row = conn.execute(select(provenance.c.id, provenance.c.llm).where(
                *where, provenance.c.task_id == res["task_id"])).first()
            if row is None:
                continue
            llm = dict(row.llm or {})
            llm["push"] = {"pushed": why is None, "error": why}
            conn.execute(update(provenance).where(provenance.c.id == row.id).values(llm=llm))


def run_review_job(job_id: int) -> str:
    """The rq job function: everything comes from the environment, like the server's."""
    settings = Settings.from_env()
    return execute(job_id, settings, Store(settings.database_url))


class ReviewChore:
    """The server loop's review turn: with REDIS_URL send pending jobs to rq, else run one here; retry due pushes."""

    def __init__(self, settings: Settings, store: Store, review: HardSampleReview):
        self.settings, self.store, self.review = settings, store, review
        self.jobs = ReviewJobs(store, settings)

    def __call__(self) -> bool:
        busy = False
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
        return busy
