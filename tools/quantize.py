"""Quantize EdgeViT weights: int8 (default), w8a8, fp16, int4; or compare them all.

    python tools/quantize.py weights/edgevit-mnist.safetensors --scheme int8 -o OUT
    python tools/quantize.py weights/edgevit-mnist.safetensors --compare [--json]

A thin command line over edgevit.quant. Outputs are written atomically and never over the input.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgevit.cli import run
from edgevit.data import load_dataset
from edgevit.errors import EdgeViTError
from edgevit.graph import BatchedForward
from edgevit.measure import in_fresh_process, latencies, peak_rss
from edgevit.quant.codec import CALIBRATION_METHODS, DEFAULT_PERCENTILE
from edgevit.quant.files import DEFAULT_CALIBRATION, quantize_file
from edgevit.quant.schemes import QUANTIZED
from edgevit.runtime import Classifier
from edgevit.weights import build_model, open_model_file, reject_of

COLUMNS = ("scheme", "bytes", "accuracy", "agreement", "max_logit_diff", "batch1_ms", "batch256_ips", "peak_rss_mb")


def measure(path: str, data_dir=None, latency_calls: int = 200, throughput_images: int = 2560) -> tuple[dict, np.ndarray]:
    """Everything --compare reports for one weights file, measured in the calling process: the row and
    the test-set logits. Run each file in its own fresh process (tools/quantize.py does) so that peak
    memory is its own; it is taken before the test set is loaded, so it is the model's serving footprint.
    """
    header, config, scheme, (mean, std) = open_model_file(path)
    clf = Classifier(path, cache_dir=None)
    one = np.zeros((1, config.image_size, config.image_size), np.float32)
    batch1_ms, _ = latencies(lambda: clf.predict(one), latency_calls, warmup=10)
    images = np.random.default_rng(0).integers(0, 256, (throughput_images, config.image_size, config.image_size), np.uint8)
    clf.predict(images[:256])  # compiles predict's graphs before timing
    start = time.perf_counter()
    for i in range(0, throughput_images, 256):
        clf.predict(images[i : i + 256])
    batch256_ips = throughput_images / (time.perf_counter() - start)
    peak_rss_mb = peak_rss() / 2**20
    test = load_dataset(data_dir, config.num_classes).test
    # logits as edgevit.evaluate computes them, for the accuracy it reports
    logits = BatchedForward(build_model(header, config, scheme), mean, std, 256)(test.images)
    row = {
        "scheme": scheme,
        "bytes": Path(path).stat().st_size,
        # the likeliest digit, as edgevit.evaluate scores it: a "not a digit" class is the last
        "accuracy": float((logits[:, : reject_of(header, config).cls].argmax(-1) == test.labels).mean()),
        "batch1_ms": batch1_ms,
        "batch256_ips": batch256_ips,
        "peak_rss_mb": peak_rss_mb,
    }
    return row, logits


def compare(source: Path, args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": source}
        for scheme in QUANTIZED:
            files[scheme] = Path(tmp) / f"{scheme}.safetensors"
            quantize_file(source, files[scheme], scheme, args.calibration, args.calibration_method, args.percentile, args.data)
        reference = None
        for scheme, path in files.items():
            # each scheme in a fresh process, so its peak memory and compile are its own
            row, logits = in_fresh_process(measure, str(path), args.data)
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
