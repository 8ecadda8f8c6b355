import json
import os

import numpy as np

from edgevit.cache import Cache
from edgevit.runtime import Classifier


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
    probed = Classifier(tiny_weights, cache_dir=tmp_path)
    np.testing.assert_array_equal(probed.predict(image).probs, expected)
    assert probed.cache_hits == []

    raw = bytearray(entry.read_bytes())
    raw[-100] ^= 0xFF  # a damaged (or planted) payload no longer matches its checksum
    entry.write_bytes(bytes(raw))
    third = Classifier(tiny_weights, cache_dir=tmp_path)
    np.testing.assert_array_equal(third.predict(image).probs, expected)
    assert third.cache_hits == []


def test_a_cache_directory_others_can_write_is_not_used(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    assert not Cache(shared).enabled
    assert Cache(tmp_path / "mine").enabled
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700
    assert not Cache(None).enabled and Cache(None).recall("anything") is None


def test_remembered_values_round_trip(tmp_path):
    cache = Cache(tmp_path)
    cache.remember("default-device", "CPU")
    assert cache.recall("default-device") == "CPU" and cache.recall("other") is None
