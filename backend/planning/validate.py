"""A plan is checked, never trusted: the LLM's answer is read strictly, every mapping must go from a real
checkpoint label to a real project choice, every choice must be covered, and — once human annotations
exist — a pretrained specialist no better than chance on them is dropped with the reason.

Pure functions (numpy-free even): the rules are what must not go wrong, so they are tested without models.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.planning.plan import Plan


class PlanRejected(ValueError):
    """The LLM's plan as a whole cannot be used; the message says why (and is recorded in the plan)."""


@dataclass(frozen=True)
class Proposal:
    """One checkpoint the LLM proposes, with its mapping, as read from the answer."""

    checkpoint: str
    label_map: dict[str, str]
    reason: str


def _unfence(text: str) -> str:
    s = text.strip()
    if s.startswith("```") and s.endswith("```") and len(s) >= 6:
        body = s[3:-3]
        first, nl, rest = body.partition("\n")
        s = (rest if nl and first.strip().isalnum() else body).strip()
    return s


def parse_llm_plan(raw: str | None) -> dict[str, Any]:
    """The answer as a JSON object; a Markdown fence is the only packaging removed. Anything else is rejected."""
    if raw is None or not raw.strip():
        raise PlanRejected("malformed LLM plan: empty answer")
    try:
        data = json.loads(_unfence(raw))
    except ValueError as exc:
        shown = raw.strip()[:80]
        raise PlanRejected(f"malformed LLM plan: not JSON ({exc.msg} at char {exc.pos}; got {shown!r})") from None
    if not isinstance(data, dict):
        raise PlanRejected(f"malformed LLM plan: expected a JSON object, got {type(data).__name__}")
    return data


def _pairs(value: Any, where: str) -> list[tuple[str, str]]:
    """label_map as {checkpoint label: choice} or [{"checkpoint_label": .., "choice": ..}] (strict JSON schemas
    cannot express an object with free keys, so the structured answer uses the list form)."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(p, Mapping) and set(p) == {"checkpoint_label", "choice"}
                                         for p in value):
        pairs = [(p["checkpoint_label"], p["choice"]) for p in value]
    else:
        raise PlanRejected(f"malformed LLM plan: {where}.label_map must be an object or a list of "
                           '{"checkpoint_label", "choice"} pairs')
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in pairs):
        raise PlanRejected(f"malformed LLM plan: {where}.label_map must map strings to strings")
    return pairs


def read_proposals(data: Mapping[str, Any], candidates: Mapping[str, Sequence[str]], choices: Sequence[str]
                   ) -> list[Proposal]:
    """The LLM's ranked proposals, or PlanRejected naming the first problem: a wrong shape, a checkpoint that was
    not offered, a mapping from a label the checkpoint does not have or onto a label the project does not have.

    One invented label rejects the whole plan: an LLM that makes up labels is not trusted with the rest of it.
    """
    specs = data.get("specialists")
    if not isinstance(specs, list):
        raise PlanRejected('malformed LLM plan: "specialists" must be a list')
    if not isinstance(data.get("reason", ""), str):
        raise PlanRejected('malformed LLM plan: "reason" must be a string')
    out: list[Proposal] = []
    seen: set[str] = set()
    for n, spec in enumerate(specs):
        where = f"specialists[{n}]"
        if not isinstance(spec, Mapping):
            raise PlanRejected(f"malformed LLM plan: {where} must be an object")
        checkpoint = spec.get("checkpoint")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise PlanRejected(f'malformed LLM plan: {where} has no "checkpoint" string')
        if checkpoint not in candidates:
            raise PlanRejected(f"LLM plan rejected: {where} names checkpoint {checkpoint!r}, which is not one of the "
                               f"candidates offered {sorted(candidates)}")
        if checkpoint in seen:
            raise PlanRejected(f"LLM plan rejected: checkpoint {checkpoint!r} is proposed twice")
        seen.add(checkpoint)
        reason = spec.get("reason", "")
        if not isinstance(reason, str):
            raise PlanRejected(f'malformed LLM plan: {where}.reason must be a string')
        labels, label_map = list(candidates[checkpoint]), {}
        for source, target in _pairs(spec.get("label_map"), where):
            if source not in labels:
                raise PlanRejected(f"LLM plan rejected: {checkpoint!r} has no label {source!r} (its labels: {labels})")
            if target not in choices:
                raise PlanRejected(f"LLM plan rejected: {checkpoint!r} maps {source!r} onto {target!r}, which is not "
                                   f"a choice of the project {list(choices)}")
            if source in label_map:
                raise PlanRejected(f"LLM plan rejected: {checkpoint!r} maps {source!r} twice")
            label_map[source] = target
        out.append(Proposal(checkpoint, label_map, reason.strip()))
    return out


def uncovered(label_map: Mapping[str, str], choices: Sequence[str]) -> list[str]:
    """Choices no checkpoint label maps onto: a pretrained specialist must cover all of them to label alone."""
    covered = set(label_map.values())
    return [c for c in choices if c not in covered]


def check_plan(plan: Plan) -> list[str]:
    """What is wrong with a finished plan (empty: nothing). Every choice covered — by training for trainable
    specialists, by the mapping for pretrained ones — and every mapping between real labels."""
    problems = []
    if not plan.specialists:
        problems.append("the plan has no specialist")
    names = [s["name"] for s in plan.specialists]
    if len(set(names)) != len(names):
        problems.append(f"specialist names repeat: {names}")
    for s in plan.specialists:
        if s["family"] != "hf":
            continue
        label_map = s["params"].get("label_map") or {}
        bad = sorted({v for v in label_map.values() if v not in plan.labels})
        if bad:
            problems.append(f"{s['name']} maps onto {bad}, which are not choices {plan.labels}")
        missing = uncovered(label_map, plan.labels)
        if missing:
            problems.append(f"{s['name']} covers no {missing}")
    return problems


def chance_accuracy(gold: Sequence[Hashable], k: int) -> float:
    """What guessing achieves: the better of a uniform guess (1/k; single choice only) and always answering the
    most frequent answer."""
    if not gold:
        return 0.0
    majority = Counter(gold).most_common(1)[0][1] / len(gold)
    uniform = 1.0 / k if k and not isinstance(gold[0], tuple) else 0.0
    return max(uniform, majority)


def no_better_than_chance(correct: int, gold: Sequence[Hashable], k: int, min_annotations: int) -> str | None:
    """Why a specialist should be dropped, or None. Below `min_annotations` nothing is judged: a handful of
    annotations cannot tell a weak model from bad luck."""
    n = len(gold)
    if n < max(min_annotations, 1):
        return None
    accuracy, chance = correct / n, chance_accuracy(gold, k)
    if accuracy <= chance:
        return (f"accuracy {accuracy:.3f} on {n} human annotations is no better than chance "
                f"({chance:.3f}: the better of 1/{k} and the most frequent answer)")
    return None
