"""Quantized weights files: calibrate on training images, encode every Linear, save atomically; and
`compare`, every scheme measured against fp32 (`edgevit quantize --compare`).

A quantized file carries its scheme, the model config and preprocessing constants of the float file,
the calibration settings (w8a8) and the sha256 of the float file it came from.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tinygrad import Tensor

from edgevit.data import load_dataset, normalize
from edgevit.errors import EdgeViTError
from edgevit.files import check_writable
from edgevit.graph import BatchedForward
from edgevit.measure import in_fresh_process, latencies, peak_rss
from edgevit.model import linear_layers
from edgevit.quant.codec import DEFAULT_PERCENTILE, activation_scale
from edgevit.quant.schemes import QUANTIZED, encode_tensors
from edgevit.runtime import Classifier
from edgevit.weights import ModelFile, model_file, save

COLUMNS = ("scheme", "bytes", "accuracy", "agreement", "max_logit_diff", "batch1_ms", "batch256_ips", "peak_rss_mb")
DEFAULT_CALIBRATION = 512
MAX_CALIBRATION = 60_000  # MNIST's training split; each image costs about 190 KB of activations
CALIBRATION_BATCH = 128


def calibrate(float_model: ModelFile, images: np.ndarray, method: str, percentile: float) -> dict[str, float]:
    """Run the float model over calibration images and derive each Linear's input scale."""
    model, mean, std = float_model.build(), float_model.mean, float_model.std
    seen: dict[str, list[np.ndarray]] = {}

    def recording(prefix, layer):
        def call(x):
            seen.setdefault(prefix, []).append(x.numpy())
            return layer(x)

        return call

    for prefix, (owner, attr) in linear_layers(model).items():
        setattr(owner, attr, recording(prefix, getattr(owner, attr)))
    for i in range(0, len(images), CALIBRATION_BATCH):
        model(Tensor(normalize(images[i : i + CALIBRATION_BATCH], mean, std))).realize()
    return {prefix: activation_scale(np.concatenate(xs), method, percentile) for prefix, xs in seen.items()}


def quantize_file(
    source: str | os.PathLike | ModelFile,
    out: str | os.PathLike,
    scheme: str,
    calibration: int = DEFAULT_CALIBRATION,
    method: str = "percentile",
    percentile: float = DEFAULT_PERCENTILE,
    data_dir=None,
) -> dict:
    """Quantize a float weights file into `out` (written atomically); returns the new file's metadata."""
    model, out = model_file(source, float_only=True), Path(out)
    if out.exists() and out.resolve() == model.path.resolve():
        raise EdgeViTError(f"{out}: refusing to overwrite the input weights")
    if scheme == "w8a8" and not 1 <= calibration <= MAX_CALIBRATION:
        raise EdgeViTError(f"--calibration must be from 1 to {MAX_CALIBRATION:,} images, not {calibration}")
    check_writable(out)  # a bad output fails now, not after the calibration
    header = model.header
    tensors = {k: v for k, v in model.file.arrays().items() if k in header.model_tensors}
    metrics = header.metadata.get("metrics")
    meta = {
        "scheme": scheme,
        "config": header.metadata["config"],
        "preprocess": header.metadata["preprocess"],
        "source_sha256": model.sha256,
        "source_test_accuracy": metrics.get("test_accuracy") if isinstance(metrics, dict) else None,
    }
    for kept in ("temperature", "reject"):  # how to read the probabilities does not change with the scheme
        if kept in header.metadata:
            meta[kept] = header.metadata[kept]
    scales = None
    if scheme == "w8a8":
        images = load_dataset(data_dir, model.config.num_classes).train.images[:calibration]
        scales = calibrate(model, images, method, percentile)
        meta["calibration"] = {"images": len(images), "split": "train", "method": method}
        if method == "percentile":
            meta["calibration"]["percentile"] = percentile
    try:
        quantized = encode_tensors(tensors, model.config, scheme, scales)
    except ValueError as e:
        raise EdgeViTError(str(e)) from None
    save(out, {k: Tensor(v) for k, v in quantized.items()}, meta)
    return meta


def measure(path: str, data_dir=None, latency_calls: int = 200, throughput_images: int = 2560) -> tuple[dict, np.ndarray]:
    """Everything --compare reports for one weights file, measured in the calling process: the row and
    the test-set logits. Run each file in its own fresh process (tools/quantize.py does) so that peak
    memory is its own; it is taken before the test set is loaded, so it is the model's serving footprint.
    """
    model = ModelFile.open(path)
    config = model.config
    clf = Classifier(model, cache_dir=None)
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
    logits = BatchedForward(model.build(), model.mean, model.std, 256)(test.images)
    row = {
        "scheme": model.scheme,
        "bytes": len(model.file.data),
        # the likeliest digit, as edgevit.evaluate scores it: a "not a digit" class is the last
        "accuracy": float((logits[:, : model.reject.cls].argmax(-1) == test.labels).mean()),
        "batch1_ms": batch1_ms,
        "batch256_ips": batch256_ips,
        "peak_rss_mb": peak_rss_mb,
    }
    return row, logits


def compare(
    source: str | os.PathLike,
    calibration: int = DEFAULT_CALIBRATION,
    method: str = "percentile",
    percentile: float = DEFAULT_PERCENTILE,
    data_dir=None,
    progress: Callable[[str], None] = lambda scheme: None,
) -> list[dict]:
    """fp32 and every quantized scheme of `source`, each measured in a fresh process (`measure`):
    size, accuracy, agreement with fp32, largest logit difference, speed and memory. `progress` is
    told each scheme as it is done."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": Path(source)}
        for scheme in QUANTIZED:
            files[scheme] = Path(tmp) / f"{scheme}.safetensors"
            quantize_file(source, files[scheme], scheme, calibration, method, percentile, data_dir)
        reference = None
        for scheme, path in files.items():
            # each scheme in a fresh process, so its peak memory and compile are its own
            row, logits = in_fresh_process(measure, str(path), data_dir)
            if reference is None:
                reference = logits
            row["agreement"] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            row["max_logit_diff"] = float(np.abs(logits - reference).max())
            rows.append({k: row[k] for k in COLUMNS})
            progress(scheme)
    return rows
