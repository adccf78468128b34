"""Continual-learning rules, without models."""

import numpy as np

from finetune.policy import Policy, gate, replay_indices, training_reason

P = Policy(train_every_n=20, bootstrap_min=10, gate_margin=0.02, gate_min_holdout=5)


def test_when_to_train():
    assert training_reason(5, 5, has_bundle=False, policy=P) is None
    assert "cold start" in training_reason(10, 10, has_bundle=False, policy=P)
    assert training_reason(3, 13, has_bundle=False, policy=P) is None  # a cold start already has the first 10
    assert training_reason(19, 100, has_bundle=True, policy=P) is None
    assert training_reason(20, 100, has_bundle=True, policy=P) == "20 new corrections"
    assert training_reason(0, 100, has_bundle=True, policy=P, explicit=True) == "START_TRAINING"


def test_gate():
    assert gate(0.5, None, 0, P).promote  # nothing to compare with
    assert gate(0.70, 0.71, 30, P).promote  # within the margin
    worse = gate(0.60, 0.71, 30, P)
    assert not worse.promote and "0.600 < current 0.710" in worse.reason
    assert gate(0.10, 0.90, 3, P).promote  # too few held-out items to measure: not gated, and it says so
    assert "not gated" in gate(0.10, 0.90, 3, P).reason


def test_replay_sample_is_stable_and_bounded():
    a, b = replay_indices(10_000, 2000, seed=1), replay_indices(10_000, 2000, seed=1)
    assert np.array_equal(a, b) and len(a) == 2000 and len(set(a.tolist())) == 2000
    assert replay_indices(50, 2000).tolist() == list(range(50))
