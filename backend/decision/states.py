"""The states the service's records move through: where a task went, and where a durable job stands.

Enums of `str`, so they are stored and sent as their plain values ("auto", "pending") and compare equal to them.
"""

from __future__ import annotations

from enum import StrEnum


class RouteName(StrEnum):
    """Who settled a task's label."""

    AUTO = "auto"  # the ensemble, confident enough
    LLM = "llm"  # the LLM, for a class where the trust ledger says it beats the ensemble
    HUMAN = "human"  # left to a person in Label Studio
    PENDING = "pending"  # REVIEW_MODE=async: the LLM has not answered yet


# The route that needs the most care wins when a task has several controls.
CARE = {RouteName.AUTO: 0, RouteName.LLM: 1, RouteName.PENDING: 2, RouteName.HUMAN: 3}


class JobState(StrEnum):
    """A durable job (a training stage, an LLM review batch) from its row to its end."""

    PENDING = "pending"  # written, not yet sent to rq or taken by the server's loop
    QUEUED = "queued"  # sent to rq
    RUNNING = "running"
    PROMOTED = "promoted"  # a stage whose candidate passed the gate
    REJECTED = "rejected"  # a stage whose candidate the gate kept aside
    SKIPPED = "skipped"  # a stage with nothing to train on
    PUSH_FAILED = "push_failed"  # a review done, its push to Label Studio retried
    DONE = "done"  # a review done and pushed (or nothing to push to)
    FAILED = "failed"  # out of attempts: left visible


WAITING = (JobState.PENDING, JobState.QUEUED)
TRAINED = (JobState.RUNNING, JobState.PROMOTED, JobState.REJECTED)  # stages that read the corrections
