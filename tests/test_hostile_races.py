"""A weights file replaced while EdgeViT reads it: the answer is the old file's or the new one's,
never an error, a mix or a poisoned cache (edgevit.weights reads a file once: checks, hash and tensors
all come from those bytes)."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
from tinygrad import Tensor

from edgevit import weights
from edgevit.runtime import Classifier


def test_a_file_swapped_under_readers_gives_one_files_answers_and_never_poisons_the_cache(tiny_weights, tmp_path, mnist):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    shutil.copy(tiny_weights, a)
    file = weights.read_weights(tiny_weights)
    weights.save(b, {k: Tensor(v * 1.7) for k, v in file.arrays().items()}, file.header.metadata)
    images = mnist.test.images[:3].astype(np.float32)
    expected = {name: Classifier(path, cache_dir=None).predict(images).probs for name, path in (("a", a), ("b", b))}
    target, cache, stop = tmp_path / "w.safetensors", tmp_path / "cache", threading.Event()
    shutil.copy(a, target)

    def swap() -> None:  # what `quantize -o w.safetensors` or a deploy script does: rename a new file in
        i = 0
        while not stop.is_set():
            shutil.copy(a if i % 2 else b, tmp_path / "next")
            os.replace(tmp_path / "next", target)
            i += 1

    writer = threading.Thread(target=swap)
    writer.start()
    try:
        for _ in range(12):
            probs = Classifier(target, cache_dir=cache).predict(images).probs
            assert any(np.allclose(probs, e, atol=1e-6) for e in expected.values())
    finally:
        stop.set()
        writer.join()
    for name, path in (("a", a), ("b", b)):  # what the cache now holds for each file is that file's graph
        clf = Classifier(path, cache_dir=cache)
        np.testing.assert_allclose(clf.predict(images).probs, expected[name], atol=1e-6)
