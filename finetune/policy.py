"""When to train, on what, and whether a candidate may replace the served version.

Pure functions: the rules are easy to get wrong and must be testable without models. Weights
follow what a simulation of the annotation-stream protocol showed: in-domain reviewed items count several
times a replayed source item, LLM-settled items less than human ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Policy:
    train_every_n: int = 20  # new human corrections that trigger a stage
    bootstrap_min: int = 10  # human annotations before a project with no bundle trains its first one
    human_weight: float = 3.0
    # An LLM-settled label weighs a person's times the lower bound of the LLM's measured accuracy on that class
    # (0 unless trusted): a label counts as much as it is likely to be right (docs/settled-choices.md).
    llm_weight: float = 3.0
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


def gate(candidate_f1: float | None, current_f1: float | None, n_holdout: int, policy: Policy,
         llm_rows: int = 0) -> GateResult:
    """Promote unless the candidate loses more than the margin on the frozen human holdout.

    A candidate trained on LLM labels is never promoted without people's held-out labels to judge it by: an LLM
    that is wrong in a skewed way would otherwise teach the specialists its errors unchecked."""
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
    return GateResult(False, f"macro-F1 {candidate_f1:.3f} < current {current_f1:.3f} - margin {policy.gate_margin} "
                             f"on {n_holdout} held-out items")
