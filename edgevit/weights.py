"""Weights files: safetensors with the model config and preprocessing constants in the metadata.

Every file rebuilds its own model: `config` holds the ViTConfig, `preprocess` the constants the
pixels were normalised with. Training checkpoints add the optimizer state (tensors under
`optimizer.`) and `train_state`; inference ignores both. Files are only ever written atomically.

A file is data from anywhere, so everything is checked before anything is built from it: the header
is JSON of the right types, the tensors tile the data exactly (no gaps, no overlaps), the config's
sizes are whole numbers in sane ranges (edgevit.model) and match the tensors, the normalisation
constants are finite with a positive std, and every float tensor is finite.

A file is read once (`read_weights`): its checks, its sha256 (which names it in the cache) and its
tensors all come from those bytes, so a file replaced while it is used cannot mix two files, and a
file this user may only read (a read-only filesystem, a system-wide install) loads like any other.
`ModelFile.open` adds what the model needs: config, scheme, normalisation, calibration, reject rule.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tinygrad import Tensor
from tinygrad.nn.state import inverse_safe_dtypes, load_state_dict

from edgevit import internals
from edgevit.answer import Reject
from edgevit.checks import checked_float, is_finite, is_int
from edgevit.errors import EdgeViTError
from edgevit.files import atomic_write, read_regular
from edgevit.model import ViT, ViTConfig
from edgevit.quant import schemes

FORMAT = "edgevit"
FORMAT_VERSION = 1
OPTIMIZER_PREFIX = "optimizer."
HEADER_LEN_BYTES = 8
MAX_HEADER_BYTES = 8 * 2**20  # an EdgeViT header is a few KiB; safetensors itself allows 100 MiB
MAX_TENSOR_NDIM = 8
HEADER_ALIGN = 8  # the JSON header is padded with spaces to a multiple of this (as tinygrad and safetensors write it)
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
# float dtypes as numpy reads them; BF16 (no numpy type) as its bits: non-finite means an all-ones exponent
FLOAT_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}
NUMPY_DTYPES = FLOAT_DTYPES | {"U8": "u1", "I8": "i1", "I16": "<i2", "U16": "<u2", "I32": "<i4", "U32": "<u4"}
MAX_WEIGHTS_BYTES = 2**30  # the largest config edgevit.model allows is far smaller
BF16_EXPONENT = 0x7F80
METADATA_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number", float: "a finite number"}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # [start, stop) in the data that follows the header


@dataclass(frozen=True)
class WeightsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, Any]  # JSON-decoded values of the safetensors string metadata
    data_start: int = 0  # file offset of the tensor data

    @property
    def model_tensors(self) -> dict[str, TensorInfo]:
        return {k: v for k, v in self.tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}


def encode_metadata(values: dict[str, Any]) -> dict[str, str]:
    # safetensors metadata is str -> str; JSON-encode each value so other readers accept the file
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION)} | {k: json.dumps(v) for k, v in values.items()}


def parse_header(path: Path, data: bytes) -> WeightsHeader:
    """Parse and validate the safetensors header of a file's bytes `data` (from `path`)."""
    size = len(data)
    if size < HEADER_LEN_BYTES:
        raise EdgeViTError(f"{path}: not a safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", data[:HEADER_LEN_BYTES])
    if header_len > min(MAX_HEADER_BYTES, size - HEADER_LEN_BYTES):
        raise EdgeViTError(
            f"{path}: not a safetensors file (header length {header_len} exceeds the file or {MAX_HEADER_BYTES})"
        )
    try:
        tensors, meta_raw = _parse_header(data[HEADER_LEN_BYTES : HEADER_LEN_BYTES + header_len])
    except (ValueError, RecursionError) as e:
        raise EdgeViTError(f"{path}: corrupt safetensors header ({e})") from None
    end = max((t.offsets[1] for t in tensors.values()), default=0)
    data_bytes = size - HEADER_LEN_BYTES - header_len
    if data_bytes != end:
        kind = "truncated" if data_bytes < end else "oversized"
        raise EdgeViTError(f"{path}: {kind} weights file (header declares {end} data bytes, file has {data_bytes})")
    if meta_raw.get("format") != FORMAT:
        raise EdgeViTError(f"{path}: not an EdgeViT weights file (no 'format: {FORMAT}' in its metadata)")
    try:
        metadata = {k: json.loads(v) for k, v in meta_raw.items() if k not in ("format", "format_version")}
    except (ValueError, RecursionError) as e:
        raise EdgeViTError(f"{path}: corrupt metadata ({e})") from None
    return WeightsHeader(path, tensors, metadata, HEADER_LEN_BYTES + header_len)


@dataclass(frozen=True)
class WeightsFile:
    """A weights or checkpoint file as read, once: its bytes, their sha256 and their parsed header."""

    header: WeightsHeader
    data: bytes = field(repr=False)
    sha256: str

    @property
    def path(self) -> Path:
        return self.header.path

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The tensors whose names start with `prefix` (stripped), as numpy arrays copied out of the bytes."""
        out = {}
        for name, info in self.header.tensors.items():
            if name.startswith(prefix):
                if info.dtype not in NUMPY_DTYPES:
                    raise EdgeViTError(f"{self.path}: tensor {name!r} is {info.dtype}, which EdgeViT does not load")
                start = self.header.data_start + info.offsets[0]
                raw = np.frombuffer(self.data, NUMPY_DTYPES[info.dtype], math.prod(info.shape), start)
                out[name[len(prefix) :]] = raw.reshape(info.shape).astype(raw.dtype.newbyteorder("="))
        return out

    def tensors(self, prefix: str = "") -> dict[str, Tensor]:
        """The same tensors on tinygrad's default device."""
        return {name: Tensor(array) for name, array in self.arrays(prefix).items()}


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a weights or checkpoint file once and validate its header (not yet its tensors)."""
    path = Path(path)
    data = read_regular(path, MAX_WEIGHTS_BYTES, "weights file")
    return WeightsFile(parse_header(path, data), data, hashlib.sha256(data).hexdigest())


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """The validated header of the file at `path`."""
    return read_weights(path).header


def _parse_header(raw: bytes) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors and the string metadata of a header; ValueError naming what is wrong."""
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    meta_raw = header.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict) or not all(isinstance(v, str) for v in meta_raw.values()):
        raise ValueError("__metadata__ is not an object of strings")
    tensors = {}
    for name, info in header.items():
        if not isinstance(info, dict):
            raise ValueError(f"tensor {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise ValueError(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or len(shape) > MAX_TENSOR_NDIM or not all(is_int(d) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name!r} has shape {shape!r}, not up to {MAX_TENSOR_NDIM} whole numbers")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(is_int(o) and o >= 0 for o in offsets):
            raise ValueError(f"tensor {name!r} has data_offsets {offsets!r}, not [start, stop]")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ValueError(f"tensor {name!r} has inconsistent dtype/shape/offsets")
        tensors[name] = TensorInfo(dtype, tuple(shape), (offsets[0], offsets[1]))
    # the tensors must tile the data: an overlap would alias two weights, a gap hide bytes
    end = 0
    for name, info in sorted(tensors.items(), key=lambda item: item[1].offsets):
        if info.offsets[0] != end:
            raise ValueError(
                f"tensor {name!r} starts at data byte {info.offsets[0]}, not {end}: tensors overlap or leave a gap"
            )
        end = info.offsets[1]
    return tensors, meta_raw


def metadata_value(header: WeightsHeader, *keys: str | int, kind: type):
    """header.metadata[keys[0]][keys[1]]... (a str key into an object, an int into a list): present
    and of `kind` (dict, list, str, int: a whole number, float: a finite number), or one error naming
    the key. For code reading metadata users may edit."""
    value: Any = header.metadata
    for i, key in enumerate(keys):
        if isinstance(key, str):
            present = isinstance(value, dict) and key in value
        else:
            present = isinstance(value, list) and 0 <= key < len(value)
        if not present:
            raise EdgeViTError(f"{header.path}: no {'.'.join(map(str, keys[: i + 1]))} in its metadata")
        value = value[key]
    ok = is_int(value) if kind is int else is_finite(value) if kind is float else isinstance(value, kind)
    if not ok:
        where = ".".join(map(str, keys))
        raise EdgeViTError(f"{header.path}: metadata {where} is not {METADATA_KINDS[kind]} ({str(value)[:40]!r})")
    return value


def check_finite(file: WeightsFile, names: list[str] | None = None) -> None:
    """Refuse a file whose float tensors (those in `names`, default all) hold NaN or infinity: a model
    with them answers "0 nan%", which is no answer."""
    header = file.header
    wanted = [n for n in (header.tensors if names is None else names) if header.tensors[n].dtype in (*FLOAT_DTYPES, "BF16")]
    data = np.frombuffer(file.data, np.uint8, offset=header.data_start)
    bad = []
    for name in wanted:
        info = header.tensors[name]
        chunk = data[info.offsets[0] : info.offsets[1]]
        if info.dtype == "BF16":
            finite = (chunk.view("<u2") & BF16_EXPONENT) != BF16_EXPONENT
        else:
            finite = np.isfinite(chunk.view(FLOAT_DTYPES[info.dtype]))
        if not finite.all():
            bad.append(name)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise EdgeViTError(f"{header.path}: tensors hold NaN or infinity: {', '.join(bad[:3])}{more}")


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


def save(path: str | os.PathLike, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """Write tinygrad tensors and JSON-able metadata atomically as safetensors.

    The same bytes as tinygrad's safe_save, written with plain writes: safe_save writes through mmap,
    where a full disk kills the process with SIGBUS. Ctrl-C and SIGTERM wait until the file is in
    place (a checkpoint interrupted by a second Ctrl-C would otherwise be lost); a full or read-only
    disk is one error line, and the old file stays.
    """
    header: dict[str, Any] = {"__metadata__": encode_metadata(metadata)}
    arrays, offset = {}, 0
    for name, t in tensors.items():
        if t.dtype not in inverse_safe_dtypes:
            raise EdgeViTError(f"cannot save tensor {name!r} of type {t.dtype} as safetensors")
        arrays[name] = np.ascontiguousarray(t.numpy())  # computed now: nothing slow runs while signals wait
        header[name] = {
            "dtype": inverse_safe_dtypes[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + arrays[name].nbytes],
        }
        offset += arrays[name].nbytes
    text = json.dumps(header, separators=(",", ":"))
    raw = (text + " " * (-len(text) % HEADER_ALIGN)).encode()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for array in arrays.values():
                f.write(array.data)

    atomic_write(path, write, deferred=True)


def config_of(header: WeightsHeader) -> ViTConfig:
    """The model config in a file's metadata, its sizes checked (ViTConfig) before anything is built."""
    raw = header.metadata.get("config")
    if not isinstance(raw, dict):
        raise EdgeViTError(f"{header.path}: no usable model config in its metadata (config is {type(raw).__name__})")
    try:
        return ViTConfig(**raw)
    except (TypeError, ValueError) as e:
        raise EdgeViTError(f"{header.path}: no usable model config in its metadata ({e})") from None


def preprocess_of(header: WeightsHeader) -> tuple[float, float]:
    """The normalisation (mean, std) the model was trained with: finite, std positive."""
    pre = header.metadata.get("preprocess")
    if not isinstance(pre, dict) or not {"mean", "std"} <= pre.keys():
        raise EdgeViTError(f"{header.path}: no preprocessing constants (mean, std) in its metadata")
    mean = checked_float(f"{header.path}: preprocess mean", pre["mean"])
    return mean, checked_float(f"{header.path}: preprocess std", pre["std"], 0.0, above=True)


def scheme_of(header: WeightsHeader) -> str:
    scheme = header.metadata.get("scheme", "fp32")
    if not isinstance(scheme, str) or scheme not in schemes.SCHEMES:
        raise EdgeViTError(f"{header.path}: unknown weights scheme {scheme!r}")
    return scheme


def temperature_of(header: WeightsHeader) -> float:
    """The calibration temperature in a file's metadata (probabilities are softmax(logits / T)); 1.0
    for a file without one."""
    fitted = header.metadata.get("temperature")
    if fitted is None:
        return 1.0
    t = fitted.get("value") if isinstance(fitted, dict) else None
    if not is_finite(t) or t <= 0:
        raise EdgeViTError(f"{header.path}: calibration temperature {t!r} is not a positive number")
    return float(t)


def reject_of(header: WeightsHeader, config: ViTConfig) -> Reject:
    """How the file's model says "not a digit" (edgevit.answer); a file without a rule never says it."""
    try:
        return Reject.from_metadata(header.metadata.get("reject"), config.num_classes)
    except ValueError as e:
        raise EdgeViTError(f"{header.path}: {e}") from None


@dataclass(frozen=True)
class ModelFile:
    """A weights file of any scheme, read and checked once: everything a runtime, the export,
    evaluation, the demo or quantization needs to know about it, and `build()` for its model."""

    file: WeightsFile
    config: ViTConfig
    scheme: str
    mean: float
    std: float
    temperature: float
    reject: Reject

    @classmethod
    def open(cls, path: str | os.PathLike, float_only: bool = False) -> ModelFile:
        """Read and check `path`; `float_only` refuses quantized files."""
        file = read_weights(path)
        header = file.header
        scheme = scheme_of(header)
        if float_only and scheme != "fp32":
            raise EdgeViTError(f"{header.path}: holds {scheme} weights; this tool needs float (fp32) weights")
        config = config_of(header)
        check_tensors(header, schemes.parameter_specs(config, scheme))
        mean, std = preprocess_of(header)
        check_finite(file, list(header.model_tensors))
        return cls(file, config, scheme, mean, std, temperature_of(header), reject_of(header, config))

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def header(self) -> WeightsHeader:
        return self.file.header

    @property
    def sha256(self) -> str:
        return self.file.sha256

    @property
    def metadata(self) -> dict[str, Any]:
        return self.file.header.metadata

    def build(self) -> ViT:
        """The model, its `scheme` weights loaded onto the default device from the bytes that were checked."""
        internals.ensure_private_compile_cache()  # before anything compiles: see internals
        model = schemes.build_vit(self.config, self.scheme)
        load_state_dict(model, self.file.tensors(), verbose=False)
        return model


def model_file(weights: str | os.PathLike | ModelFile, float_only: bool = False) -> ModelFile:
    """`weights` as a ModelFile: opened if it is a path."""
    if isinstance(weights, ModelFile):
        if float_only and weights.scheme != "fp32":
            raise EdgeViTError(f"{weights.path}: holds {weights.scheme} weights; this tool needs float (fp32) weights")
        return weights
    return ModelFile.open(weights, float_only)
