"""Confidence that means something: temperature scaling and how to measure calibration.

A model trained with label smoothing never says more than about 91%, whatever it sees; a calibrated
model's "97%" is right about 97% of the time. Temperature scaling (Guo et al., 2017) divides the
logits by one number T fitted on held-out images, which changes every confidence and no prediction.
Expected calibration error (ECE) is the gap between confidence and accuracy, averaged over equal-width
confidence bins weighted by how many images fall in each. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15
# T is searched over [T_MIN, T_MAX] in log space: wide enough for any sane model, and the negative
# log-likelihood is convex in log T for a fixed set of logits, so golden-section search finds it
T_MIN, T_MAX = 0.05, 20.0
SEARCH_STEPS = 80
GOLDEN = (np.sqrt(5) - 1) / 2


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true labels at temperature T."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of `labels` under softmax(logits / T)."""
    if len(labels) == 0:
        raise ValueError("fitting a temperature needs at least one labelled image")
    lo, hi = np.log(T_MIN), np.log(T_MAX)
    for _ in range(SEARCH_STEPS):
        a, b = hi - GOLDEN * (hi - lo), lo + GOLDEN * (hi - lo)
        if nll(logits, labels, np.exp(a)) < nll(logits, labels, np.exp(b)):
            hi = b
        else:
            lo = a
    return float(np.exp((lo + hi) / 2))


@dataclass(frozen=True)
class Bin:
    lower: float
    upper: float
    images: int
    confidence: float | None  # mean confidence of the images in the bin
    accuracy: float | None  # how many of them were right


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[Bin]:
    """Images binned by confidence (the top probability) into `bins` equal-width bins on [0, 1]."""
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins the first bin
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for i in range(bins):
        members = index == i
        n = int(members.sum())
        out.append(
            Bin(
                float(edges[i]),
                float(edges[i + 1]),
                n,
                float(confidence[members].mean()) if n else None,
                float(correct[members].mean()) if n else None,
            )
        )
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (images in bin / all images) x |accuracy - mean confidence|."""
    table = reliability(probs, labels, bins)
    total = sum(b.images for b in table)
    if total == 0:
        return 0.0
    return float(sum(b.images / total * abs(b.accuracy - b.confidence) for b in table if b.images))
