"""A project's figures for the page, gathered with the calls the JSON API answers with (so the two agree)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backend.decision.states import JobState, RouteName
from backend.labelstudio.config import project_bundle_key
from backend.store import provenance

ROUTES = tuple(RouteName)


@dataclass(frozen=True)
class Stage:
    """One candidate version of a project's control: its held-out figures and the gate's decision."""

    control: str
    version: str
    at: float
    candidate_f1: float | None
    current_f1: float | None
    holdout: int
    promoted: bool
    reason: str


def stages(model_dir: Path, project_id: str, controls: list[str]) -> list[Stage]:
    """Every candidate trained for the project, oldest first, from the gate's record beside each version."""
    out = []
    for control in controls:
        versions = Path(model_dir) / "bundles" / project_bundle_key(project_id, control) / "versions"
        if not versions.is_dir():
            continue
        for gate_file in versions.glob("*/gate.json"):
            try:
                g = json.loads(gate_file.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            out.append(Stage(control, gate_file.parent.name, gate_file.stat().st_mtime, g.get("candidate_macro_f1"),
                             g.get("current_macro_f1"), int(g.get("holdout") or 0), bool(g.get("promoted")),
                             str(g.get("reason") or "")))
    return sorted(out, key=lambda s: s.at)


def routes_by_version(engine: Any, project_id: str) -> list[dict[str, Any]]:
    """Tasks per route for each model version that predicted, in the order the versions first served."""
    q = (select(provenance.c.model_version, provenance.c.route, func.count(), func.min(provenance.c.created_at))
         .where(provenance.c.project_id == project_id)
         .group_by(provenance.c.model_version, provenance.c.route))
    by: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for version, route, n, first in conn.execute(q):
            row = by.setdefault(version, {"version": version, "first": first, **{r: 0 for r in ROUTES}})
            row[route] = row.get(route, 0) + int(n)
            row["first"] = min(row["first"], first)
    rows = sorted(by.values(), key=lambda r: r["first"])
    for r in rows:
        total = sum(r[x] for x in ROUTES)
        r["tasks"] = total
        r["reviewed_share"] = (total - r["auto"]) / total if total else None
    return rows


def project_overview(model: Any, project_id: str) -> dict[str, Any]:
    """Everything the project page shows, as plain data."""
    controls = [c["control"] for c in model.controls(project_id)]
    usage = model.llm_usage(project_id)
    jobs = model.jobs.list(project_id=project_id, limit=10_000)
    review_jobs = model.review_jobs.list(project_id=project_id, limit=10_000, brief=True)
    tasks = int(usage.get("tasks") or 0)
    usd = float(usage.get("usd") or 0.0)
    errors = [{"at": j.get("finished_at") or j.get("requested_at"), "what": f"training job {j['id']}",
               "error": j.get("outcome") or ""} for j in jobs if j["status"] == JobState.FAILED]
    errors += [{"at": j.get("finished_at") or j.get("requested_at"), "what": f"review job {j['id']}",
                "error": j.get("error") or ""}
               for j in review_jobs if j["status"] in (JobState.FAILED, JobState.PUSH_FAILED)]
    errors.sort(key=lambda e: e["at"] or 0, reverse=True)
    return {
        "project": project_id, "controls": controls,
        "routes": {r: int(usage["routes"].get(r, 0)) for r in ROUTES},
        "versions": routes_by_version(model.store.engine, project_id),
        "stages": [s.__dict__ for s in stages(model.settings.model_dir, project_id, controls)],
        "trust": model.trust(project_id)["ledgers"],
        "usage": usage, "tasks": tasks, "cost_usd": usd,
        "cost_per_1000": 1000 * usd / tasks if tasks else None,
        "jobs": dict(Counter(j["status"] for j in jobs)),
        "review_jobs": dict(Counter(j["status"] for j in review_jobs)),
        "errors": errors[:10],
        "quality": model.quality(project_id)["controls"],
    }
