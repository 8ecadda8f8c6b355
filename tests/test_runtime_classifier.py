import numpy as np
import pytest

from edgevit import weights
from edgevit.data import normalize
from edgevit.errors import EdgeViTError
from edgevit.runtime import Classifier


def reference_probs(path, images):
    """The same model through the plain (uncached, unjitted) tinygrad forward."""
    from tinygrad import Tensor

    model = weights.ModelFile.open(path)
    return model.build()(Tensor(normalize(images, model.mean, model.std))).softmax(-1).numpy()


def test_batch_1_and_batched_graphs_agree_with_the_model(tiny_weights, tmp_path, mnist):
    clf = Classifier(tiny_weights, cache_dir=tmp_path)
    images = mnist.test.images[:11].astype(np.float32)
    expected = reference_probs(tiny_weights, images)
    batched = clf.predict(images)  # 11 images: one padded batch-64 call
    single = np.concatenate([clf.predict(images[i : i + 1]).probs for i in range(3)])
    np.testing.assert_allclose(batched.probs, expected, atol=1e-5)
    np.testing.assert_allclose(single, expected[:3], atol=1e-5)
    assert batched.attention.shape == (2, 11, 2, 17, 17)
    np.testing.assert_allclose(batched.attention.sum(-1), 1.0, atol=1e-5)


def test_forward_runs_one_graph_of_exactly_the_given_batch(tiny_weights, mnist):
    clf = Classifier(tiny_weights, cache_dir=None)
    images = mnist.test.images[:3].astype(np.float32)
    probs, attention = clf.forward(normalize(images, clf.model.mean, clf.model.std))
    assert probs.shape == (3, 10) and attention.shape == (2, 3, 2, 17, 17)
    np.testing.assert_allclose(probs, reference_probs(tiny_weights, images), atol=1e-5)


def test_changed_weights_do_not_reuse_the_old_graph(tiny_weights, tmp_path, mnist):
    image = mnist.test.images[:1].astype(np.float32)
    Classifier(tiny_weights, cache_dir=tmp_path).predict(image)
    header = weights.read_header(tiny_weights)
    tensors = {k: (v.to("CPU") * 1.5).realize() for k, v in weights.read_weights(header.path).tensors().items()}
    changed = tmp_path / "changed.safetensors"
    weights.save(changed, tensors, header.metadata)
    clf = Classifier(changed, cache_dir=tmp_path)
    probs = clf.predict(image).probs
    assert clf.cache_hits == []
    np.testing.assert_allclose(probs, reference_probs(changed, image), atol=1e-5)


def test_mismatched_and_wrong_shape_inputs_are_clear_errors(tiny_weights, tmp_path):
    header = weights.read_header(tiny_weights)
    meta = dict(header.metadata, config=dict(header.metadata["config"], depth=3))
    bad = tmp_path / "bad.safetensors"
    weights.save(bad, weights.read_weights(header.path).tensors(), meta)
    with pytest.raises(EdgeViTError, match=r"do not match the config.*missing blocks\.2\."):
        Classifier(bad, cache_dir=None)
    with pytest.raises(EdgeViTError, match=r"expected images of shape \(N, 28, 28\)"):
        Classifier(tiny_weights, cache_dir=None).predict(np.zeros((2, 32, 32)))
    with pytest.raises(EdgeViTError, match="unknown runtime 'gpu'"):
        Classifier(tiny_weights, runtime="gpu")
    with pytest.raises(EdgeViTError, match="--beam must be 0"):
        Classifier(tiny_weights, beam=-1)
