"""Query, Key and Value of one image, from the model's own forward pass: what `--explain` shows of the
computation behind an attention weight, and what the explorer's numbers are checked against.

In every layer and head, token i's query q_i is compared with every key k_j: score_ij = q_i . k_j /
sqrt(d) (d the head's width); a softmax over j turns the scores into weights; token i's new value is
sum_j weight_ij v_j. A knocked-out token is removed as a key everywhere: its scores are minus infinity
before the softmax, so no token reads from it (it still computes its own query).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor

from edgevit.model import ViT


@dataclass(frozen=True)
class Parts:
    """One layer's attention for one image, every head: (H, T, hd) vectors, (H, T, T) matrices."""

    query: np.ndarray
    key: np.ndarray
    value: np.ndarray
    scores: np.ndarray  # q . k / sqrt(d), before the softmax (knocked-out keys: -inf)
    weights: np.ndarray  # the softmax of each row of scores

    @property
    def mixed(self) -> np.ndarray:
        """(H, T, hd): each token's weighted sum of the values, the head's output before the projection."""
        return self.weights @ self.value


def knockout_mask(patches: list[int], tokens: int) -> np.ndarray:
    """Patch indices (0-based, row-major) -> the (T,) mask of tokens removed as keys (token = patch + 1)."""
    mask = np.zeros(tokens, bool)
    for p in patches:
        if not 0 <= p < tokens - 1:
            raise ValueError(f"patch {p} is not one of the {tokens - 1} patches")
        mask[p + 1] = True
    return mask


def attention_parts(model: ViT, x: np.ndarray, knockout: list[int] = ()) -> tuple[np.ndarray, list[Parts]]:
    """A normalised image (1, C, H, W) -> its logits (classes,) and every layer's Parts."""
    seen: list[dict] = []
    mask = Tensor(knockout_mask(list(knockout), model.config.tokens)) if knockout else None
    logits, maps = model.forward(Tensor(x.astype(np.float32)), mask, seen)
    weights = maps.numpy()[:, 0]
    parts = [
        Parts(*(layer[name].numpy()[0] for name in ("query", "key", "value", "scores")), w) for layer, w in zip(seen, weights)
    ]
    return logits.numpy()[0], parts
