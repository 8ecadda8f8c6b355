"""Query, Key and Value of one image (edgevit.qkv) against numpy's recomputation from the weights file,
and the knock-out against a forward pass whose scores are masked by hand."""

import numpy as np
import pytest

from edgevit.data import normalize
from edgevit.explain import explain_scores
from edgevit.qkv import attention_parts, knockout_mask
from edgevit.reference import float_weights, numpy_forward
from edgevit.weights import ModelFile


@pytest.fixture(scope="module")
def tiny(tiny_weights, mnist):
    model = ModelFile.open(tiny_weights)
    x = normalize(mnist.test.images[:1], model.mean, model.std)
    return model, model.build(), x


@pytest.mark.parametrize("knockout", [[], [0, 5, 15]])
def test_parts_equal_numpys_recomputation_from_the_weights_file(tiny, tiny_weights, knockout):
    _, vit, x = tiny
    logits, parts = attention_parts(vit, x, knockout)
    w, config, _ = float_weights(tiny_weights)
    seen = []
    mask = knockout_mask(knockout, config.tokens) if knockout else None
    expected = numpy_forward(w, config, x.astype(np.float64), mask, seen)
    np.testing.assert_allclose(logits, expected[0], atol=1e-4)
    for got, want in zip(parts, seen, strict=True):
        for name in ("query", "key", "value", "scores", "weights"):
            np.testing.assert_allclose(getattr(got, name), want[name][0], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got.mixed, (want["weights"] @ want["value"])[0], atol=1e-4)
    if knockout:  # no token reads from a knocked-out patch; each still asks with its own query
        for p in parts:
            assert np.all(p.weights[:, :, [k + 1 for k in knockout]] == 0) and np.isinf(p.scores[:, :, 6]).all()


def test_a_patch_outside_the_grid_is_refused():
    with pytest.raises(ValueError, match="patch 16 is not one of the 16 patches"):
        knockout_mask([16], 17)


def test_explain_shows_the_computation_behind_a_weight(tiny):
    _, vit, x = tiny
    _, parts = attention_parts(vit, x)
    text = explain_scores(parts, grid=4, patch=5)
    assert text.count("Layer ") == 2 and "r1c1 ->" in text and "score = q . k / sqrt(8)" in text
    head = parts[0]
    line = next(t for t in text.splitlines() if t.startswith("  score"))
    dot = float(line.split("=")[2].split("/")[0])
    assert any(np.isclose(dot, head.query[h, 6] @ head.key[h, k], atol=2e-3) for h in range(2) for k in range(17))
