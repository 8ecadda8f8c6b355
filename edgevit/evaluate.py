"""Test-set accuracy of a weights file: overall, per class, and the confusion matrix.

`python -m edgevit.evaluate [WEIGHTS] [--data DIR] [--json]` (default: the shipped float weights)
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, replace

import numpy as np

from edgevit.calibration import Bin, expected_calibration_error, reliability, softmax
from edgevit.cli import run
from edgevit.data import load_dataset
from edgevit.device import choose_device
from edgevit.graph import BatchedForward
from edgevit.resources import FLOAT_WEIGHTS, shipped_weights
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, time_forward
from edgevit.weights import build_model, open_model_file, temperature_of

EVAL_BATCH = 500


@dataclass(frozen=True)
class Calibration:
    temperature: float  # the weights file's: probabilities are softmax(logits / temperature)
    ece: float  # expected calibration error with it, 15 equal-width bins
    ece_uncalibrated: float  # the same with temperature 1
    reliability: list[Bin]  # the bins behind `ece`


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    per_class: list[float | None]  # recall of each true class; None where the split has none of it
    confusion: list[list[int]]  # confusion[true][predicted]
    images: int
    calibration: Calibration | None = None


def calibration(logits: np.ndarray, labels: np.ndarray, temperature: float) -> Calibration:
    probs = softmax(logits, temperature)
    return Calibration(
        temperature,
        expected_calibration_error(probs, labels),
        expected_calibration_error(softmax(logits), labels),
        reliability(probs, labels),
    )


def score(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Evaluation:
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predictions), 1)
    totals = confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.diag(confusion) / totals
    accuracy = float(np.trace(confusion) / max(1, len(labels)))
    return Evaluation(accuracy, [None if np.isnan(v) else float(v) for v in per_class], confusion.tolist(), len(labels))


def evaluate(weights_path: str | os.PathLike, data_dir: str | os.PathLike | None = None, limit: int = 0) -> Evaluation:
    """Score the model in `weights_path` on the test split of `data_dir` (default: bundled MNIST)."""
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    data = load_dataset(data_dir, config.num_classes)
    images, labels = data.test.images[: limit or None], data.test.labels[: limit or None]
    forward = BatchedForward(build_model(header, config, scheme), mean, std, min(EVAL_BATCH, max(1, len(images))))
    logits = forward(images)
    scored = score(logits.argmax(-1), labels, config.num_classes)
    return replace(scored, calibration=calibration(logits, labels, temperature_of(header)))


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
    return "\n".join(lines)


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
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    choose_device(args.device, JOB, time_forward, Cache(default_cache_dir()))
    ev = evaluate(args.weights or shipped_weights(FLOAT_WEIGHTS), args.data, args.limit)
    print(json.dumps(asdict(ev)) if args.json else format_report(ev))
    return 0


if __name__ == "__main__":
    run("edgevit.evaluate", cli)
