"""Hard samples inside /predict: route each decision, have the LLM review the hard ones where it has earned it,
and say where every task ends — accepted as predicted ("auto"), settled by the LLM ("llm"), or left to a person
("human").

The LLM is trusted only as far as it is measured (backend/decision/trust.py): while it is new to a project it is
asked only where a person also labels the task (the audit), and afterwards its answer becomes the label only for
classes where its measured accuracy beats the ensemble's; a share of its reviews stays audited. Every hard sample
goes, by expected accuracy gained per USD, to the LLM, a person or nobody, within the project's budgets, which are
counters in the database (backend/store/spend.py).

The prediction score carries the route so that Label Studio's "Uncertainty sampling" serves human tasks first: a
human task's score is its confidence halved (below 0.5), an LLM-settled task's is at least 0.5. The label shown for
a human task is the ensemble's, never an LLM answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backend import metrics
from backend.decision.audit import is_audit
from backend.decision.quality import Stated
from backend.decision.routing import Via, cap_review, final_route, llm_refusal, options, parse_class_thresholds, route
from backend.decision.states import RouteName
from backend.decision.trust import Ledger
from backend.decision.voting import Decision
from backend.settings import Settings
from backend.store.spend import Resource, Spend, today
from backend.store.trust import TrustLedger

if TYPE_CHECKING:
    from backend.llm import Reviewer, ReviewResult

log = logging.getLogger(__name__)

_EXAMPLES_PER_LABEL = 2
_EXAMPLES_TTL_S = 30.0
_LEDGER_TTL_S = 5.0
_DEFAULT_LLM_COST_USD = 1e-4  # before the first priced call: a small hosted model's price for a short prompt


@dataclass
class Outcome:
    """Where one task's answer for one control ended, and why."""

    labels: list[str]
    score: float
    route: str  # auto | llm | human | pending
    reason: str
    review: ReviewResult | None = None
    audit: bool = False  # the LLM was asked and a person checks the task as well


class _Slots:
    """Budget slots taken in one block, the first time one is asked for; `left` were taken and not used."""

    def __init__(self, reserve: Any):
        self._reserve = reserve
        self.left: int | None = None

    def take(self) -> bool:
        if self.left is None:
            self.left = int(self._reserve())
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass
class Plan:
    """What the router decided for one hard sample before any LLM call."""

    ask_llm: bool = False
    audit: bool = False  # a person's slot is taken: the task goes to a person whatever the LLM says
    human_fallback: bool = False  # a person may take it if the LLM's answer is not accepted


def route_score(route_name: str, confidence: float, verdict_probability: float = 0.0) -> float:
    """The prediction score Label Studio sorts by: human < 0.5 <= llm; auto keeps its confidence."""
    if route_name == RouteName.HUMAN:
        return round(0.5 * confidence, 4)
    if route_name == RouteName.LLM:
        return round(0.5 + 0.5 * verdict_probability, 4)
    return round(confidence, 4)


class HardSampleReview:
    def __init__(self, settings: Settings, engine: Any = None):
        self.settings = settings
        self.engine = engine
        self.per_class = parse_class_thresholds(settings.review_class_thresholds)
        self.spend = Spend(engine) if engine is not None else None
        self.trust = TrustLedger(engine) if engine is not None else None
        self._reviewer: Reviewer | None = None
        self._lock = threading.Lock()
        self._examples: dict[tuple[str, str], tuple[float, list[tuple[str, str]]]] = {}
        self._ledgers: dict[tuple[str, str, tuple[str, ...]], tuple[float, Ledger]] = {}
        self._stated: dict[tuple[str, str], tuple[float, Stated]] = {}

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

    # -- what is known of the LLM and the ensemble --------------------------------------------------------------
    def ledger(self, project_id: str, control: str, names: Sequence[str]) -> Ledger:
        """The LLM's trust ledger on this project's control (cached a few seconds; empty without a database)."""
        if self.trust is None:
            return Ledger.from_checks([], names)
        key = (project_id, control, tuple(names))
        now = time.monotonic()
        hit = self._ledgers.get(key)
        if hit is None or now - hit[0] > _LEDGER_TTL_S:
            hit = (now, self.trust.ledger(project_id, control, self.settings.llm_model, names))
            self._ledgers[key] = hit
        return hit[1]

    def forget(self, project_id: str) -> None:
        """Drop cached ledgers and stated thresholds of a project (after new checks)."""
        for cache in (self._ledgers, self._stated):
            for k in [k for k in cache if k[0] == project_id]:
                cache.pop(k, None)

    def stated(self, project_id: str, control: str) -> Stated | None:
        """TARGET_ACCURACY's derived threshold for this control, or None when no target is set."""
        target = self.settings.target_accuracy
        if not target or self.trust is None:
            return None
        key = (project_id, control)
        now = time.monotonic()
        hit = self._stated.get(key)
        if hit is None or now - hit[0] > _LEDGER_TTL_S:
            hit = (now, self.trust.stated(project_id, control, target))
            self._stated[key] = hit
        return hit[1]

    def llm_cost(self, project_id: str) -> float:
        """The LLM's measured USD per call on this project (a small default before the first priced call)."""
        if self.spend is None:
            return _DEFAULT_LLM_COST_USD
        t = self.spend.totals(project_id)
        calls, usd = t.get(Resource.LLM_CALLS.value, 0.0), t.get(Resource.LLM_USD.value, 0.0)
        return usd / calls if calls and usd > 0 else _DEFAULT_LLM_COST_USD

    # -- budgets ----------------------------------------------------------------------------------------------
    def reserve_human(self, project_id: str) -> bool:
        """One person's task, if HUMAN_MAX_SHARE and HUMAN_BUDGET_DAY allow it."""
        return self.reserve_humans(project_id, 1) == 1

    def reserve_humans(self, project_id: str, n: int) -> int:
        """Up to `n` people's tasks within HUMAN_MAX_SHARE and HUMAN_BUDGET_DAY; how many were taken."""
        if self.spend is None:
            return n
        s = self.settings
        taken = self.spend.reserve_shares(project_id, Resource.HUMAN, s.human_max_share, n)
        if s.human_budget_day and taken:
            today_taken = self.spend.reserve_units(project_id, Resource.HUMAN, taken, s.human_budget_day,
                                                   period=today())
            if today_taken < taken:
                self.spend.add(project_id, Resource.HUMAN, today_taken - taken)
            taken = today_taken
        return taken

    def release_humans(self, project_id: str, n: int) -> None:
        """Give back `n` people's tasks taken by `reserve_humans` and not used."""
        if self.spend is None or n <= 0:
            return
        self.spend.add(project_id, Resource.HUMAN, -n)
        if self.settings.human_budget_day:
            self.spend.add(project_id, Resource.HUMAN, -n, period=today())

    # -- routing ------------------------------------------------------------------------------------------------
    def apply(self, project_id: str, control_multiple: bool, names: Sequence[str], texts: Sequence[str],
              decisions: Sequence[Decision], examples: Any = None, defer: bool = False,
              audited: Sequence[bool] | None = None, control: str = "",
              task_ids: Sequence[int | None] | None = None, deadline: float | None = None) -> list[Outcome]:
        """One Outcome per decision. `examples` is a callable giving few-shot (text, label) pairs, or a list.

        With `defer` (REVIEW_MODE=async) the LLM is not called: samples it would review come back with route
        "pending" and the human-side score, for `settle` to finish in the background. `audited` flags the tasks
        REVIEW_AUDIT_SHARE picked (`backend.decision.audit.is_audit`): they go to a person, never to the LLM.
        `deadline` (time.monotonic) bounds the LLM's time for the whole request (LLM_INLINE_SECONDS).
        """
        stated = self.stated(project_id, control)
        threshold = max(self.settings.review_confidence_threshold, stated.threshold if stated else 0.0)
        out, hard = self.triage(names, decisions, audited=audited, threshold=threshold,
                                capped=self.spend is None)
        if self.spend is not None:
            self.spend.add(project_id, Resource.TASKS, len(decisions))
            spot = [i for i, o in enumerate(out) if o.route == RouteName.HUMAN]
            for i in spot[self.reserve_humans(project_id, len(spot)) if spot else 0:]:
                o = out[i]
                o.route, o.score = RouteName.AUTO, route_score(RouteName.AUTO, decisions[i].confidence)
                o.reason += "; audit skipped: people's budget spent (HUMAN_MAX_SHARE / HUMAN_BUDGET_DAY)"
        if not hard:
            return self.count(out)
        reviewer = self.reviewer
        llm_ok = reviewer is not None and not control_multiple
        ledger = self.ledger(project_id, control, names) if llm_ok else None
        why_not = ("no LLM reviewer configured" if reviewer is None
                   else "multiple choice is not reviewed by the LLM" if control_multiple else "")
        ids = list(task_ids) if task_ids is not None else [None] * len(decisions)
        plans = self.plan(project_id, names, decisions, hard, ids, ledger, why_not, out)
        ask = [i for i in hard if plans[i].ask_llm]
        if not ask:
            return self.count(out)
        if defer:
            for i in ask:
                o = out[i]
                o.route = RouteName.PENDING
                o.audit = plans[i].audit
                o.score = route_score(RouteName.HUMAN, decisions[i].confidence)
            return self.count(out)  # pending ones are counted once settled
        shots = examples() if callable(examples) else list(examples or [])
        budget_s = self.settings.llm_inline_seconds if deadline is None else max(deadline - time.monotonic(), 0.0)
        settled = self.settle(project_id, names, [texts[i] for i in ask],
                              [(decisions[i].confidence, decisions[i].probabilities) for i in ask],
                              [out[i] for i in ask], shots, budget_s if budget_s > 0 else 1e-6,
                              control=control, audits=[plans[i].audit for i in ask],
                              fallbacks=[plans[i].human_fallback for i in ask])
        for i, o in zip(ask, settled, strict=True):
            out[i] = o
        return self.count(out)

    def plan(self, project_id: str, names: Sequence[str], decisions: Sequence[Decision], hard: Sequence[int],
             task_ids: Sequence[int | None], ledger: Ledger | None, why_not: str, out: list[Outcome]
             ) -> dict[int, Plan]:
        """Who settles each hard sample, best expected gain per USD first, taking budget as it goes.

        Sets the route of samples that will not see the LLM ("human" or "auto") on `out` and returns a Plan each.
        """
        s = self.settings
        llm_cost = self.llm_cost(project_id) if ledger is not None else 0.0
        choices = {i: options(decisions[i].confidence, dict(zip(names, decisions[i].probabilities, strict=True)),
                              ledger, llm_cost, s.human_cost_usd) for i in hard}
        order = sorted(hard, key=lambda i: (-(choices[i][0].value if choices[i] else 0.0),
                                            decisions[i].confidence, i))
        plans: dict[int, Plan] = {}
        # Budgets are taken in blocks, one transaction each, not a commit per sample: the reviews for every hard
        # sample at once, and people's tasks the first time a sample needs one (what is left is given back).
        reviews = (len(order) if self.spend is None
                   else self.spend.reserve_shares(project_id, Resource.REVIEWS, s.review_max_share, len(order)))
        people = _Slots(lambda: self.reserve_humans(project_id, len(order)))
        unreviewed = 0
        for rank, i in enumerate(order):
            plan = plans[i] = Plan()
            o = out[i]
            if rank >= reviews:
                o.route, o.score = RouteName.AUTO, route_score(RouteName.AUTO, decisions[i].confidence)
                o.reason += f"; accepted: review share capped at {s.review_max_share:g} (REVIEW_MAX_SHARE)"
                continue
            tid = task_ids[i]
            if ledger is not None and ledger.new:
                # Evidence first: a new LLM is asked only where a person labels the task too.
                if tid is not None and people.take():
                    plan.ask_llm = plan.audit = True
                    o.reason += (f"; LLM new to the project ({ledger.n} of {ledger.min_checks} checks): asked, and "
                                 "audited by a person")
                    continue
            else:
                for opt in choices[i]:
                    if opt.via is Via.LLM:
                        plan.ask_llm = True
                        plan.human_fallback = any(x.via is Via.HUMAN for x in choices[i])
                        rate = ledger.audit_rate(s.llm_audit_share) if ledger is not None else 0.0
                        if is_audit(project_id, tid, rate, salt="llm-audit") and people.take():
                            plan.audit = True
                        o.reason += f"; {opt.reason}"
                        break
                    if opt.via is Via.HUMAN and people.take():
                        o.route, o.score = RouteName.HUMAN, route_score(RouteName.HUMAN, decisions[i].confidence)
                        o.reason += f"; {why_not or llm_refusal(ledger)}; {opt.reason}"
                        break
                if plan.ask_llm or o.route == RouteName.HUMAN:
                    continue
            unreviewed += 1  # nobody reviews it after all
            o.route, o.score = RouteName.AUTO, route_score(RouteName.AUTO, decisions[i].confidence)
            o.reason += (f"; {why_not or llm_refusal(ledger)}; kept the ensemble's label: people's budget spent "
                         "(HUMAN_MAX_SHARE / HUMAN_BUDGET_DAY)")
        if self.spend is not None and unreviewed:
            self.spend.add(project_id, Resource.REVIEWS, -unreviewed)
        self.release_humans(project_id, people.left or 0)
        return plans

    def triage(self, names: Sequence[str], decisions: Sequence[Decision], budget_items: int | None = None,
               audited: Sequence[bool] | None = None, threshold: float | None = None, capped: bool = True
               ) -> tuple[list[Outcome], list[int]]:
        """Route each decision: "auto" outcomes for all, and the indices the LLM should review.

        `budget_items` is the batch REVIEW_MAX_SHARE is a share of, when the decisions are more than the batch: a
        backlog queue re-scores earlier accepted items beside the new ones, but the spend stays per new item.
        `audited` decisions go to a human whatever their confidence, with the human-side score, and count against
        REVIEW_MAX_SHARE before the hard ones: the audit is the unbiased sample calibration rests on. `capped`
        False leaves REVIEW_MAX_SHARE to the project's running share (`apply`).
        """
        out: list[Outcome] = []
        hard: list[int] = []
        spot = 0
        t = self.settings.review_confidence_threshold if threshold is None else threshold
        for i, d in enumerate(decisions):
            labels = [names[j] for j in d.labels]
            r = route(d, t, self.per_class, self.settings.review_rule, names)
            if audited is not None and audited[i]:
                out.append(Outcome(labels, route_score(RouteName.HUMAN, d.confidence), "human",
                                   f"{r.reason}; audit: a random spot check, reviewed by a human whatever the "
                                   "confidence (REVIEW_AUDIT_SHARE)"))
                spot += 1
                continue
            out.append(Outcome(labels, route_score(RouteName.AUTO, d.confidence), r.name, r.reason))
            if r.name == RouteName.LLM:
                hard.append(i)
        if not capped:
            return out, hard
        share = self.settings.review_max_share
        n_items = len(decisions) if budget_items is None else budget_items
        hard, released = cap_review(hard, [d.confidence for d in decisions], n_items, share, reserved=spot)
        for i in released:
            out[i].route = "auto"
            out[i].reason = f"{out[i].reason}; accepted: review share capped at {share:g} (REVIEW_MAX_SHARE)"
        return out, hard

    def settle(self, project_id: str, names: Sequence[str], texts: Sequence[str],
               decisions: Sequence[tuple[float, Sequence[float]]], outcomes: Sequence[Outcome],
               examples: Sequence[tuple[str, str]] = (), time_budget_s: float | None = None,
               control: str | None = None, audits: Sequence[bool] | None = None,
               fallbacks: Sequence[bool] | None = None) -> list[Outcome]:
        """Have the LLM review hard samples: `decisions` are (confidence, probabilities) pairs and `outcomes` the
        triage's; returns the final outcomes ("llm", "human" or "auto"), in order. Never raises for one item.

        With `control`, the trust ledger decides: an audited sample goes to a person whatever the LLM says, and a
        verdict becomes the label only for a class the LLM is trusted on; otherwise a person takes it when
        `fallbacks` allows and people's budget has room, else the ensemble's label stands. Without `control`
        (the evaluation's LLM-only estimate) every valid verdict is taken.
        """
        from backend.llm import ReviewItem

        reviewer = self.reviewer
        out = [Outcome(list(o.labels), o.score, o.route, o.reason) for o in outcomes]
        if reviewer is None:
            for o, (confidence, _) in zip(out, decisions, strict=True):
                o.route, o.reason = RouteName.HUMAN, f"{o.reason}; no LLM reviewer configured"
                o.score = route_score(RouteName.HUMAN, confidence)
            return out
        ledger = self.ledger(project_id, control, names) if control is not None else None
        audits = list(audits) if audits is not None else [False] * len(out)
        fallbacks = list(fallbacks) if fallbacks is not None else [True] * len(out)
        items = [ReviewItem(t, list(names), list(examples), self.settings.review_guideline) for t in texts]
        results = reviewer.review(items, project_id, time_budget_s=time_budget_s)
        for o, (confidence, probabilities), res, audit, fallback in zip(out, decisions, results, audits, fallbacks,
                                                                       strict=True):
            final = final_route(res.status, res.verdict, res.error)
            o.review, o.audit = res, audit
            o.reason = f"{o.reason}; {final.reason}"
            accepted, why = (final.name == RouteName.LLM, "")
            if accepted and ledger is not None and res.verdict is not None:
                accepted, why = ledger.accepts(res.verdict)
                o.reason += f" {res.verdict!r}; {why}"
            if audit:
                o.route, o.score = RouteName.HUMAN, route_score(RouteName.HUMAN, confidence)
                o.reason += "; audited: a person labels it too (LLM_AUDIT_SHARE)"
            elif accepted and res.verdict is not None:
                o.route, o.labels = RouteName.LLM, [res.verdict]
                o.score = route_score(RouteName.LLM, confidence, probabilities[list(names).index(res.verdict)])
            elif ledger is None or (fallback and self.reserve_human(project_id)):
                o.route, o.score = RouteName.HUMAN, route_score(RouteName.HUMAN, confidence)
            else:
                o.route, o.score = RouteName.AUTO, route_score(RouteName.AUTO, confidence)
                o.reason += "; kept the ensemble's label (people's budget spent or no gain from a person)"
            metrics.LLM_CALLS.labels(res.status).inc()
            metrics.LLM_TOKENS.labels("prompt").inc(res.prompt_tokens)
            metrics.LLM_TOKENS.labels("completion").inc(res.completion_tokens)
            metrics.LLM_COST.inc(res.cost_usd)
        return out

    @staticmethod
    def count(out: list[Outcome]) -> list[Outcome]:
        for o in out:
            if o.route != RouteName.PENDING:
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
        """What the LLM has cost a project: from the database (every process's calls), else this process's."""
        s = self.settings
        if self.engine is not None:
            from backend.store.spend import DurableBudgets

            t = DurableBudgets(self.engine, s.llm_budget_calls, s.llm_budget_usd).for_project(project_id).totals()
            spend = self.spend.totals(project_id or "") if self.spend is not None else {}
            people = {"human_tasks": int(spend.get(Resource.HUMAN.value, 0)),
                      "reviews": int(spend.get(Resource.REVIEWS.value, 0)),
                      "tasks": int(spend.get(Resource.TASKS.value, 0)),
                      "human_max_share": s.human_max_share, "human_budget_day": s.human_budget_day,
                      "review_max_share": s.review_max_share}
            return {"enabled": bool(s.llm_model), "model": s.llm_model or None, **t.as_dict(), **people}
        reviewer = self._reviewer
        if reviewer is None:
            return {"enabled": bool(s.llm_model), "calls": 0}
        return {"enabled": True, "model": s.llm_model, **reviewer.totals(project_id).as_dict()}
