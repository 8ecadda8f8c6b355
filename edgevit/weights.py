"""Weights files: safetensors with the model config and preprocessing constants in the metadata.

Every file rebuilds its own model: `config` holds the ViTConfig, `preprocess` the constants the
pixels were normalised with. Training checkpoints add the optimizer state (tensors under
`optimizer.`) and `train_state`; inference ignores both. Files are only ever written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinygrad.nn.state import load_state_dict, safe_load, safe_save

from edgevit.errors import EdgeViTError
from edgevit.model import ViT, ViTConfig
from edgevit.quant import schemes

FORMAT = "edgevit"
FORMAT_VERSION = 1
OPTIMIZER_PREFIX = "optimizer."
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 100 * 2**20
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WeightsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, Any]  # JSON-decoded values of the safetensors string metadata

    @property
    def model_tensors(self) -> dict[str, TensorInfo]:
        return {k: v for k, v in self.tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, fsync it, then rename it over `path`.

    A crash or Ctrl-C at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    # safetensors metadata is str -> str; JSON-encode each value so other readers accept the file
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION)} | {k: json.dumps(v) for k, v in values.items()}


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """Parse and validate a safetensors header without touching the tensor data."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(HEADER_LEN_BYTES)
            if len(head) < HEADER_LEN_BYTES:
                raise EdgeViTError(f"{path}: not a safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > min(MAX_HEADER_BYTES, size - HEADER_LEN_BYTES):
                raise EdgeViTError(f"{path}: not a safetensors file (header length {header_len} exceeds the file)")
            raw = f.read(header_len)
    except IsADirectoryError:
        raise EdgeViTError(f"{path}: is a directory, not a weights file") from None
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot read weights ({e.strerror})") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
        meta_raw = header.pop("__metadata__", {}) or {}
        tensors, end = {}, 0
        for name, info in header.items():
            dtype, shape, (start, stop) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
            if dtype not in DTYPE_BYTES or stop - start != math.prod(shape) * DTYPE_BYTES[dtype] or start < 0:
                raise ValueError(f"tensor {name!r} has inconsistent dtype/shape/offsets")
            tensors[name], end = TensorInfo(dtype, shape), max(end, stop)
    except (ValueError, KeyError, TypeError) as e:
        raise EdgeViTError(f"{path}: corrupt safetensors header ({e})") from None
    data_bytes = size - HEADER_LEN_BYTES - header_len
    if data_bytes != end:
        kind = "truncated" if data_bytes < end else "oversized"
        raise EdgeViTError(f"{path}: {kind} weights file (header declares {end} data bytes, file has {data_bytes})")
    if meta_raw.get("format") != FORMAT:
        raise EdgeViTError(f"{path}: not an EdgeViT weights file (no 'format: {FORMAT}' in its metadata)")
    try:
        metadata = {k: json.loads(v) for k, v in meta_raw.items() if k not in ("format", "format_version")}
    except (ValueError, TypeError) as e:
        raise EdgeViTError(f"{path}: corrupt metadata ({e})") from None
    return WeightsHeader(path, tensors, metadata)


def check_tensors(header: WeightsHeader, expected: dict[str, tuple[tuple[int, ...], str]], optimizer: bool = False) -> None:
    """Refuse a file whose tensors are not exactly the (shape, dtype)s expected (optimizer state too, if asked)."""
    tensors = header.tensors if optimizer else header.model_tensors
    problems = []
    if missing := sorted(expected.keys() - tensors.keys()):
        problems.append(f"missing {', '.join(missing)}")
    if unexpected := sorted(tensors.keys() - expected.keys()):
        problems.append(f"unexpected {', '.join(unexpected)}")
    for k, (shape, dtype) in expected.items():
        if k in tensors and tensors[k].shape != shape:
            problems.append(f"{k} is {tensors[k].shape} but the config needs {shape}")
        elif k in tensors and tensors[k].dtype != dtype:
            problems.append(f"{k} is {tensors[k].dtype}, expected {dtype}")
    if problems:
        raise EdgeViTError(f"{header.path}: tensors do not match the config in its metadata: {'; '.join(problems)}")


def save(path: str | os.PathLike, tensors: dict, metadata: dict[str, Any]) -> None:
    """Write tinygrad tensors and JSON-able metadata atomically as safetensors."""
    atomic_write(path, lambda tmp: safe_save(tensors, str(tmp), encode_metadata(metadata)))


def load_tensors(header: WeightsHeader, prefix: str = "") -> dict:
    """The file's tensors whose names start with `prefix` (prefix stripped), still on the DISK device."""
    return {k[len(prefix) :]: v for k, v in safe_load(str(header.path)).items() if k.startswith(prefix)}


def config_of(header: WeightsHeader) -> ViTConfig:
    try:
        return ViTConfig(**header.metadata["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeViTError(f"{header.path}: no usable model config in its metadata ({e})") from None


def scheme_of(header: WeightsHeader) -> str:
    scheme = header.metadata.get("scheme", "fp32")
    if scheme not in schemes.SCHEMES:
        raise EdgeViTError(f"{header.path}: unknown weights scheme {scheme!r}")
    return scheme


def temperature_of(header: WeightsHeader) -> float:
    """The calibration temperature in a file's metadata (probabilities are softmax(logits / T)); 1.0
    for a file without one."""
    fitted = header.metadata.get("temperature")
    if fitted is None:
        return 1.0
    t = fitted.get("value") if isinstance(fitted, dict) else None
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t <= 0:
        raise EdgeViTError(f"{header.path}: calibration temperature {t!r} is not a positive number")
    return float(t)


def open_model_file(path: str | os.PathLike, float_only: bool = False):
    """Read and check a weights file of any scheme without loading its tensors.

    Returns (header, ViTConfig, scheme, (mean, std)); `float_only` refuses quantized files.
    """
    header = read_header(path)
    scheme = scheme_of(header)
    if float_only and scheme != "fp32":
        raise EdgeViTError(f"{header.path}: holds {scheme} weights; this tool needs float (fp32) weights")
    config = config_of(header)
    check_tensors(header, schemes.parameter_specs(config, scheme))
    pre = header.metadata.get("preprocess") or {}
    if not {"mean", "std"} <= pre.keys():
        raise EdgeViTError(f"{header.path}: no preprocessing constants (mean, std) in its metadata")
    temperature_of(header)  # a bad one fails here, before any work
    return header, config, scheme, (float(pre["mean"]), float(pre["std"]))


def build_model(header: WeightsHeader, config: ViTConfig, scheme: str = "fp32") -> ViT:
    """The model `config` and `scheme` describe, with the file's tensors loaded onto the default device."""
    model = schemes.build_vit(config, scheme)
    load_state_dict(model, load_tensors(header), verbose=False)
    return model


def load_model(path: str | os.PathLike, float_only: bool = False) -> tuple[ViT, WeightsHeader]:
    """Rebuild the model a weights file describes, weights loaded: (model, header)."""
    header, config, scheme, _ = open_model_file(path, float_only)
    return build_model(header, config, scheme), header
