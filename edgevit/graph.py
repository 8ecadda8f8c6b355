"""The computation every runtime compiles, and the fixed-shape batching around it.

A compiled graph has one input shape. `inference_graph` is the function the tinygrad runtime JITs
and the C export captures: normalised images in, probabilities (and the attention maps) out.
`BatchedForward` is the plainer logits graph training and evaluation run over whole datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
from tinygrad import Tensor, TinyJit

from edgevit.data import normalize
from edgevit.model import ViT, ViTConfig


def inference_graph(model: ViT, attention: bool = True, temperature: float = 1.0) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """Normalised (B, 1, H, W) -> (probabilities (B, classes), attention (depth, B, heads, T, T)),
    or the probabilities alone when `attention` is False (a smaller graph: no maps to store).
    Probabilities are softmax(logits / temperature): calibrated, when the weights file has a temperature."""

    def forward(x: Tensor) -> tuple[Tensor, ...]:
        logits, maps = model.forward(x)
        if temperature != 1.0:
            logits = logits * (1.0 / temperature)
        outputs = (logits.softmax(-1), maps) if attention else (logits.softmax(-1),)
        # one realize for all: realizing them one at a time would run the whole network twice
        Tensor.realize(*outputs)
        return outputs

    return forward


INSPECTED = ("query", "key", "value", "scores")  # what the inspection graph hands out beyond the answer


def inspection_graph(model: ViT, temperature: float = 1.0) -> Callable[[Tensor, Tensor], tuple[Tensor, ...]]:
    """The inference graph for the explorer: normalised (B, 1, H, W) images and a (T,) knock-out (1:
    that token is removed as a key in every layer and head) -> probabilities, attention, and every
    layer's query, key, value (depth, B, heads, T, head_dim) and scores (depth, B, heads, T, T): the
    numbers behind each attention weight, each an output of its own in that layout."""

    def forward(x: Tensor, knockout: Tensor) -> tuple[Tensor, ...]:
        seen: list[dict] = []
        logits, maps = model.forward(x, knockout > 0.5, seen)
        if temperature != 1.0:
            logits = logits * (1.0 / temperature)
        parts = [Tensor.stack(*(layer[name] for layer in seen)).contiguous() for name in INSPECTED]
        outputs = (logits.softmax(-1), maps, *parts)
        Tensor.realize(*outputs)
        return outputs

    return forward


def probe_input(config: ViTConfig, batch: int) -> np.ndarray:
    """A fixed normalised (batch, 1, H, W) input: what a graph computes for it identifies the graph."""
    size = config.image_size
    return np.linspace(-1, 3, batch * size * size, dtype=np.float32).reshape(batch, 1, size, size)


def padded_batches(images: np.ndarray, batch: int, mean: float, std: float) -> Iterator[tuple[np.ndarray, int]]:
    """Normalised (batch, 1, H, W) arrays and how many of their images are real.

    A compiled graph has one fixed shape, so a short last batch is padded with zeros.
    """
    for i in range(0, len(images), batch):
        x = normalize(images[i : i + batch], mean, std)
        n = len(x)
        if n < batch:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        yield x, n


class BatchedForward:
    """Logits of a model in memory (training, evaluation) through one JIT compiled for `batch_size`."""

    def __init__(self, model: ViT, mean: float, std: float, batch_size: int):
        self.model, self.mean, self.std, self.batch_size = model, mean, std, batch_size
        self._jit = TinyJit(lambda x: model(x).realize())

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images (N, H, W) on [0, 255] -> float32 logits (N, classes)."""
        out = [self._jit(Tensor(x)).numpy()[:n] for x, n in padded_batches(images, self.batch_size, self.mean, self.std)]
        return np.concatenate(out) if out else np.zeros((0, self.model.config.num_classes), np.float32)
