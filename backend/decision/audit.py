"""The audit: a fixed random share of tasks that a human reviews whatever the ensemble's confidence.

Why: the router sends the least confident answers for review, so corrections of them tell how right the models are
where they doubt, not where they are sure. A uniform spot check is the one reviewed sample whose accuracy speaks for
every task: the temperature is fitted on it, and it states what the auto-accepted labels are worth in a live project,
where no gold label exists.

Chosen by a hash of project and task id, like the gate's holdout (finetune/corrections.py): the same task is audited
whenever it is predicted or annotated, on every machine, with no state kept; a larger share picks a superset of a
smaller one. Pure stdlib.
"""

from __future__ import annotations

import hashlib


def is_audit(project_id: str, task_id: int | None, share: float, salt: str = "audit") -> bool:
    """Whether an audit of this `share` picks this task (independent of the holdout's own hash). `salt` names
    the audit: "audit" is REVIEW_AUDIT_SHARE's, "llm-audit" LLM_AUDIT_SHARE's, so the two pick apart."""
    if share <= 0.0 or task_id is None:
        return False
    if share >= 1.0:
        return True
    digest = hashlib.sha256(f"{salt}:{project_id}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32
