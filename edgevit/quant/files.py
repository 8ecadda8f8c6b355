"""Quantized weights files: calibrate on training images, encode every Linear, save atomically.

A quantized file carries its scheme, the model config and preprocessing constants of the float file,
the calibration settings (w8a8) and the sha256 of the float file it came from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tinygrad import Tensor

from edgevit.data import load_dataset, normalize
from edgevit.errors import EdgeViTError
from edgevit.files import check_writable
from edgevit.model import ViTConfig, linear_layers
from edgevit.quant.codec import DEFAULT_PERCENTILE, activation_scale
from edgevit.quant.schemes import encode_tensors
from edgevit.weights import WeightsHeader, build_model, file_sha256, load_tensors, open_model_file, save

DEFAULT_CALIBRATION = 512
CALIBRATION_BATCH = 128


def calibrate(
    header: WeightsHeader, config: ViTConfig, images: np.ndarray, mean: float, std: float, method: str, percentile: float
) -> dict[str, float]:
    """Run the float model over calibration images and derive each Linear's input scale."""
    model = build_model(header, config)
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
    source,
    out,
    scheme: str,
    calibration: int = DEFAULT_CALIBRATION,
    method: str = "percentile",
    percentile: float = DEFAULT_PERCENTILE,
    data_dir=None,
) -> dict:
    """Quantize a float weights file into `out` (written atomically); returns the new file's metadata."""
    source, out = Path(source), Path(out)
    if out.exists() and out.resolve() == source.resolve():
        raise EdgeViTError(f"{out}: refusing to overwrite the input weights")
    header, config, _, (mean, std) = open_model_file(source, float_only=True)
    check_writable(out)  # a bad output fails now, not after the calibration
    tensors = {k: v.numpy() for k, v in load_tensors(header).items() if k in header.model_tensors}
    metrics = header.metadata.get("metrics")
    meta = {
        "scheme": scheme,
        "config": header.metadata["config"],
        "preprocess": header.metadata["preprocess"],
        "source_sha256": file_sha256(source),
        "source_test_accuracy": metrics.get("test_accuracy") if isinstance(metrics, dict) else None,
    }
    for kept in ("temperature", "reject"):  # how to read the probabilities does not change with the scheme
        if kept in header.metadata:
            meta[kept] = header.metadata[kept]
    scales = None
    if scheme == "w8a8":
        if calibration < 1:
            raise EdgeViTError("--calibration must be at least 1 image")
        images = load_dataset(data_dir, config.num_classes).train.images[:calibration]
        scales = calibrate(header, config, images, mean, std, method, percentile)
        meta["calibration"] = {"images": len(images), "split": "train", "method": method}
        if method == "percentile":
            meta["calibration"]["percentile"] = percentile
    try:
        quantized = encode_tensors(tensors, config, scheme, scales)
    except ValueError as e:
        raise EdgeViTError(str(e)) from None
    save(out, {k: Tensor(v) for k, v in quantized.items()}, meta)
    return meta
