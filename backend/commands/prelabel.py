"""`autoannotator prelabel --project ID`: pre-label a whole Label Studio project through the same path as /predict.

Every task without a prediction of the current model_version is predicted in chunks by the service's `predict`
(ensemble, routing, inline LLM review, provenance: the very code /predict runs), then written back: first the
route flag (`autoannotator_route` / `autoannotator_reason` in task.data), then the predictions, in batches: the
chunks and the code of `backend.push`, which also pushes what a cut-short /predict left and the refresh after a
promotion. A task counts as done once it has a prediction of the current version, so an interrupted run resumes
where it stopped and a re-run creates no duplicates. At the end the project's model_version is set to ours, so the
score column and uncertainty sampling use it (and, with --set-sampling, its sampling set to "Uncertainty
sampling"). That pins the project to this version: Label Studio then shows only its predictions, which is why
every task gets one here, changed or not. A cost report is printed: tasks per route, LLM calls, tokens and USD.

With `--queue` (and REDIS_URL) the chunks become durable jobs (`backend.push.PushJobs`) that `autoannotator worker`
processes on any machine sharing the database and Redis take: this command writes them, sends them, reaps the
chunks of a worker that died (no heartbeat for JOB_STALE_SECONDS: sent again, and the retry skips the tasks that
already have their prediction), and waits for them all before aligning the project.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from backend.decision.states import JobState
from backend.labelstudio.client import UNCERTAINTY_SAMPLING, LabelStudioClient
from backend.push import PushJobs, Report, execute_chunk, label_chunk, waiting
from backend.settings import Settings
from backend.store import Store

if TYPE_CHECKING:
    from backend.service import AnnotationService


def _pushing_service(settings: Settings, store: Store | None = None) -> AnnotationService:
    from model import AutoAnnotatorModel

    return AutoAnnotatorModel.for_pushing(settings, store)


def run_chunk(job_id: int) -> str:
    """The rq job function of a push chunk (`backend.push.PushJobs`): everything comes from the environment, like
    the server's."""
    settings = Settings.from_env()
    store = Store(settings.database_url)
    return execute_chunk(job_id, settings, store, lambda: _pushing_service(settings, store))


def _open(settings: Settings, project_id: int, ls: LabelStudioClient | None, store: Store | None = None
          ) -> tuple[AnnotationService, LabelStudioClient, str, str, Report]:
    ls = ls or LabelStudioClient.from_settings(settings)
    if ls is None:
        raise SystemExit("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to pre-label a Label Studio project")
    model = _pushing_service(settings, store)
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
def prelabel_queued(settings: Settings, project_id: int, chunk: int = 250, set_sampling: bool = False,
                    ls: LabelStudioClient | None = None, progress: bool = True, wait: bool = True,
                    poll_seconds: float = 1.0) -> Report:
    """Write the project's chunks as jobs for `autoannotator worker` processes, then (with `wait`) follow them."""
    if not settings.redis_url:
        raise SystemExit("--queue needs REDIS_URL (and `autoannotator worker` processes sharing DATABASE_URL)")
    model, ls, pid, _, report = _open(settings, project_id, ls)
    version = report.model_version
    jobs = PushJobs(model.store, settings)
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
            left = waiting(rows)
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
    return sum(int(rep.get(k, 0)) for k in ("prelabelled", "unchanged", "untrained", "skipped"))
