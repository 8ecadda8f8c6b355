"""Test-set accuracy of a weights file: overall, per class, the confusion matrix, how well its
confidence is calibrated, and how often it answers "not a digit", on digits and on non-digits.

`python -m edgevit.evaluate [WEIGHTS] [--data DIR] [--negatives DIR] [--json]` (default: the shipped
float weights, the bundled MNIST and the bundled held-out non-digits)

Accuracy is of the likeliest digit, as `--always-digit` answers; the rejection figures say what the
"not a digit" rule (edgevit.answer) takes away from it and how many non-digits it catches.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, replace

import numpy as np

from edgevit import robustness as robust
from edgevit import writers
from edgevit.answer import Reject, rejected
from edgevit.calibration import Bin, expected_calibration_error, reliability, softmax
from edgevit.cli import run
from edgevit.data import NEGATIVE_KINDS, load_dataset, load_negatives
from edgevit.degrade import SEVERITIES
from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.graph import BatchedForward
from edgevit.resources import FLOAT_WEIGHTS, shipped_weights
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, time_forward
from edgevit.weights import build_model, open_model_file, reject_of, temperature_of

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
    weights_path: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    limit: int = 0,
    negatives_dir: str | os.PathLike | None = None,
    negatives: bool = True,
) -> Evaluation:
    """Score the model in `weights_path` on the test split of `data_dir` (default: bundled MNIST) and,
    for a model that can say "not a digit", on the held-out non-digits of `negatives_dir` (default: the
    bundled ones; `negatives` False: digits only)."""
    if limit < 0:
        raise EdgeViTError(f"--limit must be 0 (every test image) or more, not {limit}")
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    reject, temperature = reject_of(header, config), temperature_of(header)
    data = load_dataset(data_dir, config.num_classes)
    images, labels = data.test.images[: limit or None], data.test.labels[: limit or None]
    _check_size(images, config.image_size, data.source)
    if not len(images):
        raise EdgeViTError(f"{data.source}: no test images to score")
    bank = load_negatives(negatives_dir) if negatives and reject.active else None
    if bank is not None:
        _check_size(bank.images, config.image_size, bank.source)
    forward = BatchedForward(build_model(header, config, scheme), mean, std, min(EVAL_BATCH, len(images)))
    logits = forward(images)
    if not np.isfinite(logits).all():  # a score from NaN logits would be a number that means nothing
        raise EdgeViTError(f"{weights_path}: the model's outputs are not finite numbers (its weights overflow)")
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
    weights_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, per_cell: int = 100, per_group: int = 300
) -> Robustness:
    """Score `weights_path` on the held-out damaged test digits (edgevit.robustness: `per_cell` for
    every kind and severity) and on `per_group` digits of every group of other writers."""
    for name, n, most in (("--per-cell", per_cell, MAX_PER_CELL), ("--per-group", per_group, writers.MAX_PER_GROUP)):
        if not 1 <= n <= most:
            raise EdgeViTError(f"{name} must be from 1 to {most}, not {n}")
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    reject, temperature = reject_of(header, config), temperature_of(header)
    test = load_dataset(data_dir, config.num_classes).test
    _check_size(test.images, config.image_size, data_dir or "MNIST")
    forward = BatchedForward(build_model(header, config, scheme), mean, std, EVAL_BATCH)
    probs = lambda images: softmax(forward(images), temperature)  # noqa: E731
    cells = robust.score(robust.held_out_set(test, per_cell, workers=WORKERS), probs, reject)
    kinds = robust.by_kind(cells)
    groups = robust.score(robust.writers_set(test, per_group), probs, reject)
    return Robustness(cells, kinds, robust.mean_of(kinds), groups, robust.mean_of(groups), per_cell)


def format_robustness(r: Robustness) -> str:
    def shares(row: robust.Row) -> str:
        return f"{100 * row.right:6.1f} {100 * row.not_a_digit:6.1f} {100 * row.wrong:6.1f}"

    head = "".join(f"  {'severity ' + str(s):<20}" for s in SEVERITIES) + "  all"
    lines = [
        f"damaged digits (held-out generators; {r.per_cell} test digits a cell, half as MNIST stores them, half on paper)",
        "answered: right / not a digit / wrong, in %",
        f"{'kind':<14}{head}",
    ]
    for kind in r.kinds:
        mine = {c.severity: c for c in r.cells if c.kind == kind.kind}
        lines.append(f"{kind.kind:<14}" + "".join(f"  {shares(mine[s]):<20}" for s in SEVERITIES) + f"  {shares(kind)}")
    lines += [f"{'mean':<14}{' ' * 22 * len(SEVERITIES)}  {shares(r.mean)}", "", "other writers and sources"]
    lines += [f"  {g.kind:<12}{g.images:>6}  {shares(g)}" for g in r.writers]
    lines.append(f"  {'mean':<12}{r.writers_mean.images:>6}  {shares(r.writers_mean)}")
    return "\n".join(lines)


def _check_size(images: np.ndarray, size: int, source) -> None:
    if images.shape[1:] != (size, size):
        found = "x".join(map(str, images.shape[1:]))
        raise EdgeViTError(f"{source}: test images are {found} pixels, the model takes {size}x{size}")


def format_report(ev: Evaluation) -> str:
    n = len(ev.per_class)
    lines = [f"test accuracy {100 * ev.accuracy:.2f}% on {ev.images} images", "", "per class:"]
    lines += [
        f"  {c}: " + ("   n/a " if acc is None else f"{100 * acc:6.2f}%") + f"  ({sum(ev.confusion[c])} images)"
        for c, acc in enumerate(ev.per_class)
    ]
    lines += ["", "confusion (rows: true digit, columns: predicted):", "      " + "".join(f"{c:>6}" for c in range(n))]
    lines += [f"  {c:>3} " + "".join(f"{v:>6}" for v in row) for c, row in enumerate(ev.confusion)]
    if ev.calibration is not None:
        lines += ["", *format_calibration(ev.calibration)]
    if ev.rejection is not None:
        lines += ["", *format_rejection(ev.rejection, ev.images)]
    return "\n".join(lines)


def format_rejection(r: Rejection, digits: int) -> list[str]:
    rule = " or ".join(
        ([f"its class {r.reject_class} is the likeliest"] if r.reject_class is not None else [])
        + ([f"no digit reaches {100 * r.threshold:.2f}%"] if r.threshold > 0 else [])
    )
    lines = [
        f'"not a digit" (when {rule}):',
        f'  test digits answered "not a digit": {100 * r.false_rejection:.2f}% of {digits}; '
        f"accuracy on the rest {100 * r.answered_accuracy:.2f}%",
    ]
    if r.negatives:
        lines.append(f'  held-out non-digits answered "not a digit": {100 * r.negatives_rejected:.2f}% of {r.negatives}')
        lines += [f"    {kind:<12} {100 * share:6.2f}%" for kind, share in r.per_kind.items()]
    return lines


def format_calibration(cal: Calibration) -> list[str]:
    lines = [
        f"calibration: expected calibration error {100 * cal.ece:.2f}% with temperature {cal.temperature:.4g} "
        f"({100 * cal.ece_uncalibrated:.2f}% without)",
        "reliability (confidence = the top probability; a calibrated model's accuracy matches it):",
        "  confidence      images  mean conf.  accuracy",
    ]
    for b in cal.reliability:
        if b.images:
            lines.append(f"  {b.lower:.3f}-{b.upper:.3f} {b.images:>8}  {100 * b.confidence:9.2f}%  {100 * b.accuracy:7.2f}%")
    return lines


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevit.evaluate", description="Score a weights file on the test split.")
    p.add_argument("weights", nargs="?", help=f"an EdgeViT .safetensors file (default: the shipped {FLOAT_WEIGHTS})")
    p.add_argument("--data", help="directory with the MNIST-format IDX files (default: $EDGEVIT_DATA or bundled MNIST)")
    p.add_argument("--device", help="tinygrad backend (default: the fastest here, measured once)")
    p.add_argument("--limit", type=int, default=0, help="score the first N test images only")
    p.add_argument("--negatives", help="held-out non-digits: a directory from tools/banks.py (default: the bundled ones)")
    p.add_argument("--no-negatives", action="store_true", help="score the test digits only")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument(
        "--robustness",
        action="store_true",
        help="instead: answers on held-out damaged test digits (noise, blur, lines, blots, outlines...) per kind "
        "and severity, and on digits from other writers and sources",
    )
    p.add_argument("--per-cell", type=int, default=100, help="--robustness: test digits a kind and severity (default 100)")
    p.add_argument("--per-group", type=int, default=300, help="--robustness: digits a group of other writers (default 300)")
    args = p.parse_args(argv)
    choose_device(args.device, JOB, time_forward, Cache(default_cache_dir()))
    weights = args.weights or shipped_weights(FLOAT_WEIGHTS)
    if args.robustness:
        r = robustness(weights, args.data, args.per_cell, args.per_group)
        print(json.dumps(asdict(r), allow_nan=False) if args.json else format_robustness(r))
        return 0
    ev = evaluate(weights, args.data, args.limit, args.negatives, negatives=not args.no_negatives)
    print(json.dumps(asdict(ev), allow_nan=False) if args.json else format_report(ev))
    return 0


if __name__ == "__main__":
    run("edgevit.evaluate", cli)
