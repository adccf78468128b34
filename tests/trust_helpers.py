"""Seed a trust ledger: checks of an LLM against people, as the webhook records them."""

from __future__ import annotations

from collections.abc import Sequence

from backend.store.trust import TrustLedger

SENTIMENT = ("Positive", "Negative", "Neutral")


def seed_trust(engine, project: str, llm_model: str, control: str = "sentiment", labels: Sequence[str] = SENTIMENT,
               n: int = 40, llm_right: float = 1.0, ensemble_right: float = 0.0, first_task: int = 100_000,
               answers: Sequence[str] | None = None) -> None:
    """`n` checks per answered label (`answers`, default all): the LLM right on a `llm_right` share, the ensemble
    on an `ensemble_right` share."""
    ledger = TrustLedger(engine)
    task = first_task
    for label in answers or labels:
        other = next(x for x in labels if x != label)
        for k in range(n):
            llm_ok, ens_ok = k < round(llm_right * n), k < round(ensemble_right * n)
            # By the LLM's answer: it said `label`; the person said `label` when it was right.
            ledger.record(project, control, llm_model, task, label, label if llm_ok else other,
                          (label if llm_ok else other) if ens_ok else "__wrong__")
            task += 1
