"""Make a plan for one control: shortlist the catalog (matcher), keep what can be loaded here (availability),
let the LLM choose and map when one is configured, check its answer, fall back to the matcher when it fails,
and add the trainable offline specialists.

No models are loaded here: availability reads config files, the LLM is one HTTP call. Loading, measuring and
building bundles is `apply`'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from backend.planning import availability
from backend.planning.catalog import Catalog, load_catalog
from backend.planning.matcher import (
    Candidate,
    default_specialists,
    detect_language,
    judge,
    pretrained_specialist,
    project_task,
    rank,
)
from backend.planning.plan import Plan
from backend.planning.validate import PlanRejected, check_plan, parse_llm_plan, read_proposals, uncovered

log = logging.getLogger(__name__)

SHORTLIST = 8  # best-ranked catalog checkpoints checked for availability and offered to the LLM

Checker = Callable[[str], availability.Availability]


def _relevant(ranked: Sequence[Candidate], task: str | None) -> list[Candidate]:
    """Candidates worth checking: usable ones, then ones the LLM might map (same task, or some labels map)."""
    return [c for c in ranked if not c.problems and (c.usable or c.label_map or (task and c.entry.task == task))]


def _available(relevant: Sequence[Candidate], choices: Sequence[str], multiple: bool, language: str | None,
               task: str | None, check: Checker, size: int) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Up to `size` available candidates, best first, re-judged with each checkpoint's real labels; the unavailable
    ones met on the way, with their messages. At most 3 × `size` are checked (online, each check is a request)."""
    ok: list[Candidate] = []
    missing: list[dict[str, str]] = []
    for c in relevant[:3 * max(size, 1)]:
        if len(ok) >= size:
            break
        found = check(c.entry.location)
        if not found.available:
            missing.append({"name": c.entry.id, "checkpoint": c.entry.location, "reason": found.message})
            continue
        ok.append(judge(c.entry, choices, multiple, language, task, found.labels) if found.labels else c)
    ok.sort(key=lambda c: (not c.usable, -c.score, c.entry.id))
    return ok, missing


def make_plan(
    control: Any,
    key: str,
    settings: Any,
    catalog: Catalog | None = None,
    samples: Sequence[str] = (),
    use_llm: bool | None = None,
    language: str | None = None,
    check: Checker | None = None,
) -> Plan:
    """The plan for `control` (a ChoiceControl), to be stored under `key`. Never raises for an LLM problem."""
    catalog = catalog if catalog is not None else load_catalog(settings.catalog_file)
    check = check or availability.check
    choices, multiple = list(control.labels), bool(control.multiple)
    language = language or detect_language(samples)
    task = project_task(choices, [control.name])
    ranked = rank(catalog, choices, multiple, language, hints=[control.name])
    candidates, unavailable = _available(_relevant(ranked, task), choices, multiple, language, task, check,
                                         SHORTLIST)
    plan = Plan(key=key, control=control.name, labels=choices, multiple=multiple, specialists=[],
                language=language or "", dropped=list(unavailable))
    if unavailable:
        plan.notes.append(f"{len(unavailable)} shortlisted checkpoint(s) not available here; the plan uses what is")
    chosen: list[dict] | None = None
    llm_wanted = settings.plan_use_llm if use_llm is None else use_llm
    if llm_wanted and settings.llm_model:
        if candidates:
            chosen = _llm_choice(plan, candidates, choices, multiple, control.name, samples, settings)
        else:
            plan.notes.append("LLM not asked: no pretrained checkpoint in the catalog fits and is available")
    if chosen is None:
        chosen = _matcher_choice(plan, candidates, settings.plan_max_pretrained, task)
    taken = {s["name"] for s in chosen}
    plan.specialists = chosen + default_specialists(catalog, language, taken)
    if not plan.specialists:
        plan.notes.append("the catalog disables every trainable default and nothing pretrained fits")
    problems = check_plan(plan)
    if problems:  # a bug in the planner, not an LLM problem: every path above builds valid plans
        raise ValueError(f"invalid plan for {control.name!r}: {'; '.join(problems)}")
    return plan


def _matcher_choice(plan: Plan, candidates: Sequence[Candidate], limit: int, task: str | None) -> list[dict]:
    usable = [c for c in candidates if c.usable][:max(limit, 0)]
    plan.source = "matcher"
    out: list[dict] = []
    for rank_, c in enumerate(usable, 1):
        reason = f"matcher rank {rank_} (score {c.score}): {c.reason()}"
        out.append(pretrained_specialist(c.entry, c.label_map, reason, {s["name"] for s in out}))
    if out:
        plan.reason = (f"{len(out)} pretrained checkpoint(s) whose labels cover every choice"
                       f"{f' ({task})' if task else ''}, plus the trainable offline specialists")
    else:
        plan.reason = ("no available catalog checkpoint covers every choice: the trainable offline specialists "
                       "learn them from the project's annotations")
    for c in candidates:
        if not c.usable and c.missing and c.entry.task == task:
            plan.notes.append(f"{c.entry.id}: nothing maps to {list(c.missing)}")
    return out


def _llm_choice(plan: Plan, candidates: Sequence[Candidate], choices: Sequence[str], multiple: bool,
                control: str, samples: Sequence[str], settings: Any) -> list[dict] | None:
    """The LLM's pretrained specialists, or None (with the reason noted) to fall back to the matcher."""
    from backend.planning.llm_planner import PlannerUnavailable, ask

    try:
        answer = ask(settings, candidates, choices, multiple, control, samples, settings.plan_max_pretrained)
    except PlannerUnavailable as exc:
        plan.notes.append(f"LLM gave no plan ({exc}): the matcher's plan is used")
        return None
    plan.llm = answer.as_dict()
    try:
        data = parse_llm_plan(answer.raw)
        proposals = read_proposals(data, {c.entry.id: c.labels for c in candidates}, choices)
    except PlanRejected as exc:
        plan.notes.append(f"{exc}: the matcher's plan is used")
        log.warning("plan for %s: %s", control, exc)
        return None
    by_id = {c.entry.id: c for c in candidates}
    out: list[dict] = []
    for p in proposals:
        missing = uncovered(p.label_map, choices)
        if missing:
            plan.dropped.append({"name": p.checkpoint, "checkpoint": by_id[p.checkpoint].entry.location,
                                 "reason": f"the LLM's mapping {p.label_map} leaves {missing} uncovered"})
            continue
        if len(out) >= settings.plan_max_pretrained:
            plan.dropped.append({"name": p.checkpoint, "checkpoint": by_id[p.checkpoint].entry.location,
                                 "reason": f"beyond PLAN_MAX_PRETRAINED={settings.plan_max_pretrained}"})
            continue
        reason = f"LLM: {p.reason}" if p.reason else "LLM: (no reason given)"
        out.append(pretrained_specialist(by_id[p.checkpoint].entry, p.label_map, reason, {s["name"] for s in out}))
    plan.source = "llm"
    plan.reason = str(data.get("reason", "")).strip() or "chosen by the LLM"
    return out
