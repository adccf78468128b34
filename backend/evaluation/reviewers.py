"""The reviewers of `autoannotator evaluate --reviewer`: oracle, simulated:P and llm.

`oracle` is the paper's "+Human" (the gold label). `simulated:P` is right with probability P and
otherwise picks another choice at random: a stand-in for a reviewer of known accuracy, recorded with LLM
trust, and always reported as a simulation. `llm` goes through the service's own `HardSampleReview.settle`
(same prompt, parser, cache, budgets and routes as /predict), so an answer that is not exactly one of the
choices is never a label here either.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from backend.decision.states import RouteName
from backend.evaluation.base import HardSample, StreamReviewer, Verdict
from backend.settings import Settings

if TYPE_CHECKING:
    from backend.review.triage import HardSampleReview


class OracleReviewer:
    name = "oracle"
    source = "human"
    simulation = False

    def review(self, project_id: str, names: Sequence[str], samples: Sequence[HardSample]) -> list[Verdict]:
        return [Verdict(s.gold, "oracle") for s in samples]


class SimulatedReviewer:
    source = "llm"
    simulation = True

    def __init__(self, accuracy: float, seed: int = 0):
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"simulated:P needs 0 <= P <= 1, got {accuracy}")
        self.accuracy = accuracy
        self.name = f"simulated:{accuracy:g}"
        self._rng = random.Random(seed)

    def review(self, project_id: str, names: Sequence[str], samples: Sequence[HardSample]) -> list[Verdict]:
        out = []
        for s in samples:
            if self._rng.random() < self.accuracy:
                out.append(Verdict(s.gold, "simulated"))
            else:
                wrong = [n for n in names if n != s.gold]
                out.append(Verdict(self._rng.choice(wrong) if wrong else s.gold, "simulated"))
        return out


class LLMReviewer:
    """The service's reviewer on an OpenAI-compatible endpoint (OPENAI_BASE_URL, LLM_MODEL). The harness runs it
    through the service's own routing (`service`): trust ledger, audit and budgets decide what it settles."""

    name = "llm"
    source = "llm"
    simulation = False
    service = True

    def __init__(self, settings: Settings, review: HardSampleReview | None = None):
        if not settings.llm_model:
            raise ValueError("--reviewer llm needs LLM_MODEL (and OPENAI_BASE_URL for a non-OpenAI endpoint)")
        from backend.review.triage import HardSampleReview

        self.settings = settings
        self.hard = review or HardSampleReview(settings)

    def review(self, project_id: str, names: Sequence[str], samples: Sequence[HardSample]) -> list[Verdict]:
        from backend.review.triage import Outcome

        outcomes = [Outcome([s.predicted], s.confidence, RouteName.LLM, "hard sample") for s in samples]
        settled = self.hard.settle(project_id, names, [s.text for s in samples],
                                   [(s.confidence, s.probabilities) for s in samples], outcomes,
                                   time_budget_s=0)
        out = []
        for o in settled:
            r = o.review
            label = o.labels[0] if o.route == RouteName.LLM else None
            out.append(Verdict(label, r.status if r else "none", r.prompt_tokens if r else 0,
                               r.completion_tokens if r else 0, r.cost_usd if r else 0.0, r.raw if r else ""))
        return out

    def close(self) -> None:
        reviewer = self.hard._reviewer
        if reviewer is not None:
            reviewer.close()


def make_reviewer(spec: str, settings: Settings, seed: int = 0) -> StreamReviewer:
    """`oracle`, `simulated:P` or `llm` → a reviewer; anything else is a usage error naming the choices."""
    if spec == "oracle":
        return OracleReviewer()
    if spec.startswith("simulated:"):
        try:
            p = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"--reviewer {spec!r}: P must be a number, e.g. simulated:0.8") from None
        return SimulatedReviewer(p, seed)
    if spec == "llm":
        return LLMReviewer(settings)
    raise ValueError(f"--reviewer {spec!r}: expected oracle, simulated:P (e.g. simulated:0.8) or llm")
