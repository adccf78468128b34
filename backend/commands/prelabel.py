"""`autoannotator prelabel --project ID`: pre-label a whole Label Studio project through the same path as /predict.

Every task without a prediction of the current model_version is predicted in chunks by `AutoAnnotatorModel.predict`
(ensemble, routing, inline LLM review, provenance: the very code /predict runs), then written back: first the
route flag (`autoannotator_route` / `autoannotator_reason` in task.data), then the predictions, in batches. A task
counts as done once it has a prediction of the current version, so an interrupted run resumes where it stopped and
a re-run creates no duplicates (a task flagged but not yet predicted is simply done again). At the end the project's
model_version is aligned with ours (and, with --set-sampling, its sampling set to "Uncertainty sampling"), and a
cost report is printed: tasks per route, LLM calls, tokens and USD.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from backend.labelstudio.client import UNCERTAINTY_SAMPLING, LabelStudioClient, route_of
from backend.settings import Settings


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

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "routes"}
        out["routes"] = dict(self.routes)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out

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


def prelabel(settings: Settings, project_id: int, chunk: int = 100, limit: int | None = None,
             set_sampling: bool = False, ls: LabelStudioClient | None = None, progress: bool = True) -> Report:
    from model import AutoAnnotatorModel

    ls = ls or LabelStudioClient.from_settings(settings)
    if ls is None:
        raise SystemExit("set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to pre-label a Label Studio project")
    # The review must be finished before a task counts as done: always inline here.
    model = AutoAnnotatorModel(settings.with_(review_mode="inline"), background=False)
    project = ls.project(project_id)
    label_config = project.get("label_config") or ""
    # Its data is kept where /predict and the webhooks of this Label Studio keep it.
    pid = model.project({"id": int(project_id), "created_at": project.get("created_at")})
    version = model.setup(pid, label_config)["model_version"]
    report = Report(project=int(project_id), model_version=version)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=project.get("task_number") or None, unit="task", desc=f"prelabel {project_id}",
                   file=sys.stderr)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if not batch:
            return
        results = model.predict(batch, label_config, project=pid)
        predictions = []
        for task, pred in zip(batch, results, strict=True):
            if not pred or not pred.get("result"):
                report.untrained += 1
                continue
            records = [r for r in model.store.provenance(task["id"], pid) if r["model_version"] == version]
            route, reason = route_of(records)
            ls.set_route(task["id"], route, reason, data=task.get("data") or {})
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
        ls.create_predictions(project_id, predictions, batch=chunk)
        report.prelabelled += len(predictions)
        if bar is not None:
            bar.update(len(batch))
        batch.clear()

    try:
        for task in ls.tasks(project_id, page_size=max(chunk, 1)):
            report.tasks_seen += 1
            if any(p.get("model_version") == version for p in task.get("predictions") or []):
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
    if not report.interrupted and (report.prelabelled or report.skipped):
        sampling = UNCERTAINTY_SAMPLING if set_sampling else None
        aligned = ls.align_project(project_id, version, sampling)
        report.aligned = aligned.get("model_version") == version
        report.sampling = aligned.get("sampling")
    return report
