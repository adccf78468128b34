"""How far an LLM is trusted on a project: measured against people, class by class.

Every LLM answer that a person also labels is a *check*: the LLM's answer, the person's label, and what the ensemble
said on the same task. Checks come from the audit (a hash-picked share of LLM-reviewed tasks also sent to a person)
and from any LLM-settled task an annotator later annotates. The ledger counts them per class two ways:

- by the LLM's answer: when the LLM says "c", how often is it right (its precision on c)? This decides whether an
  answer "c" may become a label: only where the lower end of its 95 % interval beats the ensemble's accuracy on the
  same items (TRUSTED). Too few checks is PROBATION, measured and losing is DISTRUSTED.
- by the person's label: when the truth is "c", how often does the LLM find it (its recall on c)? This is what the
  router expects of the LLM on a task before asking it, weighted by the ensemble's probabilities.

Pure stdlib: the rules are tested without a database, a model or an LLM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: Checks of one answered class before its state leaves probation.
MIN_CHECKS_PER_CLASS = 10
#: Checks of a model on a project before it leaves probation as a whole (until then every LLM review is audited).
MIN_CHECKS = 30
#: z for the two-sided 95 % interval.
Z95 = 1.959964


class TrustState(StrEnum):
    PROBATION = "probation"  # too few checks to say
    TRUSTED = "trusted"  # the lower bound of the LLM's accuracy beats the ensemble on the same items
    DISTRUSTED = "distrusted"  # measured, and not better than the ensemble


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of right/n (95 % by default); None without data."""
    if n <= 0:
        return None
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max((centre - spread) / (1 + z * z / n), 0.0), min((centre + spread) / (1 + z * z / n), 1.0)


@dataclass(frozen=True)
class Check:
    """One LLM answer that a person also labelled, with the ensemble's label on the same task."""

    llm_answer: str
    human_label: str
    ensemble_label: str


@dataclass(frozen=True)
class Tally:
    """Checks of one slice: how many, how many the LLM got right, how many the ensemble did."""

    n: int = 0
    llm_right: int = 0
    ensemble_right: int = 0

    def add(self, llm_right: bool, ensemble_right: bool) -> Tally:
        return Tally(self.n + 1, self.llm_right + int(llm_right), self.ensemble_right + int(ensemble_right))

    @property
    def llm_accuracy(self) -> float | None:
        return self.llm_right / self.n if self.n else None

    @property
    def ensemble_accuracy(self) -> float | None:
        return self.ensemble_right / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson(self.llm_right, self.n)


@dataclass(frozen=True)
class ClassTrust:
    """One class's figures and the state they put it in."""

    label: str
    by_answer: Tally
    by_label: Tally
    state: TrustState
    reason: str

    def as_dict(self) -> dict[str, object]:
        ci = self.by_answer.interval
        return {"label": self.label, "state": self.state.value, "reason": self.reason,
                "n": self.by_answer.n, "llm_accuracy": _r(self.by_answer.llm_accuracy),
                "llm_interval": [_r(ci[0]), _r(ci[1])] if ci else None,
                "ensemble_accuracy": _r(self.by_answer.ensemble_accuracy),
                "n_by_label": self.by_label.n, "llm_recall": _r(self.by_label.llm_accuracy),
                "ensemble_recall": _r(self.by_label.ensemble_accuracy)}


def judge(label: str, by_answer: Tally, by_label: Tally, min_checks: int = MIN_CHECKS_PER_CLASS) -> ClassTrust:
    """The state of one class: probation under `min_checks`, else trusted only if the LLM's lower bound wins."""
    if by_answer.n < min_checks:
        return ClassTrust(label, by_answer, by_label, TrustState.PROBATION,
                          f"{by_answer.n} checks of answer {label!r} (< {min_checks})")
    low, _ = by_answer.interval or (0.0, 0.0)
    ens = by_answer.ensemble_accuracy or 0.0
    if low > ens:
        return ClassTrust(label, by_answer, by_label, TrustState.TRUSTED,
                          f"LLM right on {by_answer.llm_right}/{by_answer.n} answers {label!r} (95% lower bound "
                          f"{low:.3f}) > ensemble {ens:.3f} on the same items")
    return ClassTrust(label, by_answer, by_label, TrustState.DISTRUSTED,
                      f"LLM right on {by_answer.llm_right}/{by_answer.n} answers {label!r} (95% lower bound "
                      f"{low:.3f}) does not beat the ensemble's {ens:.3f} on the same items")


@dataclass(frozen=True)
class Ledger:
    """What one LLM model has shown on one project's control, per class."""

    classes: Mapping[str, ClassTrust] = field(default_factory=dict)
    n: int = 0
    min_checks: int = MIN_CHECKS

    @classmethod
    def from_checks(cls, checks: Iterable[Check], labels: Sequence[str],
                    min_checks_per_class: int = MIN_CHECKS_PER_CLASS, min_checks: int = MIN_CHECKS) -> Ledger:
        by_answer = {x: Tally() for x in labels}
        by_label = {x: Tally() for x in labels}
        n = 0
        for c in checks:
            n += 1
            llm_right, ens_right = c.llm_answer == c.human_label, c.ensemble_label == c.human_label
            if c.llm_answer in by_answer:
                by_answer[c.llm_answer] = by_answer[c.llm_answer].add(llm_right, ens_right)
            if c.human_label in by_label:
                by_label[c.human_label] = by_label[c.human_label].add(llm_right, ens_right)
        classes = {x: judge(x, by_answer[x], by_label[x], min_checks_per_class) for x in labels}
        return cls(classes, n, min_checks)

    @property
    def new(self) -> bool:
        """Too few checks on this project to trust the model anywhere yet: every review it makes is audited."""
        return self.n < self.min_checks

    def state(self, answer: str) -> TrustState:
        ct = self.classes.get(answer)
        return ct.state if ct is not None else TrustState.PROBATION

    def accepts(self, answer: str) -> tuple[bool, str]:
        """Whether the LLM's answer may become the label, and why."""
        ct = self.classes.get(answer)
        if ct is None:
            return False, f"answer {answer!r} is not one of the ledger's classes"
        if ct.state is TrustState.TRUSTED:
            return True, f"LLM trusted on {answer!r}: {ct.reason}"
        return False, f"LLM {ct.state.value} on {answer!r}: {ct.reason}"

    @property
    def all_distrusted(self) -> bool:
        return bool(self.classes) and all(c.state is TrustState.DISTRUSTED for c in self.classes.values())

    def expected_accuracy(self, probabilities: Mapping[str, float]) -> float | None:
        """The LLM's expected accuracy on a task: its measured recall per class, weighted by the ensemble's
        probability of that class. None while no class has a measured recall."""
        total = weight = 0.0
        for label, p in probabilities.items():
            ct = self.classes.get(label)
            if ct is None or ct.by_label.n == 0:
                continue
            # Laplace-smoothed: a class checked twice says little.
            total += p * (ct.by_label.llm_right + 1) / (ct.by_label.n + 2)
            weight += p
        return total / weight if weight > 0 else None

    def training_weight(self, answer: str, llm_weight: float) -> float:
        """How much an LLM-settled label of class `answer` counts in training: the policy's LLM weight scaled by the
        lower bound of the LLM's measured accuracy on that answer; 0 unless the class is trusted."""
        ct = self.classes.get(answer)
        if ct is None or ct.state is not TrustState.TRUSTED:
            return 0.0
        low, _ = ct.by_answer.interval or (0.0, 0.0)
        return llm_weight * low

    def audit_rate(self, share: float) -> float:
        """The share of LLM reviews a person also checks: all of them while the model is new to the project."""
        return 1.0 if self.new else share

    def as_dict(self) -> dict[str, object]:
        return {"checks": self.n, "new": self.new, "classes": [c.as_dict() for c in self.classes.values()]}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
