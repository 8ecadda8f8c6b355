"""Quantization math, in numpy: pure functions from float weights to smaller ones and back.

Schemes (every Linear layer's weight; biases, LayerNorm, class token and position embeddings stay
float32, they are under 3% of the parameters and the precision of norms matters):
- int8: symmetric, one scale per output channel; activations stay float (what ONNX Runtime
  recommends for transformers). The graph dequantizes in place: W = q * scale.
- w8a8: int8 weights as above and int8 activations: one symmetric scale per Linear input, from a
  calibration pass (max or a high percentile of |x|). Matmuls run int8 x int8 -> int32. LayerNorm,
  softmax, GELU and the residual adds stay float: they are where a ViT's outliers live.
- fp16: every tensor in half precision.
- int4: symmetric, one scale per group of 32 inputs, two values packed per byte (low nibble first).
"""

from __future__ import annotations

import numpy as np

SCHEMES = ("int8", "w8a8", "fp16", "int4")
INT8_MAX = 127
INT4_MAX = 7  # symmetric [-7, 7]: -8 would make zero off-centre
INT4_GROUP = 32
CALIBRATION_METHODS = ("minmax", "percentile")
DEFAULT_PERCENTILE = 99.99


def quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> int8 (out, in) and float32 scales (out,): w ~= q * scale[:, None]."""
    scale = np.abs(w).max(axis=1) / INT8_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, scale


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * scale[:, None]


def int4_groups(in_features: int, group: int = INT4_GROUP) -> int:
    """Groups along the input dimension; the last one may be short (e.g. 49 patch pixels: 32 + 17)."""
    return -(-in_features // group)


def quantize_int4(w: np.ndarray, group: int = INT4_GROUP) -> tuple[np.ndarray, np.ndarray]:
    """(out, in) float -> packed uint8 (out, ceil(in/2)) and float32 scales (out, groups)."""
    out_f, in_f = w.shape
    padded = np.zeros((out_f, int4_groups(in_f, group) * group), np.float32)
    padded[:, :in_f] = w
    g = padded.reshape(out_f, -1, group)
    scale = np.abs(g).max(axis=2) / INT4_MAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(g / scale[..., None]), -INT4_MAX, INT4_MAX).astype(np.int8).reshape(out_f, -1)[:, :in_f]
    return pack_int4(q), scale


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int8 values in [-8, 7] (out, in) -> uint8 (out, ceil(in/2)), element 2k in the low nibble."""
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), q.dtype)], axis=1)
    nibbles = (q.astype(np.int16) & 0xF).astype(np.uint8)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


def unpack_int4(packed: np.ndarray, in_features: int) -> np.ndarray:
    """The inverse of pack_int4: uint8 (out, ceil(in/2)) -> int8 (out, in_features)."""
    low = (packed & 0xF).astype(np.int8)
    high = (packed >> 4).astype(np.int8)
    q = np.stack([low, high], axis=2).reshape(packed.shape[0], -1)[:, :in_features]
    return np.where(q > 7, q - 16, q).astype(np.int8)


def dequantize_int4(packed: np.ndarray, scale: np.ndarray, in_features: int, group: int = INT4_GROUP) -> np.ndarray:
    q = unpack_int4(packed, in_features).astype(np.float32)
    return q * np.repeat(scale, group, axis=1)[:, :in_features]


def activation_scale(samples: np.ndarray, method: str = "percentile", percentile: float = DEFAULT_PERCENTILE) -> float:
    """One symmetric int8 scale for a Linear's inputs, from calibration activations."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    a = np.abs(samples.ravel())
    top = float(a.max() if method == "minmax" else np.percentile(a, percentile))
    return top / INT8_MAX if top > 0 else 1.0


def quantize_activations(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.round(x / scale), -INT8_MAX, INT8_MAX).astype(np.int8)


def quantize_tensors(
    tensors: dict[str, np.ndarray], scheme: str, input_scales: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    """A float state dict -> the `scheme` state dict (see edgevit.model.parameter_specs for the layout).

    Only Linear weights (the 2-D tensors) are quantized; `input_scales` (w8a8) maps each Linear's
    prefix to its calibrated activation scale.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)}")
    out: dict[str, np.ndarray] = {}
    for name, w in tensors.items():
        prefix = name.removesuffix(".weight")
        if w.ndim != 2:
            out.setdefault(name, w.astype(np.float32))
        elif scheme == "fp16":
            out[name], out[f"{prefix}.bias"] = w.astype(np.float16), tensors[f"{prefix}.bias"].astype(np.float16)
        elif scheme == "int4":
            out[f"{prefix}.q"], out[f"{prefix}.scale"] = quantize_int4(w)
        else:
            out[f"{prefix}.q"], out[f"{prefix}.scale"] = quantize_int8(w)
            if scheme == "w8a8":
                if input_scales is None or prefix not in input_scales:
                    raise ValueError(f"w8a8 needs a calibrated input scale for {prefix}")
                out[f"{prefix}.input_scale"] = np.array([input_scales[prefix]], np.float32)
    return out


# --- files -----------------------------------------------------------------------------------
DEFAULT_CALIBRATION = 512
CALIBRATION_BATCH = 128


def calibrate(header, config, images: np.ndarray, mean: float, std: float, method: str, percentile: float) -> dict[str, float]:
    """Run the float model over calibration images and derive each Linear's input scale."""
    from tinygrad import Tensor

    from edgevit.data import normalize
    from edgevit.model import linear_layers
    from edgevit.weights import build_model

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
    from pathlib import Path

    from edgevit.errors import EdgeViTError
    from edgevit.weights import file_sha256, load_tensors, open_model_file, save

    source, out = Path(source), Path(out)
    if out.exists() and out.resolve() == source.resolve():
        raise EdgeViTError(f"{out}: refusing to overwrite the input weights")
    header, config, _, (mean, std) = open_model_file(source, float_only=True)
    tensors = {k: v.numpy() for k, v in load_tensors(header).items() if k in header.model_tensors}
    meta = {
        "scheme": scheme,
        "config": header.metadata["config"],
        "preprocess": header.metadata["preprocess"],
        "source_sha256": file_sha256(source),
        "source_test_accuracy": header.metadata.get("metrics", {}).get("test_accuracy"),
    }
    scales = None
    if scheme == "w8a8":
        from edgevit.data import load_dataset

        if calibration < 1:
            raise EdgeViTError("--calibration must be at least 1 image")
        images = load_dataset(data_dir, config.num_classes).train.images[:calibration]
        scales = calibrate(header, config, images, mean, std, method, percentile)
        meta["calibration"] = {"images": len(images), "split": "train", "method": method}
        if method == "percentile":
            meta["calibration"]["percentile"] = percentile
    try:
        quantized = quantize_tensors(tensors, scheme, scales)
    except ValueError as e:
        raise EdgeViTError(str(e)) from None
    from tinygrad import Tensor

    save(out, {k: Tensor(v) for k, v in quantized.items()}, meta)
    return meta


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux keeps getrusage's ru_maxrss across fork and exec, so a child started by a big parent reports
    the parent's peak; /proc's VmHWM belongs to the process's own address space.
    """
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(path: str, data_dir=None, latency_calls: int = 200, throughput_images: int = 2560) -> tuple[dict, np.ndarray]:
    """Everything --compare reports for one weights file, measured in the calling process: the row and
    the test-set logits. Run each file in its own fresh process (tools/quantize.py does) so that peak
    memory is its own; it is taken before the test set is loaded, so it is the model's serving footprint.
    """
    import time
    from pathlib import Path

    from edgevit.data import load_dataset
    from edgevit.runtime import BatchedForward, Classifier
    from edgevit.weights import build_model, open_model_file

    header, config, scheme, (mean, std) = open_model_file(path)
    clf = Classifier(path, cache_dir=None)
    one = np.zeros((1, config.image_size, config.image_size), np.float32)
    for _ in range(10):
        clf.predict(one)
    times = []
    for _ in range(latency_calls):
        t = time.perf_counter()
        clf.predict(one)
        times.append(time.perf_counter() - t)
    forward = BatchedForward(build_model(header, config, scheme), mean, std, 256)
    images = np.random.default_rng(0).integers(0, 256, (throughput_images, config.image_size, config.image_size), np.uint8)
    forward(images[:256])  # compile before timing
    start = time.perf_counter()
    forward(images)
    batch256_ips = throughput_images / (time.perf_counter() - start)
    peak_rss_mb = peak_rss() / 2**20
    test = load_dataset(data_dir, config.num_classes).test
    logits = forward(test.images)
    row = {
        "scheme": scheme,
        "bytes": Path(path).stat().st_size,
        "accuracy": float((logits.argmax(-1) == test.labels).mean()),
        "batch1_ms": float(np.median(times) * 1e3),
        "batch256_ips": batch256_ips,
        "peak_rss_mb": peak_rss_mb,
    }
    return row, logits
