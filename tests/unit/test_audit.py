"""The audit (REVIEW_AUDIT_SHARE): a fixed random share of tasks a human reviews whatever the confidence, inside the
review budget, held out from training. Pure: the hash and the router, no model."""

from __future__ import annotations

import pytest

from backend.decision.audit import is_audit
from backend.decision.routing import cap_review
from backend.decision.voting import Decision
from backend.review.triage import HardSampleReview
from backend.settings import Settings
from finetune.corrections import CorrectionLog, is_holdout


def test_audit_is_a_fixed_random_share_nested_across_shares_and_apart_from_the_holdout():
    ids = range(20_000)
    three = [is_audit("7", t, 0.03) for t in ids]
    assert sum(three) / len(three) == pytest.approx(0.03, abs=0.004)
    assert three == [is_audit("7", t, 0.03) for t in ids]  # the same task, the same answer, every time
    five = [is_audit("7", t, 0.05) for t in ids]
    assert all(b for a, b in zip(three, five, strict=True) if a)  # a larger share adds tasks, never swaps them
    assert not any(is_audit("7", t, 0.0) for t in ids) and not is_audit("7", None, 0.5)
    assert [is_audit("8", t, 0.03) for t in ids] != three  # each project has its own sample
    # Independent of the gate's holdout: about a fifth of the audited tasks are in it, as of all tasks.
    held = [is_holdout("7", t, 5) for t, a in zip(ids, three, strict=True) if a]
    assert 0.13 < sum(held) / len(held) < 0.27


def _decision(confidence: float) -> Decision:
    other = (1 - confidence) / 2
    return Decision(labels=(0,), confidence=confidence, probabilities=(confidence, other, other), votes=((0,),),
                    agreement=1.0)


def test_audited_tasks_go_to_a_human_and_come_out_of_the_review_share():
    router = HardSampleReview(Settings.from_env({}, review_rule="confidence", review_confidence_threshold=0.9,
                                                review_max_share=0.25))
    confidences = [0.99, 0.98, 0.5, 0.6, 0.7, 0.8, 0.97, 0.99, 0.95, 0.96, 0.55, 0.65]
    decisions = [_decision(c) for c in confidences]
    _, plain_hard = router.triage(["a", "b", "c"], decisions)
    assert plain_hard == [2, 3, 10]  # 3 of 12 = 25%, the least confident
    audited = [i in (0, 3) for i in range(len(decisions))]  # a sure one and a hard one
    out, hard = router.triage(["a", "b", "c"], decisions, audited=audited)
    assert hard == [2]  # 3 reviewed in all: two audited, the least confident of the rest
    for i in (0, 3):
        assert out[i].route == "human" and "audit" in out[i].reason and out[i].score < 0.5
    assert all(out[i].route == "auto" for i in range(len(decisions)) if i not in (0, 2, 3))
    assert "REVIEW_MAX_SHARE" in out[10].reason  # released by the cap the audit took a share of
    assert cap_review([0, 1, 2], [0.1, 0.2, 0.3], 12, 0.25, reserved=3) == ([], [0, 1, 2])
    assert cap_review([0, 1], [0.1, 0.2], 12, 1.0, reserved=3) == ([0, 1], [])  # no cap, nothing to take from


def test_audited_annotations_are_held_out_from_training(tmp_path):
    from backend.store import Store

    log = CorrectionLog(Store(f"sqlite:///{tmp_path}/db.sqlite"), holdout_every=0, audit_share=0.2)
    records = [{"control": "c", "choices": ["x"], "text": f"text {t}", "task_id": t, "annotation_id": t}
               for t in range(200)]
    log.record("p", records, seq=1)
    held = {r["task_id"] for r in log.rows("p") if r["holdout"]}
    assert held == {t for t in range(200) if is_audit("p", t, 0.2)} and held
    assert log.human_count("p") == 200 - len(held)


def test_a_bad_audit_share_is_refused():
    with pytest.raises(ValueError, match="REVIEW_AUDIT_SHARE"):
        Settings.from_env({"REVIEW_AUDIT_SHARE": "1.5"})
