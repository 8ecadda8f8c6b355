"""Quantization arithmetic, in numpy: pure functions from float weights to smaller ones and back.

- int8: symmetric, one scale per output channel: w ~= q * scale[:, None].
- int4: symmetric [-7, 7], one scale per group of `INT4_GROUP` inputs, two values packed per byte
  (low nibble first).
- activations (w8a8): one symmetric int8 scale per Linear input, from calibration samples (max or a
  high percentile of |x|).

`edgevit.quant.schemes` says which scheme stores what; this module only does the arithmetic.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127
INT4_MAX = 7  # symmetric [-7, 7]: -8 would make zero off-centre
INT4_GROUP = 32
CALIBRATION_METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> int8 (out, in) and float32 scales (out,): w ~= q * scale[:, None]."""
    scale = np.abs(w).max(axis=1) / INT8_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None]


def int4_groups(in_features: int, group: int = INT4_GROUP) -> int:
    """Groups along the input dimension; the last one may be short (e.g. 49 patch pixels: 32 + 17)."""
    return -(-in_features // group)


def quantize_int4(w: np.ndarray, group: int = INT4_GROUP) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> packed uint8 (out, ceil(in/2)) and float32 scales (out, groups)."""
    out_f, in_f = w.shape
    padded = np.zeros((out_f, int4_groups(in_f, group) * group), np.float32)
    padded[:, :in_f] = w
    g = padded.reshape(out_f, -1, group)
    scale = np.abs(g).max(axis=2) / INT4_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(g / scale[..., None]), -INT4_MAX, INT4_MAX).astype(np.int8).reshape(out_f, -1)[:, :in_f]
    return pack_int4(q), scale


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int8 values in [-8, 7] (out, in) -> uint8 (out, ceil(in/2)), element 2k in the low nibble."""
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), q.dtype)], axis=1)
    nibbles = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: np.ndarray, in_features: int) -> np.ndarray:
    """The inverse of pack_int4: uint8 (out, ceil(in/2)) -> int8 (out, in_features)."""
    low = (packed & 0xF).astype(np.int8)
    high = (packed >> 4).astype(np.int8)
    q = np.stack([low, high], axis=2).reshape(packed.shape[0], -1)[:, :in_features]
    return np.where(q > 7, q - 16, q).astype(np.int8)


def dequantize_int4(packed: np.ndarray, scale: np.ndarray, in_features: int, group: int = INT4_GROUP) -> np.ndarray:
    q = unpack_int4(packed, in_features).astype(np.float32)
    return q * np.repeat(scale, group, axis=1)[:, :in_features]


def activation_scale(samples: np.ndarray, method: str = "percentile", percentile: float = DEFAULT_PERCENTILE) -> float:
    """One symmetric int8 scale for a Linear's inputs, from calibration activations."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    a = np.abs(samples.ravel())
    top = float(a.max() if method == "minmax" else np.percentile(a, percentile))
    return top / INT8_MAX if top > 0 else 1.0


def quantize_activations(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
