"""What a stream reviewer is: something that gives hard samples a label, or declines to.

The harness plays the people (or the LLM) a project would have; each reviewer says how its labels are
recorded (`source`: "human" corrections train at the policy's human weight, "llm" ones at its LLM one) and whether its
figures come from a simulation, which every output that uses it must say.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    """A reviewer's answer for one hard sample. `label` None: not settled, the item waits for a human."""

    label: str | None
    status: str  # oracle | simulated | the LLM reviewer's status (valid, invalid, abstain, ...)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    raw: str = ""


@dataclass(frozen=True)
class HardSample:
    """One sample the router sent for review, with what the ensemble said about it."""

    task_id: int
    text: str
    gold: str
    predicted: str
    confidence: float
    probabilities: Sequence[float]


class StreamReviewer(Protocol):
    name: str
    source: str  # "human" | "llm": how its labels are recorded as corrections
    simulation: bool

    def review(self, project_id: str, names: Sequence[str], samples: Sequence[HardSample]) -> list[Verdict]:
        """One verdict per sample, in order."""
        ...
