"""A stated accuracy for auto-accepted labels (TARGET_ACCURACY), and the threshold that keeps it.

Evidence is the random audit (REVIEW_AUDIT_SHARE): tasks a person labelled whatever the ensemble's confidence, so
the audited tasks above a confidence t are a uniform sample of every task above t. For each candidate threshold on
a fixed grid, the exact (Clopper-Pearson) one-sided lower bound of the ensemble's accuracy on the audited tasks at
or above it is computed; the lowest threshold whose bound reaches the target is used. The grid has G points, so each
bound is taken at 95 % / G (Bonferroni): choosing the threshold after looking does not inflate the claim. With no
threshold meeting the target (thin evidence, or models not good enough), the threshold is 1: every task is sent for
review within the budgets, and the answer says so.

Pure stdlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Candidate thresholds: coarse on purpose, each one costs a share of the 5 % error allowance.
GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99)
ALPHA = 0.05


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def exact_lower(right: int, n: int, alpha: float = ALPHA) -> float:
    """The one-sided Clopper-Pearson lower bound: the smallest p with P(X >= right | p) >= alpha."""
    if n <= 0 or right <= 0:
        return 0.0
    lo, hi = 0.0, right / n
    for _ in range(60):
        mid = (lo + hi) / 2
        if _binom_sf(right, n, mid) >= alpha:
            hi = mid
        else:
            lo = mid
    return lo


@dataclass(frozen=True)
class Stated:
    """The threshold derived for a target accuracy, and the evidence behind it."""

    target: float
    threshold: float  # auto-accept at or above this confidence; 1.0: no threshold holds the target yet
    bound: float | None  # the exact lower bound at the threshold (Bonferroni over the grid)
    n: int  # audited tasks at or above the threshold
    right: int
    audited: int  # audited tasks in all
    met: bool

    def as_dict(self) -> dict[str, object]:
        return {"target_accuracy": self.target, "threshold": self.threshold,
                "stated_lower_bound": None if self.bound is None else round(self.bound, 4),
                "evidence": {"audited_tasks": self.audited, "at_or_above_threshold": self.n, "right": self.right,
                             "method": f"exact binomial lower bound at {1 - ALPHA:.0%}, Bonferroni over "
                                       f"{len(GRID)} thresholds"},
                "met": self.met}


def threshold_for_target(confidences: Sequence[float], right: Sequence[bool], target: float,
                         grid: Sequence[float] = GRID, alpha: float = ALPHA) -> Stated:
    """The lowest grid threshold whose audited tasks support `target` at 1 - alpha; else threshold 1.0."""
    if not 0.0 < target < 1.0:
        raise ValueError(f"target accuracy must lie strictly between 0 and 1, not {target}")
    pairs = list(zip(confidences, right, strict=True))
    each = alpha / max(len(grid), 1)
    best: Stated | None = None
    for t in sorted(grid):
        kept = [ok for c, ok in pairs if c >= t]
        n, k = len(kept), sum(bool(x) for x in kept)
        bound = exact_lower(k, n, each) if n else None
        if bound is not None and bound >= target:
            best = Stated(target, t, bound, n, k, len(pairs), True)
            break
    if best is not None:
        return best
    return Stated(target, 1.0, None, 0, 0, len(pairs), False)
