"""Hard samples inside /predict: route each decision, have the LLM review the hard ones, and say
where every task ends — accepted as predicted ("auto"), settled by the LLM ("llm"), or left to a
human ("human").

The prediction score carries the route so that Label Studio's "Uncertainty sampling" serves human
tasks first: a human task's score is its confidence halved (below 0.5), an LLM-settled task's is at
least 0.5. The label shown for a human task is the ensemble's, never an LLM answer that failed
validation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend import metrics
from backend.decision.routing import cap_review, final_route, parse_class_thresholds, route
from backend.decision.voting import Decision
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.llm import Reviewer, ReviewResult

log = logging.getLogger(__name__)

_EXAMPLES_PER_LABEL = 2
_EXAMPLES_TTL_S = 30.0


@dataclass
class Outcome:
    """Where one task's answer for one control ended, and why."""

    labels: list[str]
    score: float
    route: str  # auto | llm | human
    reason: str
    review: ReviewResult | None = None


def route_score(route_name: str, confidence: float, verdict_probability: float = 0.0) -> float:
    """The prediction score Label Studio sorts by: human < 0.5 <= llm; auto keeps its confidence."""
    if route_name == "human":
        return round(0.5 * confidence, 4)
    if route_name == "llm":
        return round(0.5 + 0.5 * verdict_probability, 4)
    return round(confidence, 4)


class HardSampleReview:
    def __init__(self, settings: Settings, engine: Any = None):
        self.settings = settings
        self.engine = engine
        self.per_class = parse_class_thresholds(settings.review_class_thresholds)
        self._reviewer: Reviewer | None = None
        self._lock = threading.Lock()
        self._examples: dict[tuple[str, str], tuple[float, list[tuple[str, str]]]] = {}

    @property
    def reviewer(self) -> Reviewer | None:
        """Created on first use, once per process; None when no LLM_MODEL is configured."""
        if not self.settings.llm_model:
            return None
        with self._lock:
            if self._reviewer is None:
                from backend.llm import Reviewer

                self._reviewer = Reviewer(self.settings, engine=self.engine)
        return self._reviewer

    def apply(self, project_id: str, control_multiple: bool, names: Sequence[str], texts: Sequence[str],
              decisions: Sequence[Decision], examples: Any = None, defer: bool = False,
              audited: Sequence[bool] | None = None) -> list[Outcome]:
        """One Outcome per decision. `examples` is a callable giving few-shot (text, label) pairs, or a list.

        With `defer` (REVIEW_MODE=async) the LLM is not called: samples it would review come back with route
        "pending" and the human-side score, for `settle` to finish in the background. `audited` flags the tasks
        REVIEW_AUDIT_SHARE picked (`backend.decision.audit.is_audit`): they go to a human, never to the LLM.
        """
        out, hard = self.triage(names, decisions, audited=audited)
        if not hard:
            return self.count(out)
        reviewer = self.reviewer
        if reviewer is None or control_multiple:
            why = "no LLM reviewer configured" if reviewer is None else "multiple choice is not reviewed by the LLM"
            for i in hard:
                o = out[i]
                o.route, o.reason = "human", f"{o.reason}; {why}"
                o.score = route_score("human", decisions[i].confidence)
            return self.count(out)
        if defer:
            for i in hard:
                o = out[i]
                o.route, o.reason = "pending", f"{o.reason}; LLM review pending (REVIEW_MODE=async)"
                o.score = route_score("human", decisions[i].confidence)
            return self.count(out)  # pending ones are counted once settled
        shots = examples() if callable(examples) else list(examples or [])
        settled = self.settle(project_id, names, [texts[i] for i in hard],
                              [(decisions[i].confidence, decisions[i].probabilities) for i in hard],
                              [out[i] for i in hard], shots, self.settings.llm_inline_seconds)
        for i, o in zip(hard, settled, strict=True):
            out[i] = o
        return self.count(out)

    def triage(self, names: Sequence[str], decisions: Sequence[Decision], budget_items: int | None = None,
               audited: Sequence[bool] | None = None) -> tuple[list[Outcome], list[int]]:
        """Route each decision: "auto" outcomes for all, and the indices the LLM should review.

        `budget_items` is the batch REVIEW_MAX_SHARE is a share of, when the decisions are more than the batch: a
        backlog queue re-scores earlier accepted items beside the new ones, but the spend stays per new item.
        `audited` decisions go to a human whatever their confidence, with the human-side score, and count against
        REVIEW_MAX_SHARE before the hard ones: the audit is the unbiased sample calibration rests on.
        """
        out: list[Outcome] = []
        hard: list[int] = []
        spot = 0
        for i, d in enumerate(decisions):
            labels = [names[j] for j in d.labels]
            r = route(d, self.settings.review_confidence_threshold, self.per_class, self.settings.review_rule, names)
            if audited is not None and audited[i]:
                out.append(Outcome(labels, route_score("human", d.confidence), "human",
                                   f"{r.reason}; audit: a random spot check, reviewed by a human whatever the "
                                   "confidence (REVIEW_AUDIT_SHARE)"))
                spot += 1
                continue
            out.append(Outcome(labels, route_score("auto", d.confidence), r.name, r.reason))
            if r.name == "llm":
                hard.append(i)
        share = self.settings.review_max_share
        n_items = len(decisions) if budget_items is None else budget_items
        hard, released = cap_review(hard, [d.confidence for d in decisions], n_items, share, reserved=spot)
        for i in released:
            out[i].route = "auto"
            out[i].reason = f"{out[i].reason}; accepted: review share capped at {share:g} (REVIEW_MAX_SHARE)"
        return out, hard

    def settle(self, project_id: str, names: Sequence[str], texts: Sequence[str],
               decisions: Sequence[tuple[float, Sequence[float]]], outcomes: Sequence[Outcome],
               examples: Sequence[tuple[str, str]] = (), time_budget_s: float | None = None) -> list[Outcome]:
        """Have the LLM review hard samples: `decisions` are (confidence, probabilities) pairs and `outcomes` the
        triage's; returns the final outcomes ("llm" or "human"), in order. Never raises for one item."""
        from backend.llm import ReviewItem

        reviewer = self.reviewer
        out = [Outcome(list(o.labels), o.score, o.route, o.reason.removesuffix(
            "; LLM review pending (REVIEW_MODE=async)")) for o in outcomes]
        if reviewer is None:
            for o, (confidence, _) in zip(out, decisions, strict=True):
                o.route, o.reason = "human", f"{o.reason}; no LLM reviewer configured"
                o.score = route_score("human", confidence)
            return out
        items = [ReviewItem(t, list(names), list(examples), self.settings.review_guideline) for t in texts]
        results = reviewer.review(items, project_id, time_budget_s=time_budget_s)
        for o, (confidence, probabilities), res in zip(out, decisions, results, strict=True):
            final = final_route(res.status, res.verdict, res.error)
            o.review = res
            o.reason = f"{o.reason}; {final.reason}"
            o.route = final.name
            if final.name == "llm":
                o.labels = [res.verdict]
                o.score = route_score("llm", confidence, probabilities[list(names).index(res.verdict)])
            else:
                o.score = route_score("human", confidence)
            metrics.LLM_CALLS.labels(res.status).inc()
            metrics.LLM_TOKENS.labels("prompt").inc(res.prompt_tokens)
            metrics.LLM_TOKENS.labels("completion").inc(res.completion_tokens)
            metrics.LLM_COST.inc(res.cost_usd)
        return out

    @staticmethod
    def count(out: list[Outcome]) -> list[Outcome]:
        for o in out:
            if o.route != "pending":
                metrics.ROUTES.labels(o.route).inc()
        return out

    def examples_for(self, key: tuple[str, str], load: Any) -> list[tuple[str, str]]:
        """Few-shot examples from human-accepted corrections, a couple per label, cached briefly."""
        now = time.monotonic()
        cached = self._examples.get(key)
        if cached is None or now - cached[0] > _EXAMPLES_TTL_S:
            per_label: dict[str, list[tuple[str, str]]] = {}
            for row in reversed(load()):
                label = row["choices"][0]
                if len(per_label.setdefault(label, [])) < _EXAMPLES_PER_LABEL:
                    per_label[label].append((row["text"], label))
            cached = (now, [x for xs in per_label.values() for x in xs])
            self._examples[key] = cached
        return cached[1]

    def totals(self, project_id: str | None = None) -> dict[str, Any]:
        reviewer = self._reviewer
        if reviewer is None:
            return {"enabled": bool(self.settings.llm_model), "calls": 0}
        return {"enabled": True, "model": self.settings.llm_model, **reviewer.totals(project_id).as_dict()}
