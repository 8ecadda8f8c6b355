"""Weights files: safetensors with the model config and preprocessing constants in the metadata.

Every file rebuilds its own model: `config` holds the ViTConfig, `preprocess` the constants the
pixels were normalised with. Training checkpoints add the optimizer state (tensors under
`optimizer.`) and `train_state`; inference ignores both. Files are only ever written atomically.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgevit.errors import EdgeViTError

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


def check_tensors(
    header: WeightsHeader, expected: dict[str, tuple[int, ...]], dtype: str | None = "F32", optimizer: bool = False
) -> None:
    """Refuse a file whose tensors are not exactly the ones its config builds (and, if asked, its optimizer)."""
    tensors = header.tensors if optimizer else header.model_tensors
    have = {k: v.shape for k, v in tensors.items()}
    problems = []
    if missing := sorted(expected.keys() - have.keys()):
        problems.append(f"missing {', '.join(missing)}")
    if unexpected := sorted(have.keys() - expected.keys()):
        problems.append(f"unexpected {', '.join(unexpected)}")
    problems += [f"{k} is {have[k]} but the config needs {v}" for k, v in expected.items() if k in have and have[k] != v]
    problems += [f"{k} is {v.dtype}, expected {dtype}" for k, v in tensors.items() if dtype and v.dtype != dtype]
    if problems:
        raise EdgeViTError(f"{header.path}: tensors do not match the config in its metadata: {'; '.join(problems)}")


def save(path: str | os.PathLike, tensors: dict, metadata: dict[str, Any]) -> None:
    """Write tinygrad tensors and JSON-able metadata atomically as safetensors."""
    from tinygrad.nn.state import safe_save

    atomic_write(path, lambda tmp: safe_save(tensors, str(tmp), encode_metadata(metadata)))


def load_tensors(header: WeightsHeader, prefix: str = "") -> dict:
    """The file's tensors whose names start with `prefix` (prefix stripped), still on the DISK device."""
    from tinygrad.nn.state import safe_load

    return {k[len(prefix) :]: v for k, v in safe_load(str(header.path)).items() if k.startswith(prefix)}


def config_of(header: WeightsHeader):
    from edgevit.model import ViTConfig

    try:
        return ViTConfig(**header.metadata["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeViTError(f"{header.path}: no usable model config in its metadata ({e})") from None


def load_model(path: str | os.PathLike):
    """Rebuild the ViT a weights file describes and load its tensors onto the default device."""
    from tinygrad.nn.state import get_state_dict, load_state_dict

    from edgevit.model import ViT

    header = read_header(path)
    if header.metadata.get("scheme", "fp32") != "fp32":
        raise EdgeViTError(f"{header.path}: holds {header.metadata['scheme']} weights; this tool needs float weights")
    model = ViT(config_of(header))
    state = get_state_dict(model)
    check_tensors(header, {k: v.shape for k, v in state.items()})
    load_state_dict(model, load_tensors(header), verbose=False)
    return model, header
