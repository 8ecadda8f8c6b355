"""Quantize EdgeViT weights: int8 (default), w8a8, fp16, int4; or compare them all.

    python tools/quantize.py weights/edgevit-mnist.safetensors --scheme int8 -o OUT
    python tools/quantize.py weights/edgevit-mnist.safetensors --compare [--json]

A thin command line over edgevit.quantize. Outputs are written atomically and never over the input.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgevit.cli import run
from edgevit.errors import EdgeViTError
from edgevit.quantize import CALIBRATION_METHODS, DEFAULT_CALIBRATION, DEFAULT_PERCENTILE, SCHEMES, measure, quantize_file

COLUMNS = ("scheme", "bytes", "accuracy", "agreement", "max_logit_diff", "batch1_ms", "batch256_ips", "peak_rss_mb")


def measure_apart(path: Path, data_dir) -> tuple[dict, np.ndarray]:
    """measure() in a fresh process, so each scheme's peak memory and compile are its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (str(path), data_dir))


def compare(source: Path, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": source}
        for scheme in SCHEMES:
            files[scheme] = Path(tmp) / f"{scheme}.safetensors"
            quantize_file(source, files[scheme], scheme, args.calibration, args.calibration_method, args.percentile, args.data)
        reference = None
        for scheme, path in files.items():
            row, logits = measure_apart(path, args.data)
            if reference is None:
                reference = logits
            row["agreement"] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            row["max_logit_diff"] = float(np.abs(logits - reference).max())
            rows.append({k: row[k] for k in COLUMNS})
            print(f"measured {scheme}", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    fp32 = rows[0]
    header = ["scheme", "file bytes", "vs fp32", "accuracy", "drop (points)", "agreement", "max logit diff"]
    header += ["batch-1 ms", "batch-256 img/s", "peak RSS MiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            f"| {r['scheme']} | {r['bytes']:,} | {100 * r['bytes'] / fp32['bytes']:.1f}% | {100 * r['accuracy']:.2f}% "
            f"| {100 * (fp32['accuracy'] - r['accuracy']):+.2f} | {100 * r['agreement']:.2f}% | {r['max_logit_diff']:.4f} "
            f"| {r['batch1_ms']:.2f} | {r['batch256_ips']:,.0f} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/quantize.py", description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, help="float (fp32) EdgeViT weights")
    p.add_argument("--scheme", choices=SCHEMES, default="int8")
    p.add_argument("-o", "--out", type=Path, help="output file (default: WEIGHTS with -SCHEME before .safetensors)")
    p.add_argument("--compare", action="store_true", help="measure fp32 and every scheme on the 10,000 test images")
    p.add_argument("--json", action="store_true", help="with --compare: a JSON list instead of the table")
    p.add_argument(
        "--calibration", type=int, default=DEFAULT_CALIBRATION, metavar="N", help="w8a8: training images to calibrate on"
    )
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="percentile")
    p.add_argument("--percentile", type=float, default=DEFAULT_PERCENTILE, help="w8a8 percentile of |activation| mapped to 127")
    p.add_argument("--data", help="MNIST-format data directory (default: $EDGEVIT_DATA or bundled MNIST)")
    args = p.parse_args(argv)
    if not 0 < args.percentile <= 100:
        raise EdgeViTError("--percentile must be in (0, 100]")
    if args.compare:
        rows = compare(args.weights, args)
        print(json.dumps(rows, indent=1) if args.json else table(rows))
        return 0
    out = args.out or args.weights.with_name(args.weights.name.removesuffix(".safetensors") + f"-{args.scheme}.safetensors")
    quantize_file(args.weights, out, args.scheme, args.calibration, args.calibration_method, args.percentile, args.data)
    size = out.stat().st_size
    print(f"wrote {out} ({size:,} bytes, {100 * size / args.weights.stat().st_size:.1f}% of the input)")
    return 0


if __name__ == "__main__":
    run("quantize", cli)
