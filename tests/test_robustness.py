"""Damaged digits for training and for the robustness report (edgevit.robustness)."""

import numpy as np
import pytest

from edgevit.answer import Reject
from edgevit.data import Split
from edgevit.degrade import KINDS, SEVERITIES
from edgevit.robustness import Row, by_kind, degraded_bank, held_out_set, mean_of, score, writers_set


@pytest.fixture(scope="module")
def small(mnist):
    return Split(mnist.train.images[:200], mnist.train.labels[:200])


def test_the_bank_is_the_same_whatever_the_number_of_workers(small):
    one = degraded_bank(small, 600, seed=3)
    two = degraded_bank(small, 600, seed=3, workers=2)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    images, labels, refused = one
    assert images.dtype == np.uint8 and images.shape == (600 - refused, 28, 28) and len(labels) == len(images)
    assert set(labels) <= set(small.labels) and refused < 30
    assert not np.array_equal(degraded_bank(small, 50, seed=4)[0], images[:50])


def test_the_bank_keeps_each_image_with_its_own_label(small, shipped):
    """The shipped model reads most damaged digits as their labels: the labels travel with the images."""
    images, labels, _ = degraded_bank(small, 300, seed=0)
    predicted = shipped.predict(images.astype(np.float32)).probs[:, :10].argmax(1)
    assert (predicted == labels).mean() > 0.6


def test_the_held_out_set_has_every_kind_at_every_severity(mnist):
    cells = held_out_set(mnist.test, per_cell=4)
    assert [(c.kind, c.severity) for c in cells] == [(k.name, s) for k in KINDS for s in SEVERITIES]
    for c in cells:
        assert len(c.images) + c.refused == 4 and c.images.shape[1:] == (28, 28) and len(c.labels) == len(c.images)
    again = held_out_set(mnist.test, per_cell=4, workers=2)
    np.testing.assert_array_equal(np.concatenate([c.images for c in cells]), np.concatenate([c.images for c in again]))


def test_score_counts_right_refused_and_wrong():
    from edgevit.robustness import Cell

    cell = Cell("noise", 1, np.zeros((4, 28, 28), np.float32), np.array([1, 2, 3, 4]), refused=1)
    probs = np.eye(11)[[1, 2, 10, 0]]  # right, right, "not a digit" by class, wrong
    (row,) = score([cell], lambda images: probs, Reject(10, 0.0))
    assert (row.images, row.right, row.not_a_digit, row.wrong) == (5, 2 / 5, 2 / 5, 1 / 5)  # the refused one too


def test_kinds_weigh_their_images_and_the_mean_weighs_kinds_alike():
    rows = [Row("a", 1, 100, 1.0, 0.0, 0.0), Row("a", 2, 300, 0.5, 0.5, 0.0), Row("b", 1, 10, 0.0, 0.0, 1.0)]
    a, b = by_kind(rows)
    assert (a.kind, a.images, a.right, a.not_a_digit) == ("a", 400, 0.625, 0.375) and b.wrong == 1.0
    mean = mean_of([a, b])
    assert mean.right == pytest.approx(0.3125) and mean.wrong == pytest.approx(0.5) and mean.images == 410


def test_other_writers_come_one_cell_a_group(mnist):
    cells = writers_set(mnist.test, per_group=10)
    assert [c.kind for c in cells] == ["strokes", "uci", "printed", "canvas", "scans"]
    for c in cells:
        assert len(c.images) + c.refused == 10 and set(c.labels) <= set(range(10))
