"""The domain router: per task, how much the project's adapted ensemble speaks, and how much the anchor.

A project bundle learns the project's domain from its corrections and, in doing so, drifts on texts unlike them
(on the SemEval → financial-news stream, 3 to 8 points lost on the source test). The anchor is the bundle the
project started from, kept as it was; a domain model, fitted on the project's texts against the replayed ones,
says per task how much it looks like the project. The project's answer rules where it does, the anchor's where
it does not: a mixture of experts with a learned router, as in Expert Gate (Aljundi et al., CVPR 2017).

Pure numpy over `Decision`s, so it is tested without models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.decision.voting import Decision, answers, confidence


def project_share(p_project: np.ndarray, mode: str = "hard", cutoff: float = 0.5) -> np.ndarray:
    """The project ensemble's weight per task from the domain model's P(project | text).

    "hard" gives each task to one side (P ≥ cutoff → project), so the anchor's view never dilutes a task that is
    the project's own; "soft" is the blend itself, and ignores the cutoff.
    """
    p = np.clip(np.asarray(p_project, dtype=np.float64), 0.0, 1.0)
    if mode == "soft":
        return p
    if mode == "hard":
        return (p >= cutoff).astype(np.float64)
    raise ValueError(f"routing mode must be 'hard' or 'soft', not {mode!r}")


def mix(own: Sequence[Decision], anchor: Sequence[Decision], share: np.ndarray, multiple: bool = False,
         threshold: float = 0.5) -> list[Decision]:
    """Mix two ensembles' calibrated probabilities task by task: share·own + (1 − share)·anchor.

    Votes (the hard-sample rule reads their agreement) are those of the side with the larger share, so a task
    the gate gives wholly to one side is decided exactly as that side alone decides it.
    """
    share = np.asarray(share, dtype=np.float64)
    if not len(own) == len(anchor) == len(share):
        raise ValueError(f"mix needs one share per task: {len(own)} own, {len(anchor)} anchor, {len(share)} shares")
    if not len(own):
        return []
    p_own = np.array([d.probabilities for d in own], dtype=np.float64)
    p_anchor = np.array([d.probabilities for d in anchor], dtype=np.float64)
    if p_own.shape != p_anchor.shape:
        raise ValueError(f"the two ensembles answer over different labels: {p_own.shape} vs {p_anchor.shape}")
    mixed = share[:, None] * p_own + (1.0 - share[:, None]) * p_anchor
    labels = answers(mixed, multiple, threshold)
    conf = confidence(mixed, multiple, threshold)
    out = []
    for i, chosen in enumerate(labels):
        votes = own[i].votes if share[i] >= 0.5 else anchor[i].votes
        out.append(Decision(labels=chosen, confidence=float(conf[i]),
                            probabilities=tuple(float(x) for x in mixed[i]), votes=votes,
                            agreement=float(sum(v == chosen for v in votes) / max(len(votes), 1))))
    return out
