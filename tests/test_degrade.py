"""Damaged captures of digits: every kind's two generators, and the capture that encodes them."""

import io

import numpy as np
import pytest
from PIL import Image

from edgevit.degrade import FAMILIES, KINDS, PRESENTATIONS, SEVERITIES, Damage, capture, kind, ops


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)), np.float32)


@pytest.fixture(scope="module")
def digit(mnist):
    return mnist.test.images[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("damage", KINDS, ids=[k.name for k in KINDS])
def test_every_kind_changes_the_digit_and_stays_an_image(digit, damage, family):
    for presentation in PRESENTATIONS:
        clean = decoded(capture(digit, [], family, np.random.default_rng(1), presentation))
        hurt = decoded(capture(digit, [Damage(damage, SEVERITIES[3])], family, np.random.default_rng(1), presentation))
        assert hurt.shape == clean.shape and hurt.dtype == np.float32
        assert np.abs(hurt - clean).mean() > 0.1, (damage.name, presentation)  # grey levels on [0, 255]


def test_a_capture_is_a_pure_function_of_its_generator(digit):
    damages = [Damage(kind("strike"), 0.7), Damage(kind("noise"), 0.3)]
    first = capture(digit, damages, "train", np.random.default_rng(5), "paper")
    assert capture(digit, damages, "train", np.random.default_rng(5), "paper") == first
    assert capture(digit, damages, "train", np.random.default_rng(6), "paper") != first


def test_the_two_families_draw_differently(digit):
    for damage in KINDS:
        a = capture(digit, [Damage(damage, 0.9)], "train", np.random.default_rng(2))
        b = capture(digit, [Damage(damage, 0.9)], "held-out", np.random.default_rng(2))
        assert a != b, damage.name


def test_severity_makes_it_worse(digit):
    clean = decoded(capture(digit, [], "train", np.random.default_rng(0)))
    errors = [
        np.abs(decoded(capture(digit, [Damage(kind("noise"), u)], "train", np.random.default_rng(0))) - clean).mean()
        for u in (0.1, 0.5, 0.9)
    ]
    assert errors[0] < errors[1] < errors[2]


def test_mnist_presentation_is_white_on_black_and_paper_is_dark_on_light(digit):
    mnist = decoded(capture(digit, [], "train", np.random.default_rng(0), "mnist"))
    np.testing.assert_array_equal(mnist, digit.astype(np.float32))
    paper = decoded(capture(digit, [], "train", np.random.default_rng(0), "paper"))
    assert paper.shape[0] in (56, 84, 112) and np.median(paper) > 150 and paper.min() < 100


def test_unknown_family_or_presentation_is_refused(digit):
    with pytest.raises(ValueError, match="unknown family"):
        capture(digit, [], "test", np.random.default_rng(0))


def test_convolution_matches_a_direct_sum():
    rng = np.random.default_rng(0)
    a = rng.random((9, 11)).astype(np.float32)
    k = rng.random((3, 5)).astype(np.float32)
    padded = np.pad(a, ((1, 1), (2, 2)), mode="reflect")
    expected = np.array([[(padded[y : y + 3, x : x + 5] * k).sum() / k.sum() for x in range(11)] for y in range(9)])
    np.testing.assert_allclose(ops.convolve(a, k), expected, rtol=1e-5)


def test_kernels_and_strokes():
    assert ops.disk_kernel(2.0)[2, 2] == 1 and ops.disk_kernel(2.0)[0, 0] == 0
    g = ops.gaussian_kernel(1.0)
    assert g.shape == (7, 7) and g[3, 3] == g.max()
    line = ops.draw((20, 20), [([(2.0, 10.0), (17.0, 10.0)], 2.0)])
    assert line[10, 5:15].min() > 0.9 and line[2].max() == 0
    dots = ops.draw((20, 20), [([(2.0, 10.0), (17.0, 10.0)], 1.5)], dots=4.0)
    assert 0 < dots.sum() < line.sum()
    assert ops.ink_box(np.pad(np.ones((3, 4), np.float32), 5)) == (5, 5, 8, 9)
