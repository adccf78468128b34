"""`autoannotator prelabel --project ID`: pre-label a whole Label Studio project through the same path as /predict.

Every task without a prediction of the current model_version is predicted in chunks by the service's `predict`
(ensemble, routing, inline LLM review, provenance: the very code /predict runs), then written back: first the
route flag (`autoannotator_route` / `autoannotator_reason` in task.data), then the predictions, in batches. A task
counts as done once it has a prediction of the current version, so an interrupted run resumes where it stopped and
a re-run creates no duplicates (a task flagged but not yet predicted is simply done again). At the end the project's
model_version is aligned with ours (and, with --set-sampling, its sampling set to "Uncertainty sampling"), and a
cost report is printed: tasks per route, LLM calls, tokens and USD.

With `--queue` (and REDIS_URL) the chunks become durable jobs (`PrelabelJobs`) that `autoannotator worker` processes
on any machine sharing the database and Redis take: this command writes them, sends them, reaps the chunks of a
worker that died (no heartbeat for JOB_STALE_SECONDS: sent again, and the retry skips the tasks that already have
their prediction), and waits for them all before aligning the project.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, insert, select
from sqlalchemy.exc import IntegrityError

from backend.decision.states import WAITING, JobState
from backend.jobs.base import DurableJobs, Heartbeat
from backend.labelstudio.client import UNCERTAINTY_SAMPLING, LabelStudioClient, route_of
from backend.settings import Settings
from backend.store import Store, prelabel_jobs

if TYPE_CHECKING:
    from model import AutoAnnotatorModel

log = logging.getLogger(__name__)

_FLAG_THREADS = 8


@dataclass
class Report:
    project: int
    model_version: str = ""
    tasks_seen: int = 0
    skipped: int = 0  # already had a prediction of this version
    prelabelled: int = 0
    untrained: int = 0  # no bundle serves the control: no prediction (tried again next run)
    routes: Counter = field(default_factory=Counter)
    llm_calls: int = 0  # HTTP requests sent to the LLM for this run's tasks
    llm_reviews: int = 0  # tasks the LLM was asked about (cached answers included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    project_llm_totals: dict[str, Any] = field(default_factory=dict)
    aligned: bool = False
    sampling: str | None = None
    interrupted: bool = False
    chunks: dict[str, int] = field(default_factory=dict)  # --queue: chunk jobs by state

    _SUMMED = ("prelabelled", "untrained", "skipped", "llm_calls", "llm_reviews", "prompt_tokens",
               "completion_tokens", "cost_usd")

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "routes"}
        out["routes"] = dict(self.routes)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out

    def add(self, part: dict[str, Any]) -> None:
        """Count a chunk's report (`as_dict`) into this one."""
        for k in self._SUMMED:
            setattr(self, k, getattr(self, k) + part.get(k, 0))
        self.routes.update(part.get("routes") or {})

    def text(self) -> str:
        routes = ", ".join(f"{r} {n}" for r, n in sorted(self.routes.items())) or "none"
        per_1k = 1000 * self.cost_usd / self.prelabelled if self.prelabelled else 0.0
        return (f"project {self.project}, model_version {self.model_version}: {self.prelabelled} pre-labelled, "
                f"{self.skipped} already done, {self.untrained} without a bundle, of {self.tasks_seen} seen"
                f"{' (interrupted: run again to resume)' if self.interrupted else ''}\n"
                f"routes: {routes}\n"
                f"LLM: {self.llm_reviews} reviews, {self.llm_calls} calls, {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, ${self.cost_usd:.6f} (${per_1k:.4f} per 1,000 tasks)\n"
                f"project model_version {'aligned' if self.aligned else 'NOT aligned'}"
                f"{f', sampling {self.sampling!r}' if self.sampling else ''}")


def _service(settings: Settings, store: Store | None = None) -> AutoAnnotatorModel:
    from model import AutoAnnotatorModel

    # The review must be finished before a task counts as done: always inline here.
    return AutoAnnotatorModel(settings.with_(review_mode="inline"), background=False, store=store)


def label_chunk(model: AutoAnnotatorModel, ls: LabelStudioClient, project_id: int, pid: str, label_config: str,
                tasks: list[dict[str, Any]], report: Report, batch: int = 100) -> None:
    """Predict `tasks` ([{id, data}]) through the service, flag each task's route, create the predictions."""
    version = report.model_version
    results = model.predict(tasks, label_config, project=pid)
    predictions, flags = [], []
    for task, pred in zip(tasks, results, strict=True):
        if not pred or not pred.get("result"):
            report.untrained += 1
            continue
        records = [r for r in model.store.provenance(task["id"], pid) if r["model_version"] == pred["model_version"]]
        route, reason = route_of(records)
        flags.append((task["id"], route, reason, task.get("data") or {}))
        report.routes[route] += 1
        for r in records:
            llm = r.get("llm") or {}
            if llm:
                report.llm_reviews += 1
                report.llm_calls += int(llm.get("attempts") or 0)
                report.prompt_tokens += int(llm.get("prompt_tokens") or 0)
                report.completion_tokens += int(llm.get("completion_tokens") or 0)
                report.cost_usd += float(llm.get("cost_usd") or 0.0)
        predictions.append({"task": task["id"], "result": pred["result"], "score": pred["score"],
                            "model_version": pred["model_version"]})
        if pred["model_version"] != version:  # a new version was promoted meanwhile: its predictions count too
            log.info("task %s was predicted by %s, not %s", task["id"], pred["model_version"], version)
    # One PATCH a task is Label Studio's only way to write task.data: several at once, the flags before the
    # predictions, so that a task with its prediction always has its flag.
    with ThreadPoolExecutor(max_workers=_FLAG_THREADS) as pool:
        list(pool.map(lambda f: ls.set_route(f[0], f[1], f[2], data=f[3]), flags))
    ls.create_predictions(project_id, predictions, batch=batch)
    report.prelabelled += len(predictions)


def _open(settings: Settings, project_id: int, ls: LabelStudioClient | None, store: Store | None = None
          ) -> tuple[AutoAnnotatorModel, LabelStudioClient, str, str, Report]:
    ls = ls or LabelStudioClient.from_settings(settings)
    if ls is None:
        raise SystemExit("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to pre-label a Label Studio project")
    model = _service(settings, store)
    project = ls.project(project_id)
    label_config = project.get("label_config") or ""
    # Its data is kept where /predict and the webhooks of this Label Studio keep it.
    pid = model.project({"id": int(project_id), "created_at": project.get("created_at")})
    version = model.setup(pid, label_config)["model_version"]
    return model, ls, pid, label_config, Report(project=int(project_id), model_version=version)


def _bar(progress: bool, total: int | None, project_id: int) -> Any:
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="task", desc=f"prelabel {project_id}", file=sys.stderr)


def _align(ls: LabelStudioClient, project_id: int, report: Report, set_sampling: bool) -> None:
    if not report.interrupted and (report.prelabelled or report.skipped):
        aligned = ls.align_project(project_id, report.model_version, UNCERTAINTY_SAMPLING if set_sampling else None)
        report.aligned = aligned.get("model_version") == report.model_version
        report.sampling = aligned.get("sampling")


def prelabel(settings: Settings, project_id: int, chunk: int = 100, limit: int | None = None,
             set_sampling: bool = False, ls: LabelStudioClient | None = None, progress: bool = True) -> Report:
    """In this process, chunk after chunk."""
    model, ls, pid, label_config, report = _open(settings, project_id, ls)
    bar = _bar(progress, ls.project(project_id).get("task_number"), project_id)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            label_chunk(model, ls, project_id, pid, label_config, batch, report, chunk)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

    try:
        for task in ls.tasks(project_id, page_size=max(chunk, 1)):
            report.tasks_seen += 1
            if any(p.get("model_version") == report.model_version for p in task.get("predictions") or []):
                report.skipped += 1
                if bar is not None:
                    bar.update(1)
                continue
            if limit is not None and report.prelabelled + len(batch) >= limit:
                report.tasks_seen -= 1
                break
            batch.append({"id": task["id"], "data": task.get("data") or {}})
            if len(batch) >= chunk:
                flush()
        flush()
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    report.project_llm_totals = model.review.totals(pid)
    _align(ls, project_id, report, set_sampling)
    return report


# -- spread over rq workers ----------------------------------------------------------------------------------------
class PrelabelJobs(DurableJobs):
    table = prelabel_jobs
    rq_function = "backend.commands.prelabel.run_chunk"
    rq_prefix = "aa-prelabel"
    heavy_columns = ("tasks",)

    def is_stale(self, job: dict[str, Any], now: float) -> bool:
        return (job["heartbeat_at"] or 0) < now - self.settings.job_stale_seconds

    def write(self, pid: str, project_id: int, version: str, tasks: list[dict[str, Any]], chunk: int) -> set[int]:
        """Chunk jobs for the tasks that no chunk of this project and version holds yet; a failed chunk is given
        fresh attempts. Returns the ids of the chunks this run has to wait for: those written and those an earlier
        run left unfinished."""
        with self.store.engine.begin() as conn:
            conn.execute(prelabel_jobs.update().where(and_(
                prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version,
                prelabel_jobs.c.status == JobState.FAILED)).values(status=JobState.PENDING, attempts=0,
                                                                   finished_at=None))
            open_rows = conn.execute(select(prelabel_jobs.c.id, prelabel_jobs.c.tasks).where(and_(
                prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version,
                prelabel_jobs.c.status != JobState.DONE))).all()
        held = {t["id"] for row in open_rows for t in row.tasks}
        ids = {row.id for row in open_rows}
        todo = [t for t in tasks if t["id"] not in held]
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            try:
                with self.store.engine.begin() as conn:
                    ids.add(conn.execute(insert(prelabel_jobs).values(
                        project_id=pid, ls_project=project_id, model_version=version, first_task=part[0]["id"],
                        tasks=part, status=JobState.PENDING, attempts=0, requested_at=time.time())
                    ).inserted_primary_key[0])
            except IntegrityError:  # a done chunk began with this task; its tasks now lack a prediction again
                same = and_(prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version,
                            prelabel_jobs.c.first_task == part[0]["id"])
                with self.store.engine.begin() as conn:
                    conn.execute(prelabel_jobs.update().where(same).values(
                        tasks=part, status=JobState.PENDING, attempts=0, report=None, finished_at=None))
                    ids.update(conn.execute(select(prelabel_jobs.c.id).where(same)).scalars())
        return ids

    def for_run(self, project_id: int, version: str) -> list[dict[str, Any]]:
        q = select(*[c for c in prelabel_jobs.c if c.name != "tasks"]).where(and_(
            prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version))
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def prelabel_queued(settings: Settings, project_id: int, chunk: int = 250, set_sampling: bool = False,
                    ls: LabelStudioClient | None = None, progress: bool = True, wait: bool = True,
                    poll_seconds: float = 1.0) -> Report:
    """Write the project's chunks as jobs for `autoannotator worker` processes, then (with `wait`) follow them."""
    if not settings.redis_url:
        raise SystemExit("--queue needs REDIS_URL (and `autoannotator worker` processes sharing DATABASE_URL)")
    model, ls, pid, _, report = _open(settings, project_id, ls)
    version = report.model_version
    jobs = PrelabelJobs(model.store, settings)
    todo = []
    for task in ls.tasks(project_id, page_size=max(chunk, 100)):
        report.tasks_seen += 1
        if any(p.get("model_version") == version for p in task.get("predictions") or []):
            report.skipped += 1
        else:
            todo.append({"id": task["id"], "data": task.get("data") or {}})
    jobs.reap()  # chunks a dead worker of an earlier run left
    mine = jobs.write(pid, project_id, version, todo, max(chunk, 1))
    jobs.dispatch()
    bar = _bar(progress and wait, len(todo), project_id)
    try:
        while wait:
            jobs.reap()
            jobs.dispatch()
            rows = jobs.for_run(project_id, version)
            left = [r for r in rows if r["status"] in (*WAITING, JobState.RUNNING)]
            if bar is not None:
                bar.n = sum(len_tasks(r) for r in rows if r["status"] == JobState.DONE)
                bar.refresh()
            if not left:
                break
            time.sleep(poll_seconds)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    rows = jobs.for_run(project_id, version)
    report.chunks = dict(Counter(str(r["status"]) for r in rows))
    for r in rows:  # chunks an earlier run finished are counted among `skipped` already
        if r["id"] in mine and r["status"] == JobState.DONE and r["report"]:
            report.add(r["report"])
    report.interrupted = report.interrupted or not wait or any(r["status"] != JobState.DONE for r in rows)
    report.project_llm_totals = model.review.totals(pid)
    _align(ls, project_id, report, set_sampling)
    return report


def len_tasks(row: dict[str, Any]) -> int:
    rep = row.get("report") or {}
    return int(rep.get("prelabelled", 0)) + int(rep.get("untrained", 0)) + int(rep.get("skipped", 0))


def execute_chunk(job_id: int, settings: Settings, store: Store, ls: LabelStudioClient | None = None) -> str:
    """Pre-label one chunk job to its end. A retry (a worker died mid-chunk) skips the tasks that already have a
    prediction of the version, so nothing is predicted twice."""
    jobs = PrelabelJobs(store, settings)
    if not jobs.claim(job_id):
        return "not claimed"
    job = jobs.get(job_id)
    assert job is not None
    beat = Heartbeat(jobs, job_id, max(0.5, settings.job_stale_seconds / 4))
    beat.start()
    try:
        ls = ls or LabelStudioClient.from_settings(settings)
        if ls is None:
            raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set on this worker")
        model = _service(settings, store)
        project = store.project(job["project_id"]) or {}
        label_config = project.get("label_config") or ls.project(job["ls_project"]).get("label_config") or ""
        report = Report(project=job["ls_project"], model_version=job["model_version"])
        tasks = list(job["tasks"])
        if job["attempts"] > 1:
            done = {t["id"] for t in tasks
                    if any(p.get("model_version") == job["model_version"] for p in ls.predictions(t["id"]))}
            report.skipped = len(done)
            tasks = [t for t in tasks if t["id"] not in done]
        if tasks:
            label_chunk(model, ls, job["ls_project"], job["project_id"], label_config, tasks, report)
        jobs.set(job_id, JobState.RUNNING, status=JobState.DONE, report=report.as_dict(), error=None,
                 finished_at=time.time())
        return JobState.DONE
    except Exception as exc:
        log.exception("prelabel chunk %s failed", job_id)
        return jobs.retry_or_fail(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    finally:
        beat.stopped.set()


def run_chunk(job_id: int) -> str:
    """The rq job function: everything comes from the environment, like the server's."""
    settings = Settings.from_env()
    return execute_chunk(job_id, settings, Store(settings.database_url))
