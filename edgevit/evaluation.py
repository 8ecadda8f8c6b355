"""Test-set accuracy of a weights file: overall, per class, the confusion matrix, how well its
confidence is calibrated, and how often it answers "not a digit", on digits and on non-digits.

`edgevit evaluate` (also `python -m edgevit.evaluate`, edgevit.cli.evaluate) prints these; defaults:
the shipped float weights, the bundled MNIST and the bundled held-out non-digits. `robustness()`
scores damaged digits and digits from other writers (edgevit.robustness).

Accuracy is of the likeliest digit, as `--always-digit` answers; the rejection figures say what the
"not a digit" rule (edgevit.answer) takes away from it and how many non-digits it catches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from edgevit import robustness as robust
from edgevit import writers
from edgevit.answer import Reject, rejected
from edgevit.calibration import Bin, expected_calibration_error, reliability, softmax
from edgevit.data import NEGATIVE_KINDS, load_dataset, load_negatives
from edgevit.errors import EdgeViTError
from edgevit.graph import BatchedForward
from edgevit.weights import ModelFile, model_file

EVAL_BATCH = 500
MAX_PER_CELL = 1000
WORKERS = 2  # processes damaging and preprocessing the robustness report's images


@dataclass(frozen=True)
class Calibration:
    temperature: float  # the weights file's: probabilities are softmax(logits / temperature)
    ece: float  # expected calibration error with it, 15 equal-width bins
    ece_uncalibrated: float  # the same with temperature 1
    reliability: list[Bin]  # the bins behind `ece`


@dataclass(frozen=True)
class Rejection:
    """How often the answer is "not a digit"."""

    reject_class: int | None  # the model's class for non-digits
    threshold: float  # the lowest probability a digit may have
    class_threshold: float | None  # the probability of reject_class beyond which: None, when it is the likeliest
    false_rejection: float  # of the test digits
    answered_accuracy: float  # of the test digits answered with a digit
    negatives: int  # held-out non-digits scored (0: none given)
    negatives_rejected: float | None  # of those
    per_kind: dict[str, float]  # kind -> rejected share of the non-digits of that kind


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    per_class: list[float | None]  # recall of each true class; None where the split has none of it
    confusion: list[list[int]]  # confusion[true][predicted]
    images: int
    calibration: Calibration | None = None
    rejection: Rejection | None = None  # None for a model that never says "not a digit"


def calibration(logits: np.ndarray, labels: np.ndarray, temperature: float) -> Calibration:
    probs = softmax(logits, temperature)
    return Calibration(
        temperature,
        expected_calibration_error(probs, labels),
        expected_calibration_error(softmax(logits), labels),
        reliability(probs, labels),
    )


def rejection(probs: np.ndarray, labels: np.ndarray, reject: Reject, negatives: np.ndarray, kinds: np.ndarray) -> Rejection:
    """The rule on test digits (`probs`, `labels`) and on non-digits (their probabilities `negatives`, of `kinds`)."""
    out, caught = rejected(probs, reject), rejected(negatives, reject)
    answered = ~out
    correct = probs[answered, : reject.cls].argmax(1) == labels[answered]  # a reject class is the last
    per_kind = {kind: float(caught[kinds == k].mean()) for k, kind in enumerate(NEGATIVE_KINDS) if (kinds == k).any()}
    return Rejection(
        reject.cls,
        reject.threshold,
        reject.class_threshold,
        float(out.mean()),
        float(correct.mean()) if answered.any() else 0.0,
        len(negatives),
        float(caught.mean()) if len(caught) else None,
        per_kind,
    )


def score(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Evaluation:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    totals = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / totals
    accuracy = float(np.trace(confusion) / max(1, len(labels)))
    return Evaluation(accuracy, [None if np.isnan(v) else float(v) for v in per_class], confusion.tolist(), len(labels))


def evaluate(
    weights: str | os.PathLike | ModelFile,
    data_dir: str | os.PathLike | None = None,
    limit: int = 0,
    negatives_dir: str | os.PathLike | None = None,
    negatives: bool = True,
) -> Evaluation:
    """Score the model in `weights` on the test split of `data_dir` (default: bundled MNIST) and,
    for a model that can say "not a digit", on the held-out non-digits of `negatives_dir` (default: the
    bundled ones; `negatives` False: digits only)."""
    if limit < 0:
        raise EdgeViTError(f"--limit must be 0 (every test image) or more, not {limit}")
    model = model_file(weights)
    config, reject, temperature = model.config, model.reject, model.temperature
    data = load_dataset(data_dir, config.num_classes)
    images, labels = data.test.images[: limit or None], data.test.labels[: limit or None]
    _check_size(images, config.image_size, data.source)
    if not len(images):
        raise EdgeViTError(f"{data.source}: no test images to score")
    bank = load_negatives(negatives_dir) if negatives and reject.active else None
    if bank is not None:
        _check_size(bank.images, config.image_size, bank.source)
    forward = BatchedForward(model.build(), model.mean, model.std, min(EVAL_BATCH, len(images)))
    logits = forward(images)
    if not np.isfinite(logits).all():  # a score from NaN logits would be a number that means nothing
        raise EdgeViTError(f"{model.path}: the model's outputs are not finite numbers (its weights overflow)")
    digits = logits[:, : reject.cls]  # the likeliest digit: a reject class is the last
    evaluation = replace(
        score(digits.argmax(-1), labels, digits.shape[1]), calibration=calibration(logits, labels, temperature)
    )
    if not reject.active:
        return evaluation
    negative_probs = softmax(forward(bank.images), temperature) if bank else np.zeros((0, config.num_classes), np.float32)
    kinds = bank.kinds if bank else np.zeros(0, np.int64)
    return replace(evaluation, rejection=rejection(softmax(logits, temperature), labels, reject, negative_probs, kinds))


@dataclass(frozen=True)
class Robustness:
    """How a weights file answers digits as real captures damage them, and digits from other writers."""

    cells: list[robust.Row]  # one a kind and severity
    kinds: list[robust.Row]  # one a kind, over its severities
    mean: robust.Row  # over the kinds, each counting once
    writers: list[robust.Row]  # one a group of edgevit.writers
    writers_mean: robust.Row
    per_cell: int


def robustness(
    weights: str | os.PathLike | ModelFile, data_dir: str | os.PathLike | None = None, per_cell: int = 100, per_group: int = 300
) -> Robustness:
    """Score `weights` on the held-out damaged test digits (edgevit.robustness: `per_cell` for
    every kind and severity) and on `per_group` digits of every group of other writers."""
    for name, n, most in (("--per-cell", per_cell, MAX_PER_CELL), ("--per-group", per_group, writers.MAX_PER_GROUP)):
        if not 1 <= n <= most:
            raise EdgeViTError(f"{name} must be from 1 to {most}, not {n}")
    model = model_file(weights)
    test = load_dataset(data_dir, model.config.num_classes).test
    _check_size(test.images, model.config.image_size, data_dir or "MNIST")
    forward = BatchedForward(model.build(), model.mean, model.std, EVAL_BATCH)
    probs = lambda images: softmax(forward(images), model.temperature)  # noqa: E731
    reject = model.reject
    cells = robust.score(robust.held_out_set(test, per_cell, workers=WORKERS), probs, reject)
    kinds = robust.by_kind(cells)
    groups = robust.score(robust.writers_set(test, per_group), probs, reject)
    return Robustness(cells, kinds, robust.mean_of(kinds), groups, robust.mean_of(groups), per_cell)


def _check_size(images: np.ndarray, size: int, source) -> None:
    if images.shape[1:] != (size, size):
        found = "x".join(map(str, images.shape[1:]))
        raise EdgeViTError(f"{source}: test images are {found} pixels, the model takes {size}x{size}")
