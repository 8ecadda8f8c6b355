import numpy as np
import pytest

from edgevit.answer import NOT_A_DIGIT, Reject, answer, answers, fit_threshold, rejected


def probs(*rows):
    return np.array(rows, np.float64)


ELEVEN = probs([0.9, *[0.01] * 9, 0.01], [0.05, *[0.01] * 9, 0.86], [0.4, 0.35, *[0.03] * 8, 0.01])


def test_without_a_reject_rule_the_best_digit_is_the_answer():
    assert answer(ELEVEN[1], Reject()).digit == 0  # the extra class is ignored: only digits compete
    a = answer(ELEVEN[0], Reject())
    assert (a.digit, a.reason) == (0, None) and a.confidence == pytest.approx(0.9)


def test_the_reject_class_and_the_threshold_each_say_not_a_digit():
    rule = Reject(cls=10, threshold=0.5)
    assert answer(ELEVEN[0], rule).digit == 0
    by_class = answer(ELEVEN[1], rule)
    assert by_class.digit is None and by_class.reason.startswith("class") and by_class.confidence == pytest.approx(0.86)
    unsure = answer(ELEVEN[2], rule)
    assert unsure.digit is None and unsure.reason.startswith("low confidence") and "0, has 40.0%" in unsure.reason
    assert answer(ELEVEN[1], rule, always_digit=True).digit == 0
    assert rejected(ELEVEN, rule).tolist() == [False, True, True]
    assert answers(ELEVEN, rule).tolist() == [0, NOT_A_DIGIT, NOT_A_DIGIT]


def test_the_fitted_threshold_rejects_at_most_the_allowed_share_of_digits():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 1000)
    digits = np.zeros((1000, 11))
    digits[:, 0] = confidence
    digits[:, 1] = 1 - confidence
    rule = Reject(cls=10)
    t = fit_threshold(digits, rule, max_false_rejection=0.01)
    assert rejected(digits, Reject(10, t)).sum() == 10  # exactly the budget: 1% of 1000
    assert fit_threshold(digits, rule, 0.0) == 0.0


@pytest.mark.parametrize(
    ("meta", "message"),
    [("x", "not an object"), ({"class": 3}, "not the model's last class"), ({"threshold": 1.5}, "not in")],
)
def test_bad_metadata_is_named(meta, message):
    with pytest.raises(ValueError, match=message):
        Reject.from_metadata(meta, 11)
    # the threshold as float32, the probabilities' type in every runtime, so C and numpy compare alike
    assert Reject.from_metadata({"class": 10, "threshold": 0.3}, 11) == Reject(10, float(np.float32(0.3)))


def test_a_class_threshold_rejects_by_the_class_probability_not_by_argmax():
    from edgevit.answer import fit_class_threshold

    rule = Reject.from_metadata({"class": 10, "threshold": 0.0, "class_threshold": 0.2}, 11)
    probs = np.full((3, 11), 0.0, np.float32)
    probs[0, 3], probs[0, 10] = 0.75, 0.25  # the digit is likeliest, but its class is over the threshold
    probs[1, 3], probs[1, 10] = 0.85, 0.15
    probs[2, 10] = 1.0
    assert rejected(probs, rule).tolist() == [True, False, True]
    assert answer(probs[0], rule).digit is None and answer(probs[1], rule).digit == 3
    assert not rejected(probs, Reject(10))[0]  # the likeliest-class rule keeps the first one
    scores = np.zeros((1000, 11), np.float32)
    scores[:, 10] = np.linspace(0, 0.999, 1000)
    t = fit_class_threshold(scores, 10, 0.01)
    assert (scores[:, 10] > t).sum() == 10
    for bad in ({"class": 10, "class_threshold": 1.5}, {"class_threshold": 0.5}):
        with pytest.raises(ValueError):
            Reject.from_metadata(bad, 11)
