"""Quantize EdgeViT weights: int8 (default), w8a8, fp16, int4; or compare them all.

    edgevit quantize weights/edgevit-mnist.safetensors --scheme int8 -o OUT
    edgevit quantize weights/edgevit-mnist.safetensors --compare [--json]

(also `python tools/quantize.py`). A thin command line over edgevit.quantize. Outputs are written
atomically and never over the input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgevit.cli import run
from edgevit.errors import EdgeViTError
from edgevit.quant.codec import CALIBRATION_METHODS, DEFAULT_PERCENTILE
from edgevit.quant.schemes import QUANTIZED
from edgevit.quantize import DEFAULT_CALIBRATION, compare, quantize_file

PROG = "python tools/quantize.py"


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


def cli(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("weights", type=Path, help="float (fp32) EdgeViT weights")
    p.add_argument("--scheme", choices=QUANTIZED, default="int8")
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
        measured = lambda scheme: print(f"measured {scheme}", file=sys.stderr, flush=True)  # noqa: E731
        rows = compare(args.weights, args.calibration, args.calibration_method, args.percentile, args.data, measured)
        print(json.dumps(rows, indent=1) if args.json else table(rows))
        return 0
    out = args.out or args.weights.with_name(args.weights.name.removesuffix(".safetensors") + f"-{args.scheme}.safetensors")
    quantize_file(args.weights, out, args.scheme, args.calibration, args.calibration_method, args.percentile, args.data)
    size = out.stat().st_size
    print(f"wrote {out} ({size:,} bytes, {100 * size / args.weights.stat().st_size:.1f}% of the input)")
    return 0


def main() -> None:
    run("quantize", cli)


if __name__ == "__main__":
    main()
