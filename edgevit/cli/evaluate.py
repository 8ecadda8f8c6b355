"""`edgevit evaluate [WEIGHTS]` (also `python -m edgevit.evaluate`): a thin command line over
edgevit.evaluation, printing its tables (or `--json`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from edgevit import robustness as robust
from edgevit.cache import Cache, default_cache_dir
from edgevit.cli import run
from edgevit.degrade import SEVERITIES
from edgevit.device import choose_device
from edgevit.evaluation import Calibration, Evaluation, Rejection, Robustness, evaluate, robustness
from edgevit.resources import FLOAT_WEIGHTS, shipped_weights
from edgevit.runtime.jit import JOB, time_forward

PROG = "python -m edgevit.evaluate"


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
        (
            [f"its class {r.reject_class} is the likeliest"]
            if r.reject_class is not None and r.class_threshold is None
            else [f"its class {r.reject_class} is over {100 * r.class_threshold:.2f}%"]
            if r.reject_class is not None
            else []
        )
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


def cli(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Score a weights file on the test split.")
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


def main() -> None:
    run("edgevit.evaluate", cli)


if __name__ == "__main__":
    main()
