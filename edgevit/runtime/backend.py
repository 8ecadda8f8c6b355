"""What every runtime backend is: images in, probabilities and attention out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Prediction:
    probs: np.ndarray  # (N, classes), calibrated
    attention: np.ndarray  # (depth, N, heads, tokens, tokens)


class Backend(Protocol):
    """A way to run a weights file's graph. `Classifier` checks the images' shape and handles N = 0."""

    device: str  # where it runs: a tinygrad backend, or "C"

    def predict(self, images: np.ndarray) -> Prediction:
        """(N, H, W) float32 pixels on [0, 255], N >= 1 -> probabilities and every layer's attention."""
        ...

    @property
    def cache_hits(self) -> list[int]:
        """Batch sizes whose compiled graph came from the cache (0: the C library)."""
        ...
