"""The pure decision core: no model is loaded here."""

import numpy as np
import pytest

from backend.decision.voting import (
    calibrate,
    decide,
    expected_calibration_error,
    fit_temperature,
    fit_weights,
    mean_probabilities,
    nll,
    unanimous,
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


def _specialist(rng: np.random.Generator, y: np.ndarray, accuracy: float, k: int = 3) -> np.ndarray:
    """Probabilities that put most mass on the gold label `accuracy` of the time, on a random one otherwise."""
    n = len(y)
    said = np.where(rng.random(n) < accuracy, y, rng.integers(0, k, n))
    p = rng.dirichlet(np.ones(k), n) * 0.3
    p[np.arange(n), said] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def test_fit_weights_lean_on_the_specialist_that_is_right():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 3000)
    probas = [_specialist(rng, y, a) for a in (0.8, 0.55, 0.35)]
    w = fit_weights(probas, y)
    assert w.mean() == pytest.approx(1.0)
    assert w[0] > 2 * w[1] > 0 and w[1] > w[2] > 0  # ranked by accuracy, none dropped (the pull to equal)
    assert nll(mean_probabilities(probas, w), y, False) < nll(mean_probabilities(probas), y, False) - 0.05
    # the loss is convex on the simplex: the same optimum from a general-purpose optimiser's angle
    a = np.stack(probas)[:, np.arange(len(y)), y]

    def loss(v: np.ndarray) -> float:
        v = v / v.sum()
        return float(-np.mean(np.log(v @ a)) - 10 / len(y) * np.mean(np.log(v)))

    for other in ([1.0, 1.0, 1.0], [3.0, 0.0001, 0.0001], [2.0, 0.8, 0.2], [2.6, 0.3, 0.1]):
        assert loss(w) <= loss(np.array(other)) + 1e-9


def test_fit_weights_pull_keeps_a_weak_specialist_while_rows_are_few():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 40)
    probas = [_specialist(rng, y, 0.9), _specialist(rng, y, 0.4)]
    few = fit_weights(probas, y)
    free = fit_weights(probas, y, prior_rows=0.0)
    assert few[1] > free[1]
    assert few[1] > 0.1  # 40 rows against a pull worth 10 cannot silence it
    # row weights count: rows weighted zero say nothing, and only the pull is left
    assert fit_weights(probas, y, sample_weight=np.zeros(40) + 1e-12) == pytest.approx([1.0, 1.0], abs=0.05)


def test_fit_weights_multi_label_and_edge_cases():
    rng = np.random.default_rng(2)
    y = (rng.random((2000, 4)) < 0.3).astype(int)
    good = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.05, y.shape), 0.01, 0.99)
    noise = rng.random(y.shape)
    w = fit_weights([good, noise], y, multiple=True)
    assert w[0] > 10 * w[1]
    assert fit_weights([good], y, multiple=True) == pytest.approx([1.0])  # one specialist: nothing to weigh
    assert fit_weights([good, noise], y[:0], multiple=True) == pytest.approx([1.0, 1.0])  # no rows: equal
    with pytest.raises(ValueError):
        fit_weights([], y)


def test_decide_applies_the_unanimous_temperature_to_unanimous_tasks_only():
    a = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    b = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3]])
    assert list(unanimous([a, b])) == [True, False, True]
    plain, split = decide([a, b], temperature=1.5), decide([a, b], temperature=1.5, unanimous_temperature=0.5)
    assert [d.labels for d in plain] == [d.labels for d in split]  # a temperature never moves a single answer
    assert split[1].confidence == pytest.approx(plain[1].confidence)  # the split task keeps `temperature`
    assert split[0].confidence > plain[0].confidence and split[2].confidence > plain[2].confidence
    assert split[0].confidence == pytest.approx(calibrate(mean_probabilities([a, b])[:1], 0.5, False).max())
