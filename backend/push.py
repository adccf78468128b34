"""Predictions written into Label Studio after the fact, chunk by chunk, as durable jobs.

Three things push predictions instead of answering them (`PushKind`):
- `autoannotator prelabel`: a whole project, each task's route flag, then its prediction;
- a /predict that PREDICT_SECONDS cuts short: Label Studio keeps nothing of a /predict that passes its timeout, so
  the tasks not predicted in time are answered empty and their predictions pushed when ready;
- a promotion: the project's predicted tasks are scored again (their features come from the store, so only heads
  run) and a prediction of the new version is pushed only where the label or the route changed.

Each chunk is a row of `prelabel_jobs`: the tasks' ids and data, so a worker needs no extra call to Label Studio.
With REDIS_URL the chunks go to `autoannotator worker` processes on any machine sharing the database; without,
the server's background loop runs them (`PushChore`). A retried chunk skips the tasks that already have their
prediction, so a worker killed mid-chunk loses nothing and duplicates nothing. Without Label Studio's URL and key
nothing can be pushed: a cut-short /predict then only computes the rest's features into the store (WARM), and
Label Studio's next "Retrieve predictions" is answered from it.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.exc import IntegrityError

from backend.decision.states import WAITING, JobState
from backend.jobs.base import DurableJobs, Heartbeat
from backend.labelstudio.client import ROUTE_FIELD, LabelStudioClient, route_of
from backend.labelstudio.config import LabelConfigError, parse_label_config
from backend.serving.registry import UNTRAINED_VERSION, ModelRegistry, combined_version
from backend.settings import Settings
from backend.store import Store, prelabel_jobs

log = logging.getLogger(__name__)

_FLAG_THREADS = 8
RETRIEVE_CHUNK = 250  # tasks per chunk of a cut-short /predict or a refresh


class PushKind(StrEnum):
    """What a chunk does with its tasks."""

    PRELABEL = "prelabel"  # flag each task's route, then push its prediction
    RETRIEVE = "retrieve"  # push what a /predict could not answer in time
    REFRESH = "refresh"  # after a promotion: push only where the label or the route changed
    WARM = "warm"  # nothing to push to: compute the features into the store


@dataclass
class Report:
    project: int
    model_version: str = ""
    tasks_seen: int = 0
    skipped: int = 0  # already had a prediction of this version
    prelabelled: int = 0  # predictions pushed
    unchanged: int = 0  # scored again, same label and route as the prediction the task has: nothing pushed
    warmed: int = 0  # features computed into the store, nothing pushed (no Label Studio to push to)
    untrained: int = 0  # no bundle serves the control: no prediction (tried again next run)
    routes: Counter = field(default_factory=Counter)
    llm_calls: int = 0  # HTTP requests sent to the LLM for this run's tasks
    llm_reviews: int = 0  # tasks the LLM was asked about (cached answers included)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    project_llm_totals: dict[str, Any] = field(default_factory=dict)
    aligned: bool = False
    sampling: str | None = None
    interrupted: bool = False
    chunks: dict[str, int] = field(default_factory=dict)  # --queue: chunk jobs by state

    _SUMMED = ("prelabelled", "unchanged", "warmed", "untrained", "skipped", "llm_calls", "llm_reviews",
               "prompt_tokens", "completion_tokens", "cost_usd", "seconds")

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "routes"}
        out["routes"] = dict(self.routes)
        out["cost_usd"] = round(self.cost_usd, 6)
        out["seconds"] = round(self.seconds, 3)
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
                f"{self.unchanged} scored again and unchanged, {self.skipped} already done, {self.untrained} "
                f"without a bundle, of {self.tasks_seen} seen"
                f"{' (interrupted: run again to resume)' if self.interrupted else ''}\n"
                f"routes: {routes}\n"
                f"LLM: {self.llm_reviews} reviews, {self.llm_calls} calls, {self.prompt_tokens} prompt + "
                f"{self.completion_tokens} completion tokens, ${self.cost_usd:.6f} (${per_1k:.4f} per 1,000 tasks)\n"
                f"project model_version {'aligned' if self.aligned else 'NOT aligned'}"
                f"{f', sampling {self.sampling!r}' if self.sampling else ''}")


def choices_of(result: Any) -> dict[str, list[str]]:
    """{control: sorted choices} of a prediction's result: what a person sees of it."""
    out: dict[str, list[str]] = {}
    for region in result if isinstance(result, list) else []:
        value = region.get("value") if isinstance(region, dict) else None
        picked = value.get("choices") if isinstance(value, dict) else None
        if isinstance(picked, list) and isinstance(region.get("from_name"), str):
            out[region["from_name"]] = sorted(str(c) for c in picked)
    return out


def task_for_push(task: dict[str, Any]) -> dict[str, Any]:
    """What a chunk keeps of a Label Studio task: id, data and, when it has one, what its latest prediction says."""
    out: dict[str, Any] = {"id": task["id"], "data": task.get("data") or {}}
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    if preds:
        latest = max(preds, key=lambda p: (str(p.get("created_at") or ""), int(p.get("id") or 0)))
        out["previous"] = choices_of(latest.get("result"))
    return out


def changed(task: dict[str, Any], result: list[dict[str, Any]], route: str) -> bool:
    """Whether a new prediction says something else than the one the task has: another label for a control, or
    another route than its flag. A task with no prediction has nothing to compare with."""
    if "previous" not in task:
        return True
    if choices_of(result) != task["previous"]:
        return True
    flag = (task.get("data") or {}).get(ROUTE_FIELD)
    return flag is not None and flag != route


def label_chunk(model: Any, ls: LabelStudioClient, project_id: int, pid: str, label_config: str,
                tasks: list[dict[str, Any]], report: Report, batch: int = 100,
                kind: PushKind = PushKind.PRELABEL) -> None:
    """Predict `tasks` ([{id, data, previous?}]) through `model` (an `AnnotationService` made `pushing`: no
    PREDICT_SECONDS cut, LLM review inline) and push the predictions: PRELABEL and
    REFRESH flag each task's route first; a task that carries its previous prediction (`task_for_push`) is pushed
    only when the new one `changed`."""
    started = time.monotonic()
    version = report.model_version
    results = model.predict(tasks, label_config, project=pid)
    predictions, flags = [], []
    for task, pred in zip(tasks, results, strict=True):
        if not pred or not pred.get("result"):
            report.untrained += 1
            continue
        records = [r for r in model.store.provenance(task["id"], pid) if r["model_version"] == pred["model_version"]]
        route, reason = route_of(records)
        report.routes[route] += 1
        for r in records:
            llm = r.get("llm") or {}
            if llm:
                report.llm_reviews += 1
                report.llm_calls += int(llm.get("attempts") or 0)
                report.prompt_tokens += int(llm.get("prompt_tokens") or 0)
                report.completion_tokens += int(llm.get("completion_tokens") or 0)
                report.cost_usd += float(llm.get("cost_usd") or 0.0)
        if not changed(task, pred["result"], route):
            report.unchanged += 1
            continue
        data = task.get("data") or {}
        if kind == PushKind.PRELABEL or (kind == PushKind.REFRESH and ROUTE_FIELD in data):
            flags.append((task["id"], route, reason, data))
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
    report.seconds += time.monotonic() - started


class PushJobs(DurableJobs):
    table = prelabel_jobs
    rq_function = "backend.commands.prelabel.run_chunk"
    rq_prefix = "aa-push"
    heavy_columns = ("tasks", "task_ids")

    def is_stale(self, job: dict[str, Any], now: float) -> bool:
        return (job["heartbeat_at"] or 0) < now - self.settings.job_stale_seconds

    def write(self, pid: str, project_id: int, version: str, tasks: list[dict[str, Any]], chunk: int,
              kind: PushKind = PushKind.PRELABEL, not_before: float | None = None) -> set[int]:
        """Chunk jobs for the tasks that no open chunk of this project and version holds yet; a failed chunk is
        given fresh attempts. The server's loop takes none before `not_before`. Returns the ids of the chunks to
        wait for: those written and those an earlier run left unfinished."""
        with self.store.engine.begin() as conn:
            conn.execute(prelabel_jobs.update().where(and_(
                prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version,
                prelabel_jobs.c.status == JobState.FAILED)).values(status=JobState.PENDING, attempts=0,
                                                                   finished_at=None))
        held, ids = self._open(project_id, version)
        todo = [t for t in tasks if t["id"] not in held]
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            row = {"tasks": part, "task_ids": [t["id"] for t in part], "size": len(part), "kind": kind,
                   "status": JobState.PENDING, "attempts": 0}
            try:
                with self.store.engine.begin() as conn:
                    ids.add(conn.execute(insert(prelabel_jobs).values(
                        project_id=pid, ls_project=project_id, model_version=version, first_task=part[0]["id"],
                        requested_at=not_before or time.time(), **row)).inserted_primary_key[0])
            except IntegrityError:  # a done chunk began with this task; its tasks now lack a prediction again
                same = and_(prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version,
                            prelabel_jobs.c.first_task == part[0]["id"])
                with self.store.engine.begin() as conn:
                    conn.execute(prelabel_jobs.update().where(same).values(report=None, finished_at=None, **row))
                    ids.update(conn.execute(select(prelabel_jobs.c.id).where(same)).scalars())
        return ids

    def _open(self, project_id: int, version: str, pushed_only: bool = False) -> tuple[set[int], set[int]]:
        """(ids of the tasks that unfinished chunks of this project and version hold, those chunks' ids). The heavy
        `tasks` column is read only for chunks written before `task_ids` existed."""
        c = prelabel_jobs.c
        q = select(c.id, c.task_ids).where(and_(c.ls_project == project_id, c.model_version == version,
                                                c.status != JobState.DONE))
        if pushed_only:
            q = q.where(or_(c.kind.is_(None), c.kind != PushKind.WARM))
        with self.store.engine.connect() as conn:
            rows = conn.execute(q).all()
            older = [r.id for r in rows if r.task_ids is None]
            old_tasks = conn.execute(select(c.tasks).where(c.id.in_(older))).scalars().all() if older else []
        held = {int(t) for r in rows if r.task_ids is not None for t in r.task_ids}
        held.update(int(t["id"]) for tasks in old_tasks for t in tasks)
        return held, {r.id for r in rows}

    def held(self, project_id: int, version: str) -> set[int]:
        """Tasks whose prediction of `version` is on its way to Label Studio: a /predict answers them empty rather
        than twice."""
        return self._open(project_id, version, pushed_only=True)[0]

    def for_run(self, project_id: int, version: str) -> list[dict[str, Any]]:
        q = select(*[c for c in prelabel_jobs.c if c.name not in self.heavy_columns]).where(and_(
            prelabel_jobs.c.ls_project == project_id, prelabel_jobs.c.model_version == version))
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def progress(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Per project, version and kind: chunks by state, tasks done of all, what was pushed, left alone or only
        warmed, and when it started and ended. Newest first."""
        runs: dict[tuple[str, str, str], dict[str, Any]] = {}
        for j in sorted(self.list(project_id=project_id, limit=100_000, brief=True), key=lambda j: j["id"]):
            kind = str(j.get("kind") or PushKind.PRELABEL)
            run = runs.setdefault((j["project_id"], j["model_version"], kind), {
                "project": j["project_id"], "model_version": j["model_version"], "kind": kind, "chunks": Counter(),
                "tasks": 0, "done": 0, "pushed": 0, "unchanged": 0, "warmed": 0, "skipped": 0, "failed": 0,
                "requested_at": j["requested_at"], "finished_at": None, "seconds": 0.0})
            run["chunks"][str(j["status"])] += 1
            size = int(j.get("size") or 0)
            run["tasks"] += size
            rep = j.get("report") or {}
            if j["status"] == JobState.DONE:
                run["done"] += size
                run["finished_at"] = max(run["finished_at"] or 0.0, j["finished_at"] or 0.0)
            elif j["status"] == JobState.FAILED:
                run["failed"] += size
            for k in ("pushed", "unchanged", "warmed", "skipped"):
                run[k] += int(rep.get("prelabelled" if k == "pushed" else k) or 0)
            run["seconds"] += float(rep.get("seconds") or 0.0)
        out = []
        for run in runs.values():
            left = sum(n for s, n in run["chunks"].items() if s != JobState.DONE)
            run["chunks"] = dict(run["chunks"])
            run["state"] = "done" if not left else ("failed" if run["failed"] and
                                                    all(s in (JobState.DONE, JobState.FAILED) for s in run["chunks"])
                                                    else "running")
            if left:
                run["finished_at"] = None
            scored = run["pushed"] + run["unchanged"]
            run["pushed_share"] = round(run["pushed"] / scored, 4) if scored else None
            run["seconds"] = round(run["seconds"], 3)
            out.append(run)
        return sorted(out, key=lambda r: -r["requested_at"])


def execute_chunk(job_id: int, settings: Settings, store: Store, make_model: Callable[[], Any],
                  ls: LabelStudioClient | None = None, claimed: bool = False) -> str:
    """Run one chunk job to its end with the model `make_model` returns (as in `label_chunk`). The model is made
    after the claim, so a job rq handed over is claimed at once, before any slow import. A retry (a worker died
    mid-chunk) skips the tasks that already have a prediction of the version, so nothing is predicted twice."""
    jobs = PushJobs(store, settings)
    if not claimed and not jobs.claim(job_id):
        return "not claimed"
    job = jobs.get(job_id)
    assert job is not None
    beat = Heartbeat(jobs, job_id, max(0.5, settings.job_stale_seconds / 4))
    beat.start()
    try:
        kind = PushKind(job.get("kind") or PushKind.PRELABEL)
        model = make_model()
        project = store.project(job["project_id"]) or {}
        report = Report(project=job["ls_project"], model_version=job["model_version"])
        tasks = list(job["tasks"])
        if kind == PushKind.WARM:
            started = time.monotonic()
            report.warmed = model.compute_features(tasks, project.get("label_config") or "", job["project_id"])
            report.seconds = time.monotonic() - started
        else:
            ls = ls or LabelStudioClient.from_settings(settings)
            if ls is None:
                raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set on this worker")
            label_config = project.get("label_config") or ls.project(job["ls_project"]).get("label_config") or ""
            if job["attempts"] > 1:
                done = {t["id"] for t in tasks
                        if any(p.get("model_version") == job["model_version"] for p in ls.predictions(t["id"]))}
                report.skipped = len(done)
                tasks = [t for t in tasks if t["id"] not in done]
            if tasks:
                label_chunk(model, ls, job["ls_project"], job["project_id"], label_config, tasks, report, kind=kind)
        jobs.set(job_id, JobState.RUNNING, status=JobState.DONE, report=report.as_dict(), error=None,
                 finished_at=time.time())
        return JobState.DONE
    except Exception as exc:
        log.exception("push chunk %s failed", job_id)
        return jobs.retry_or_fail(job_id, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
    finally:
        beat.stopped.set()


class PushChore:
    """The server loop's push turn: with REDIS_URL send pending chunks to rq; without, run one chunk here, with the
    model `make_model` returns (made once, when first needed)."""

    def __init__(self, settings: Settings, store: Store, make_model: Callable[[], Any]):
        self.settings = settings
        self.store = store
        self.jobs = PushJobs(store, settings)
        self.make_model = make_model
        self._model: Any = None

    def _made(self) -> Any:
        if self._model is None:
            self._model = self.make_model()
        return self._model

    def __call__(self) -> bool:
        self.jobs.reap()
        if self.settings.redis_url:
            self.jobs.dispatch()
            return False
        job_id = self.jobs.claim_next()
        if job_id is None:
            return False
        execute_chunk(job_id, self.settings, self.store, self._made, claimed=True)
        return True


def waiting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] in (*WAITING, JobState.RUNNING)]


def served_version(settings: Settings, pid: str, label_config: str) -> str:
    """The model version a /setup of this project answers now."""
    try:
        space = parse_label_config(label_config)
    except LabelConfigError:
        return UNTRAINED_VERSION
    return combined_version([ref for _, ref in ModelRegistry(settings).served(space, pid) if ref is not None])


def schedule_refresh(settings: Settings, store: Store, pid: str, ls: LabelStudioClient | None = None) -> int:
    """After a promotion: chunks that score again every task of the project that has a prediction, none of the
    promoted version and no annotation, and push a prediction only where the label or the route changed
    (`changed`). Their features are in the store, so this costs the heads and Label Studio's writes.

    That suits a project whose model version is its ML backend (what Label Studio sets when a backend is
    connected): Label Studio shows each task the backend's current version, and asks /predict for it when a task
    without one is opened or retrieved, answered from the store. A project pinned to one version (`autoannotator
    prelabel` pins it) shows that version's predictions only, so it is left alone. Returns how many tasks were
    queued (0 without Label Studio's URL and key, or for a pinned project)."""
    ls = ls or LabelStudioClient.from_settings(settings)
    project = store.project(pid) or {}
    ls_id = pid.split("-", 1)[0]
    if ls is None or not ls_id.isdigit() or not project.get("label_config"):
        return 0
    shown = ls.project(int(ls_id)).get("model_version") or ""
    if shown and shown not in ls.ml_titles(int(ls_id)):
        log.info("project %s shows the predictions of version %s only; they are not refreshed (`autoannotator "
                 "prelabel` moves the project to the promoted version)", pid, shown)
        return 0
    version = served_version(settings, pid, project["label_config"])
    if version == UNTRAINED_VERSION:
        return 0
    todo = []
    for task in ls.tasks(int(ls_id), page_size=RETRIEVE_CHUNK):
        preds = task.get("predictions") or []
        if not preds or task.get("total_annotations") or task.get("is_labeled") \
                or any(p.get("model_version") == version for p in preds):
            continue
        todo.append(task_for_push(task))
    if todo:
        PushJobs(store, settings).write(pid, int(ls_id), version, todo, RETRIEVE_CHUNK, kind=PushKind.REFRESH,
                                        not_before=time.time() + settings.bundle_refresh_seconds + 1)
        log.info("project %s: %d predicted tasks are scored again by %s; predictions are pushed where they change",
                 pid, len(todo), version)
    return len(todo)
