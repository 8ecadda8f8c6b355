"""Running a model: TinyJit-compiled forward passes over host batches of any length."""

from __future__ import annotations

import numpy as np
from tinygrad import Tensor, TinyJit

from edgevit.data import normalize


class BatchedForward:
    """logits for any number of images through one JIT compiled for `batch_size`.

    The JIT needs one fixed shape, so a short last batch is padded with zeros and the padding dropped.
    """

    def __init__(self, model, mean: float, std: float, batch_size: int):
        self.model, self.mean, self.std, self.batch_size = model, mean, std, batch_size
        self._jit = TinyJit(lambda x: model(x).realize())

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images (N, H, W) on [0, 255] -> float32 logits (N, classes)."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = normalize(images[i : i + self.batch_size], self.mean, self.std)
            n = len(x)
            if n < self.batch_size:
                x = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), np.float32)])
            out.append(self._jit(Tensor(x)).numpy()[:n])
        return np.concatenate(out) if out else np.zeros((0, self.model.config.num_classes), np.float32)
