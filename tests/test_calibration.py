import numpy as np
import pytest

from edgevit.calibration import expected_calibration_error, fit_temperature, nll, reliability, softmax


def test_ece_of_a_known_table():
    # four images at confidence 0.9 (three right), two at 0.6 (both right)
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    expected = 4 / 6 * abs(0.75 - 0.9) + 2 / 6 * abs(1.0 - 0.6)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    table = reliability(probs, labels)
    assert len(table) == 15 and sum(b.images for b in table) == 6
    assert [b.images for b in table if b.images] == [2, 4]


def test_a_perfectly_calibrated_model_has_no_error():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    labels = (rng.uniform(size=confidence.size) >= confidence).astype(int)  # right with probability = confidence
    probs = np.stack([confidence, 1 - confidence], 1)
    assert expected_calibration_error(probs, labels) < 0.005


def test_the_fitted_temperature_recovers_the_one_that_made_the_data():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 3, (20_000, 10))
    labels = np.array([rng.choice(10, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 2.5  # what a model trained too sharp would output
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(2.5, rel=0.05)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, t), labels)
    assert after < 0.01 < before


def test_temperature_changes_no_prediction_and_needs_data():
    logits = np.random.default_rng(2).normal(size=(50, 10))
    assert (softmax(logits, 0.3).argmax(1) == softmax(logits, 4.0).argmax(1)).all()
    with pytest.raises(ValueError, match="at least one"):
        fit_temperature(logits[:0], np.zeros(0, int))
