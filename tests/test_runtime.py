import json
import os

import numpy as np
import pytest

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.runtime import Classifier, private_dir


def reference_probs(path, images):
    """The same model through the plain (uncached, unjitted) tinygrad forward."""
    from tinygrad import Tensor

    from edgevit.data import normalize

    model, header = weights.load_model(path)
    pre = header.metadata["preprocess"]
    return model(Tensor(normalize(images, pre["mean"], pre["std"]))).softmax(-1).numpy()


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


def test_cache_is_reused_and_never_trusted_blindly(tiny_weights, tmp_path, mnist):
    image = mnist.test.images[:1].astype(np.float32)
    first = Classifier(tiny_weights, cache_dir=tmp_path)
    expected = first.predict(image).probs
    assert first.cache_hits == [] and len(list(tmp_path.glob("*.jit"))) == 1

    second = Classifier(tiny_weights, cache_dir=tmp_path)
    np.testing.assert_array_equal(second.predict(image).probs, expected)
    assert second.cache_hits == [1]  # the compiled graph came from disk

    entry = next(tmp_path.glob("*.jit"))
    head, _, payload = entry.read_bytes().partition(b"\n")
    meta = json.loads(head)
    meta["probe"][0] += 1e-6  # a graph that no longer computes what it did when stored is not used
    entry.write_bytes(json.dumps(meta).encode() + b"\n" + payload)
    assert Classifier(tiny_weights, cache_dir=tmp_path)._load_cached(1) is None

    raw = bytearray(entry.read_bytes())
    raw[-100] ^= 0xFF  # a damaged (or planted) payload no longer matches its checksum
    entry.write_bytes(bytes(raw))
    third = Classifier(tiny_weights, cache_dir=tmp_path)
    np.testing.assert_array_equal(third.predict(image).probs, expected)
    assert third.cache_hits == []


def test_changed_weights_do_not_reuse_the_old_graph(tiny_weights, tmp_path, mnist):
    image = mnist.test.images[:1].astype(np.float32)
    Classifier(tiny_weights, cache_dir=tmp_path).predict(image)
    header = weights.read_header(tiny_weights)
    tensors = {k: (v.to("CPU") * 1.5).realize() for k, v in weights.load_tensors(header).items()}
    changed = tmp_path / "changed.safetensors"
    weights.save(changed, tensors, header.metadata)
    clf = Classifier(changed, cache_dir=tmp_path)
    probs = clf.predict(image).probs
    assert clf.cache_hits == []
    np.testing.assert_allclose(probs, reference_probs(changed, image), atol=1e-5)


def test_a_cache_directory_others_can_write_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert not private_dir(shared)
    assert private_dir(tmp_path / "mine")
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700


def test_mismatched_and_wrong_shape_inputs_are_clear_errors(tiny_weights, tmp_path):
    header = weights.read_header(tiny_weights)
    meta = dict(header.metadata, config=dict(header.metadata["config"], depth=3))
    bad = tmp_path / "bad.safetensors"
    weights.save(bad, {k: v.to("CPU").realize() for k, v in weights.load_tensors(header).items()}, meta)
    with pytest.raises(EdgeViTError, match=r"do not match the config.*missing blocks\.2\."):
        Classifier(bad, cache_dir=None)
    with pytest.raises(EdgeViTError, match=r"expected images of shape \(N, 28, 28\)"):
        Classifier(tiny_weights, cache_dir=None).predict(np.zeros((2, 32, 32)))


def test_direct_cpu_replay_is_bit_identical_to_tinygrads_own(tiny_weights, tmp_path, mnist):
    from edgevit.runtime import CPUReplay

    images = mnist.test.images[:12].astype(np.float32)
    fast = Classifier(tiny_weights, cache_dir=tmp_path, device="CPU")
    got_single = np.concatenate([fast.predict(images[i : i + 1]).probs for i in range(3)])
    got_batch = fast.predict(images)
    assert all(isinstance(fast._replays[b], CPUReplay) for b in (1, 64))
    # the batched graph has kernels tinygrad splits over cores: the replay runs those in parallel
    assert any(len(per_core) > 1 for _, per_core in fast._replays[64]._launches)

    slow = Classifier(tiny_weights, cache_dir=None, device="CPU")
    slow._replays = {1: None, 64: None}  # tinygrad's own replay only
    np.testing.assert_array_equal(got_single, np.concatenate([slow.predict(images[i : i + 1]).probs for i in range(3)]))
    expected = slow.predict(images)
    np.testing.assert_array_equal(got_batch.probs, expected.probs)
    np.testing.assert_array_equal(got_batch.attention, expected.attention)

    # a replay that would not reproduce tinygrad's outputs is never used
    jit, (inp, _) = fast._jits[1], fast._inputs[1]
    wrong = tuple(np.ones_like(a) for a in fast._run(1, np.zeros((1, 1, 28, 28), np.float32)))
    assert CPUReplay.build(jit, inp, wrong) is None
