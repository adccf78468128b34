"""The domain router's mixing rule, without models."""

from __future__ import annotations

import numpy as np
import pytest

from backend.decision.mixing import mix, project_share
from backend.decision.voting import decide

OWN = [np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.4, 0.3, 0.3]]),
       np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8]])]
ANCHOR = [np.array([[0.1, 0.1, 0.8], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])]


def test_a_task_given_wholly_to_one_side_is_decided_as_that_side_alone_decides_it():
    own, anchor = decide(OWN, [1, 1], 0.7), decide(ANCHOR, [1], 1.3)
    mixed = mix(own, anchor, np.array([1.0, 0.0, 1.0]))
    assert mixed[0] == own[0]
    assert mixed[1] == anchor[1]
    assert mixed[2] == own[2]


def test_a_soft_share_blends_calibrated_probabilities_and_keeps_the_larger_sides_votes():
    own, anchor = decide(OWN, [1, 1]), decide(ANCHOR, [1])
    mixed = mix(own, anchor, np.array([0.3, 0.5, 0.9]))
    for i, share in enumerate([0.3, 0.5, 0.9]):
        expected = share * np.array(own[i].probabilities) + (1 - share) * np.array(anchor[i].probabilities)
        assert np.allclose(mixed[i].probabilities, expected)
        assert mixed[i].labels == (int(np.argmax(expected)),)
        assert mixed[i].confidence == pytest.approx(float(np.max(expected)))
    assert mixed[0].votes == anchor[0].votes and len(mixed[0].votes) == 1
    assert mixed[1].votes == own[1].votes and mixed[2].votes == own[2].votes
    # Task 0: the anchor (share 0.7) says label 2 and its single vote agrees.
    assert mixed[0].labels == (2,) and mixed[0].agreement == 1.0


def test_multiple_choice_is_thresholded_per_label():
    own = decide([np.array([[0.9, 0.3]] * 2)], multiple=True)
    anchor = decide([np.array([[0.3, 0.9]] * 2)], multiple=True)
    even, mostly_own = mix(own, anchor, np.array([0.5, 0.9]), multiple=True, threshold=0.5)
    assert np.allclose(even.probabilities, [0.6, 0.6]) and even.labels == (0, 1)
    assert np.allclose(mostly_own.probabilities, [0.84, 0.36]) and mostly_own.labels == (0,)


def test_mismatched_inputs_are_refused():
    own, anchor = decide(OWN, [1, 1]), decide(ANCHOR, [1])
    with pytest.raises(ValueError, match="one share per task"):
        mix(own, anchor[:2], np.ones(3))
    with pytest.raises(ValueError, match="different labels"):
        mix(own[:1], decide([np.array([[0.5, 0.5]])]), np.ones(1))
    assert mix([], [], np.array([])) == []


def test_project_share_modes():
    p = np.array([0.0, 0.49, 0.5, 0.97, 1.2])
    assert project_share(p, "hard").tolist() == [0, 0, 1, 1, 1]
    assert project_share(p, "soft").tolist() == [0, 0.49, 0.5, 0.97, 1.0]
    assert project_share(p, "hard", cutoff=0.8).tolist() == [0, 0, 0, 1, 1]
    assert project_share(p, "soft", cutoff=0.8).tolist() == [0, 0.49, 0.5, 0.97, 1.0]
    with pytest.raises(ValueError, match="hard' or 'soft"):
        project_share(p, "sometimes")
