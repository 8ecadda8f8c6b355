"""Beyond MNIST: printed digits, canvas exports and low-resolution scans (tools/realworld.py)."""

import sys

import numpy as np
from conftest import ROOT

sys.path.insert(0, str(ROOT / "tools"))
from realworld import GROUPS, generate

from edgevit.preprocess import preprocess

# This sample scores 100%, 100% and 98.3% with the shipped weights (820 per group over 82 fonts: 98.2%,
# 99.8%, 97.0%; see weights/README.md). The bars are the levels a PyTorch ViT of this size reaches on
# such groups (issue 3), so a regression in preprocessing or weights fails here.
BARS = {"printed": 0.94, "canvas": 0.985, "scans": 0.95}


def test_shipped_model_reads_real_world_digits(shipped):
    samples = list(generate(per_group=60, seed=11, family="dejavu"))  # the fonts every Debian machine has
    images = np.stack([preprocess(data, f"{group}-{i}") for i, (group, _, data) in enumerate(samples)])
    predicted = shipped.predict(images).probs.argmax(-1)
    groups = np.array([g for g, _, _ in samples])
    labels = np.array([label for _, label, _ in samples])
    for group in GROUPS:
        accuracy = (predicted[groups == group] == labels[groups == group]).mean()
        assert accuracy >= BARS[group], (group, accuracy)
