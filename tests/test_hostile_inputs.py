"""Hostile weights, datasets and images: each refused in one line naming the problem, before any big
allocation, and never answered with NaN."""

import gzip
import io
import json
import struct
import tracemalloc
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes, write_dataset
from PIL import Image

from edgevit import preprocess, weights
from edgevit.data import load_dataset, parse_idx, read_idx
from edgevit.errors import EdgeViTError
from edgevit.evaluation import evaluate
from edgevit.model import ViTConfig


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def rewritten(source: Path, target: Path, edit=None, data: bytes | None = None, **metadata) -> Path:
    """`source` with its header edited (`edit(header)`, metadata values JSON-encoded) and maybe new data."""
    header, old = split(source)
    for key, value in metadata.items():
        header["__metadata__"][key] = json.dumps(value)
    if edit is not None:
        edit(header)
    raw = json.dumps(header).encode()
    target.write_bytes(struct.pack("<Q", len(raw)) + raw + (old if data is None else data))
    return target


def refused(path: Path, needle: str) -> str:
    with pytest.raises(EdgeViTError) as e:
        weights.ModelFile.open(path)
    assert needle in str(e.value) and str(e.value).startswith(str(path)), str(e.value)
    return str(e.value)


def config_of(path: Path) -> dict:
    return json.loads(split(path)[0]["__metadata__"]["config"])


def test_config_sizes_are_checked_before_anything_is_built(tiny_weights, tmp_path):
    config = config_of(tiny_weights)
    refused(
        rewritten(tiny_weights, tmp_path / "deep.safetensors", config=config | {"depth": 10**9}), "depth 1000000000 is over 64"
    )
    refused(
        rewritten(tiny_weights, tmp_path / "float.safetensors", config=config | {"depth": 2.0}),
        "depth 2.0 is not a whole number",
    )
    refused(
        rewritten(tiny_weights, tmp_path / "bool.safetensors", config=config | {"heads": True}), "heads True is not a whole"
    )
    refused(rewritten(tiny_weights, tmp_path / "zero.safetensors", config=config | {"patch_size": 0}), "sizes must be positive")
    refused(rewritten(tiny_weights, tmp_path / "list.safetensors", config=[1, 2]), "no usable model config")
    refused(rewritten(tiny_weights, tmp_path / "nan.safetensors", config=config | {"dropout": float("nan")}), "dropout nan")
    with pytest.raises(ValueError, match="mlp_dim 100000 is over 16384"):
        ViTConfig(mlp_dim=100_000)


def test_metadata_of_the_wrong_type_is_one_line(tiny_weights, tmp_path):
    def metadata_list(h):
        h["__metadata__"] = [1, 2]

    refused(rewritten(tiny_weights, tmp_path / "a.safetensors", metadata_list), "__metadata__ is not an object of strings")
    refused(rewritten(tiny_weights, tmp_path / "b.safetensors", preprocess="x"), "no preprocessing constants")
    refused(
        rewritten(tiny_weights, tmp_path / "c.safetensors", preprocess={"mean": 0.1, "std": 0}),
        "std must be a finite number above 0",
    )
    refused(rewritten(tiny_weights, tmp_path / "d.safetensors", preprocess={"mean": "x", "std": 1}), "mean must be a finite")
    refused(rewritten(tiny_weights, tmp_path / "e.safetensors", scheme=["int8"]), "unknown weights scheme")
    refused(rewritten(tiny_weights, tmp_path / "f.safetensors", temperature={"value": float("inf")}), "temperature inf")

    def bad_shape(h):
        h["embed.cls_token"]["shape"] = [1, 1, 16.0]

    refused(rewritten(tiny_weights, tmp_path / "g.safetensors", bad_shape), "not up to 8 whole numbers")


def test_overlapping_tensors_are_refused_even_when_the_length_adds_up(tiny_weights, tmp_path):
    header, _ = split(tiny_weights)
    tensors = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    victim = tensors[-2]  # not the last: the data still ends where the file does
    size = header[victim]["data_offsets"][1] - header[victim]["data_offsets"][0]

    def alias(h):
        h[victim]["data_offsets"] = [0, size]  # reads the first tensors' bytes; its own are left unused

    refused(rewritten(tiny_weights, tmp_path / "alias.safetensors", alias), "tensors overlap or leave a gap")


def test_non_finite_weights_are_refused(tiny_weights, tmp_path):
    header, data = split(tiny_weights)
    start, stop = header["head.bias"]["data_offsets"]
    poisoned = bytearray(data)
    poisoned[start:stop] = np.full((stop - start) // 4, np.inf, np.float32).tobytes()
    message = refused(rewritten(tiny_weights, tmp_path / "inf.safetensors", data=bytes(poisoned)), "hold NaN or infinity")
    assert message.endswith("head.bias")


def test_save_writes_what_tinygrad_writes_without_mmap(tmp_path):
    from tinygrad import Tensor
    from tinygrad.nn.state import safe_save

    tensors = {"a": Tensor(np.arange(6, dtype=np.float32).reshape(2, 3)), "b": Tensor(np.array([1, -2], np.int8))}
    weights.save(tmp_path / "ours.safetensors", tensors, {"config": asdict(ViTConfig())})
    safe_save(tensors, str(tmp_path / "tinygrad.safetensors"), weights.encode_metadata({"config": asdict(ViTConfig())}))
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "tinygrad.safetensors").read_bytes()


def test_metadata_value_names_a_missing_or_mistyped_key(tiny_weights):
    header = weights.read_header(tiny_weights)
    assert weights.metadata_value(header, "config", "depth", kind=int) == 2
    assert weights.metadata_value(header, "preprocess", "std", kind=float) == pytest.approx(0.3081)
    with pytest.raises(EdgeViTError, match="no train_state in its metadata"):
        weights.metadata_value(header, "train_state", "step", kind=int)
    with pytest.raises(EdgeViTError, match=r"metadata config\.dim is not a list"):
        weights.metadata_value(header, "config", "dim", kind=list)


# --- data -------------------------------------------------------------------------------------------
def test_idx_dimensions_are_checked_before_anything_is_read(tmp_path):
    with pytest.raises(EdgeViTError, match="declare over 1024 MiB"):
        parse_idx(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1), "huge")
    with pytest.raises(EdgeViTError, match="IDX file with 70 dimensions"):
        parse_idx(bytes([0, 0, 8, 70]) + bytes(280), "deep")
    with pytest.raises(EdgeViTError, match="IDX file with 0 dimensions"):
        parse_idx(bytes([0, 0, 8, 0]), "flat")
    # a gzip bomb: 10 labels declared, 64 MiB of zeros behind them; at most one byte more is inflated
    stream = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [stream.compress(idx_bytes(np.zeros(10, np.uint8)))]
    parts += [stream.compress(bytes(2**20)) for _ in range(64)]
    (tmp_path / "bomb.gz").write_bytes(b"".join([*parts, stream.flush()]))
    tracemalloc.start()
    with pytest.raises(EdgeViTError, match="oversized IDX file"):
        read_idx(tmp_path / "bomb.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20


def test_manifests_name_only_files_beside_them_and_are_text(tmp_path):
    write_dataset(tmp_path, n_train=8, n_test=4)
    (tmp_path / "SHA256SUMS").write_bytes(b"0" * 64 + b"  /etc/hostname\n")
    with pytest.raises(EdgeViTError, match=r"line 1 names '/etc/hostname', not a file in"):
        load_dataset(tmp_path)
    (tmp_path / "SHA256SUMS").write_bytes(b"0" * 64 + b"  ../outside\n")
    with pytest.raises(EdgeViTError, match="not a file in"):
        load_dataset(tmp_path)
    (tmp_path / "SHA256SUMS").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(EdgeViTError, match="not a text file of sha256 sums"):
        load_dataset(tmp_path)
    (tmp_path / "SHA256SUMS").write_text("abc  train-images-idx3-ubyte.gz\n")
    with pytest.raises(EdgeViTError, match=r"line 1 is not '<sha256>  <file name>'"):
        load_dataset(tmp_path)


def test_empty_images_and_other_sizes_are_refused_before_evaluating(tiny_weights, tmp_path):
    for name, size in (("empty", 0), ("big", 32)):
        rng = np.random.default_rng(0)
        for split_name, n in (("train", 8), ("t10k", 4)):
            images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / f"{split_name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
            (tmp_path / name / f"{split_name}-labels-idx1-ubyte.gz").write_bytes(
                gzip.compress(idx_bytes(np.zeros(n, np.uint8)))
            )
    with pytest.raises(EdgeViTError, match="images of 0x0 pixels hold nothing"):
        evaluate(tiny_weights, tmp_path / "empty")
    with pytest.raises(EdgeViTError, match="test images are 32x32 pixels, the model takes 28x28"):
        evaluate(tiny_weights, tmp_path / "big")
    with pytest.raises(EdgeViTError, match="--limit must be 0"):
        evaluate(tiny_weights, tmp_path / "big", limit=-1)


# --- images -----------------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height grey pixels but holds only a few rows (a decompression bomb
    in miniature: its header is all that is read before it is refused)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_images_over_the_pixel_or_byte_limit_are_refused_before_decoding():
    with pytest.raises(EdgeViTError, match=r"big\.png: image too large \(over 50,000,000 pixels\)"):
        preprocess.decode(png_header_only(20_000, 20_000), "big.png")
    with pytest.raises(EdgeViTError, match="image too large"):
        preprocess.decode(png_header_only(200_000, 1000), "wide.png")  # past Pillow's own warning threshold too
    with pytest.raises(EdgeViTError, match="over 64 MiB, the most an image may be"):
        preprocess.decode(b"\0" * (preprocess.MAX_IMAGE_BYTES + 1), "huge")


def test_float_images_with_nan_are_damaged_not_classified():
    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), np.nan, np.float32), "F").save(buf, "TIFF")
    with pytest.raises(EdgeViTError, match="not finite numbers"):
        preprocess.preprocess(buf.getvalue(), "nan.tif")
