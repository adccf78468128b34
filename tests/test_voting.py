"""The pure decision core: no model is loaded here."""

import numpy as np
import pytest

from backend.decision.voting import (
    calibrate,
    decide,
    expected_calibration_error,
    fit_temperature,
    mean_probabilities,
    nll,
)


def test_soft_vote_picks_the_weighted_mean_and_keeps_each_vote():
    a = np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    b = np.array([[0.2, 0.7, 0.1], [0.2, 0.1, 0.7]])
    c = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    d = decide([a, b, c])
    assert d[0].labels == (0,) and d[0].votes == ((0,), (1,), (0,))
    assert d[0].agreement == pytest.approx(2 / 3) and not d[0].unanimous
    assert d[1].labels == (2,) and d[1].unanimous
    # confidence is the calibrated max probability, so it varies with the inputs
    assert d[1].confidence > d[0].confidence
    assert d[0].confidence == pytest.approx(np.mean([a[0], b[0], c[0]], axis=0).max())


def test_weights_change_the_winner():
    a = np.array([[0.9, 0.1]])
    b = np.array([[0.2, 0.8]])
    assert decide([a, b], weights=[1, 3])[0].labels == (1,)
    assert decide([a, b], weights=[3, 1])[0].labels == (0,)
    with pytest.raises(ValueError):
        mean_probabilities([a, b], weights=[0, 0])
    with pytest.raises(ValueError):
        mean_probabilities([])


def test_multiple_choice_takes_every_label_over_threshold():
    p = np.array([[0.9, 0.6, 0.1], [0.2, 0.3, 0.1]])
    d = decide([p], multiple=True)
    assert d[0].labels == (0, 1)
    assert d[1].labels == ()  # nothing applies
    assert d[0].confidence == pytest.approx(0.9 * 0.6 * 0.9)


def test_temperature_scaling_sharpens_or_softens_without_changing_argmax():
    p = np.array([[0.5, 0.3, 0.2]])
    sharp, soft = calibrate(p, 0.5, False), calibrate(p, 2.0, False)
    assert sharp[0].max() > 0.5 > soft[0].max()
    assert sharp.argmax() == soft.argmax() == 0
    np.testing.assert_allclose(calibrate(p, 1.0, False), p, atol=1e-6)


def test_fit_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    n, k = 2000, 3
    y = rng.integers(0, k, n)
    # An overconfident model: right 60% of the time but always says 0.95.
    pred = np.where(rng.random(n) < 0.6, y, (y + 1) % k)
    p = np.full((n, k), 0.025)
    p[np.arange(n), pred] = 0.95
    t = fit_temperature(p, y)
    assert t > 1.5
    assert nll(calibrate(p, t, False), y, False) < nll(p, y, False)
    correct = pred == y
    ece_before = expected_calibration_error(p.max(1), correct)
    ece_after = expected_calibration_error(calibrate(p, t, False).max(1), correct)
    assert ece_after < ece_before / 3


def test_ece_of_perfect_calibration_is_small():
    conf = np.array([0.8] * 10)
    correct = np.array([1] * 8 + [0] * 2)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0
