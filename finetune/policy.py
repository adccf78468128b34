"""When to train, on what, and whether a candidate may replace the served version.

Pure functions: the rules are easy to get wrong and must be testable without models. Weights
follow what the stream simulation in shared/data showed: in-domain reviewed items count several
times a replayed source item, LLM-settled items less than human ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Policy:
    train_every_n: int = 20  # new human corrections that trigger a stage
    bootstrap_min: int = 10  # human annotations before a project with no bundle trains its first one
    human_weight: float = 3.0
    llm_weight: float = 1.0  # lower-trust labels: the LLM's verdicts on hard samples
    replay_weight: float = 1.0
    replay_size: int = 20000  # earlier data replayed each stage so specialists do not forget
    gate_margin: float = 0.02  # macro-F1 a candidate may lose against the current version
    gate_min_holdout: int = 5


def training_reason(new_human: int, total_human: int, has_bundle: bool, policy: Policy,
                    explicit: bool = False) -> str | None:
    """Why a stage should start now, or None. START_TRAINING still needs enough data to learn from."""
    if not has_bundle:
        # `new_human` counts only what no running or finished stage has seen: one cold start at a time.
        if total_human >= policy.bootstrap_min and new_human >= policy.bootstrap_min:
            return f"cold start: {total_human} human annotations"
        return None
    if explicit:
        return "START_TRAINING"
    if new_human >= policy.train_every_n:
        return f"{new_human} new corrections"
    return None


def replay_indices(n_available: int, size: int, seed: int = 0) -> np.ndarray:
    """A fixed-seed sample of earlier data, the same across stages so results are reproducible."""
    if n_available <= size:
        return np.arange(n_available)
    return np.sort(np.random.default_rng(seed).choice(n_available, size=size, replace=False))


@dataclass(frozen=True)
class GateResult:
    promote: bool
    reason: str


def worse_beyond_chance(lost: int, won: int, alpha: float = 0.05) -> bool:
    """The exact one-sided McNemar test on paired held-out items: `lost` the current version gets right and the
    candidate wrong, `won` the reverse. True when so many losses are unlikely (< alpha) if both were as good."""
    n = lost + won
    if lost <= won:
        return False
    tail = sum(math.comb(n, k) for k in range(lost, n + 1)) / 2**n
    return tail < alpha


def gate(candidate_f1: float | None, current_f1: float | None, n_holdout: int, policy: Policy,
         llm_rows: int = 0, paired: tuple[int, int] | None = None) -> GateResult:
    """Promote unless the candidate loses more than the margin on the frozen human holdout.

    A candidate trained on LLM labels is never promoted without people's held-out labels to judge it by: an LLM
    that is wrong in a skewed way would otherwise teach the specialists its errors unchecked. With `paired`
    (held-out items only the current version gets right, only the candidate does), a loss past the margin must
    also be more than chance on those items: on a small holdout (people label a few % of a project) macro-F1
    moves by several points between equally good models, and a gate that rejects on noise stops the learning."""
    if llm_rows and n_holdout < policy.gate_min_holdout:
        return GateResult(False, f"trained on {llm_rows} LLM labels with {n_holdout} held-out human labels "
                                 f"(< {policy.gate_min_holdout}): not promoted without people to judge it")
    if current_f1 is None:
        return GateResult(True, "first version for this project")
    if candidate_f1 is None or n_holdout < policy.gate_min_holdout:
        return GateResult(True, f"holdout has {n_holdout} items (< {policy.gate_min_holdout}): not gated")
    if candidate_f1 >= current_f1 - policy.gate_margin:
        return GateResult(True, f"macro-F1 {candidate_f1:.3f} vs current {current_f1:.3f} "
                                f"on {n_holdout} held-out items")
    if paired is not None and not worse_beyond_chance(*paired):
        return GateResult(True, f"macro-F1 {candidate_f1:.3f} vs current {current_f1:.3f} on {n_holdout} held-out "
                                f"items, but within chance: it loses {paired[0]} items and wins {paired[1]}")
    lost = f" (loses {paired[0]} items, wins {paired[1]})" if paired is not None else ""
    return GateResult(False, f"macro-F1 {candidate_f1:.3f} < current {current_f1:.3f} - margin {policy.gate_margin} "
                             f"on {n_holdout} held-out items{lost}")
