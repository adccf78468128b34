"""Where each prediction goes: accepted as is, reviewed by an LLM, or handed to a human.

The paper's hard-sample rule is disagreement among the specialists; a calibrated confidence threshold adds the
cases where they agree but are unsure (agreeing on a guess is still a guess). After review, only a verdict that
the reviewer validated becomes a label: anything else (invalid answer, abstention, error, timeout, spent budget)
goes to a human with a reason, so no sample is silently dropped or silently labelled.

Pure stdlib: no model and no LLM client imports, so the rules are cheap to test and to reason about.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .states import RouteName
from .trust import Ledger
from .voting import Decision

#: The hard-sample rules. "disagreement" is the paper's; "confidence" trusts calibration alone.
RULES: tuple[str, ...] = (
    "disagreement",
    "confidence",
    "disagreement_or_confidence",
    "disagreement_and_confidence",
)

#: Review statuses that carry a verdict the reviewer has validated as exactly one of the choices.
_VERDICT_STATUSES = frozenset({"valid", "cached"})

_HUMAN_REASONS: dict[str, str] = {
    "invalid": "LLM answer is not one of the choices",
    "abstain": "LLM abstained",
    "error": "LLM call failed",
    "timeout": "LLM review timed out",
    "over_budget": "LLM budget exhausted",
}


@dataclass(frozen=True)
class Route:
    """A routing decision; `reason` is for people (logs, the task's metadata), not for code."""

    name: RouteName
    reason: str


def parse_class_thresholds(text: str) -> dict[str, float]:
    """`REVIEW_CLASS_THRESHOLDS` ('{"Neutral": 0.8}') → {label: threshold}; empty text → {}.

    Fails loudly on a malformed value: a typo here would otherwise silently change what humans see.
    """
    if not text or not text.strip():
        return {}
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("class thresholds must be a JSON object {label: threshold}")
    out: dict[str, float] = {}
    for label, value in data.items():
        t = float(value)
        if not 0.0 <= t <= 1.0 or math.isnan(t):
            raise ValueError(f"threshold for {label!r} must be within [0, 1], got {value!r}")
        out[str(label)] = t
    return out


def threshold_for(
    decision: Decision,
    threshold: float,
    per_class_thresholds: Mapping[str, float] | None = None,
    label_names: Sequence[str] | None = None,
) -> tuple[float, str]:
    """The confidence threshold that applies to this decision, and what it came from.

    Per-class thresholds are keyed by label name (what a user sees in the config), so the decision's indices are
    translated through `label_names`. With several predicted labels (multiple choice) the strictest applies: one
    under-confident label is enough to doubt the whole answer.
    """
    if not per_class_thresholds or label_names is None:
        return threshold, "default"
    best, source = threshold, "default"
    for index in decision.labels:
        name = label_names[index] if 0 <= index < len(label_names) else None
        if name is not None and name in per_class_thresholds and per_class_thresholds[name] > best:
            best, source = per_class_thresholds[name], repr(name)
    return best, source


def route(
    decision: Decision,
    threshold: float,
    per_class_thresholds: Mapping[str, float] | None = None,
    rule: str = "disagreement_or_confidence",
    label_names: Sequence[str] | None = None,
) -> Route:
    """Accept the ensemble's answer ("auto") or send it for LLM review ("llm").

    `threshold` is REVIEW_CONFIDENCE_THRESHOLD: a confidence below it is "unsure". 1.0 sends everything for review
    (even a confidence of exactly 1.0); 0.0 makes the confidence test never fire, leaving disagreement alone.
    """
    if rule not in RULES:
        raise ValueError(f"unknown review rule {rule!r}; expected one of {', '.join(RULES)}")
    t, source = threshold_for(decision, threshold, per_class_thresholds, label_names)
    disagree = decision.agreement < 1.0
    unsure = t >= 1.0 or decision.confidence < t
    why_disagree = f"specialists disagree (agreement {decision.agreement:.2f})"
    where = "" if source == "default" else f" for {source}"
    why_unsure = f"confidence {decision.confidence:.3f} below {t:.3f}{where}"

    if rule == "disagreement":
        hard, reasons = disagree, [why_disagree]
    elif rule == "confidence":
        hard, reasons = unsure, [why_unsure]
    elif rule == "disagreement_or_confidence":
        hard, reasons = disagree or unsure, [r for r, on in ((why_disagree, disagree), (why_unsure, unsure)) if on]
    else:  # disagreement_and_confidence
        hard, reasons = disagree and unsure, [why_disagree, why_unsure]

    if hard:
        return Route(RouteName.LLM, "; ".join(reasons))
    agreed = f"specialists agree (agreement {decision.agreement:.2f})"
    if rule == "disagreement":
        return Route(RouteName.AUTO, agreed)
    sure = f"confidence {decision.confidence:.3f} not below {t:.3f}{where}"
    if rule == "confidence":
        return Route(RouteName.AUTO, sure)
    if rule == "disagreement_and_confidence":
        return Route(RouteName.AUTO, agreed if not disagree else sure)
    return Route(RouteName.AUTO, f"{agreed}, {sure}")


def final_route(status: str | None, verdict: str | None = None, error: str = "") -> Route:
    """Where a reviewed sample ends: "llm" (the LLM's verdict is the label) or "human".

    `status` is the reviewer's (valid / cached / invalid / abstain / error / timeout / over_budget); None means no
    review happened (no reviewer configured), which is a human's job too. Only a validated verdict is trusted:
    a cached abstention has no verdict and goes to a human like a fresh one.
    """
    if status is None:
        return Route(RouteName.HUMAN, "no LLM reviewer configured")
    if status in _VERDICT_STATUSES and verdict is not None:
        return Route(RouteName.LLM, "LLM verdict (cached)" if status == "cached" else "LLM verdict")
    if status == "cached":
        return Route(RouteName.HUMAN, "LLM abstained (cached)")
    if status == "valid":  # a reviewer bug, but still never a label without a verdict
        return Route(RouteName.HUMAN, "LLM verdict missing")
    reason = _HUMAN_REASONS.get(status, f"unknown review status {status!r}")
    return Route(RouteName.HUMAN, f"{reason}: {error}" if error else reason)


def cap_review(hard: Sequence[int], confidences: Sequence[float], n_items: int, max_share: float,
               reserved: int = 0) -> tuple[list[int], list[int]]:
    """Keep at most `max_share` of a batch's `n_items` for review, the least confident first.

    A team pays for review per item (LLM tokens or people's time); `REVIEW_MAX_SHARE` bounds that spend per batch
    while the threshold still decides what is hard. `reserved` items of the batch are already being reviewed (the
    audit) and come out of the same share. Returns (kept, released) index lists; released items are accepted as
    predicted. `max_share` >= 1 keeps everything.
    """
    hard = list(hard)
    if max_share >= 1.0 or not hard:
        return hard, []
    limit = max(math.floor(max(max_share, 0.0) * n_items + 1e-9) - reserved, 0)
    if len(hard) <= limit:
        return hard, []
    order = sorted(hard, key=lambda i: (confidences[i], i))
    kept = set(order[:limit])
    return [i for i in hard if i in kept], [i for i in hard if i not in kept]


class Via(StrEnum):
    """Who settles a hard sample: the LLM, a person, or nobody (the ensemble's label stands)."""

    LLM = "llm"
    HUMAN = "human"
    KEEP = "auto"


@dataclass(frozen=True)
class Option:
    """One way to settle a hard sample: its expected accuracy gain, what it costs, and gain per USD."""

    via: Via
    gain: float
    cost_usd: float
    reason: str

    @property
    def value(self) -> float:
        return self.gain / max(self.cost_usd, 1e-9)


def options(p_ensemble: float, probabilities: Mapping[str, float], ledger: Ledger | None, llm_cost_usd: float,
            human_cost_usd: float) -> list[Option]:
    """The ways to settle one hard sample, best gain per USD first; empty: keep the ensemble's label.

    A person is taken as right: gain 1 - P(ensemble right). The LLM's expected accuracy comes from its ledger
    (measured recall per class, weighted by the ensemble's probabilities); it is an option only where that beats the
    ensemble. While the model is new to the project its answers are evidence, not labels: it is asked only beside
    a person (the audit), so that option costs both.
    """
    out: list[Option] = []
    p = min(max(float(p_ensemble), 0.0), 1.0)
    if human_cost_usd >= 0 and p < 1.0:
        out.append(Option(Via.HUMAN, 1.0 - p, human_cost_usd, f"a person: expected gain {1.0 - p:.3f}"))
    if ledger is not None:
        if ledger.new:
            pass  # asked only as part of a person's audit (see `HardSampleReview`)
        elif ledger.all_distrusted:
            pass
        else:
            expected = ledger.expected_accuracy(probabilities)
            if expected is not None and expected > p:
                out.append(Option(Via.LLM, expected - p, llm_cost_usd,
                                  f"LLM: expected accuracy {expected:.3f} > ensemble {p:.3f}"))
    return sorted(out, key=lambda o: -o.value)


def llm_refusal(ledger: Ledger | None) -> str:
    """Why the LLM is not an option for a hard sample (for the task's reason)."""
    if ledger is None:
        return "no LLM reviewer configured"
    if ledger.new:
        return f"LLM new to the project ({ledger.n} of {ledger.min_checks} checks): asked only where a person audits"
    if ledger.all_distrusted:
        return "LLM distrusted on every class"
    return "LLM not expected to beat the ensemble here"
