"""Property tests of the three parsers that read files from anywhere: random and mutated inputs never
raise anything but EdgeViTError, and never allocate more than the stated bounds (measured with
tracemalloc, which sees Python's and numpy's allocations)."""

import gzip
import io
import json
import struct
import tempfile
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgevit import weights
from edgevit.data import IDX_DTYPES, MAX_IDX_BYTES, parse_idx, read_idx
from edgevit.errors import EdgeViTError
from edgevit.preprocess import preprocess

MIB = 2**20
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with some bytes changed, inserted, dropped or cut off, or plain random bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if action == "set":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        else:
            del data[at:]
    return bytes(data)


def peak_bytes(call) -> tuple[int, object]:
    """(peak traced allocation, the result or the EdgeViTError) of call(); anything else propagates."""
    tracemalloc.start()
    try:
        result = call()
    except EdgeViTError as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


# --- IDX --------------------------------------------------------------------------------------------
IDX_SEEDS = [
    idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)),
    idx_bytes(np.array([3, 1, 4, 1, 5], np.uint8)),
    idx_bytes(np.array([1, -2, 70000], np.int32), 0x0C),
    idx_bytes(np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3), 0x0D),
]


def declared_bytes(head: bytes) -> int:
    """What an IDX header says its data holds (0 when it is no valid header)."""
    if len(head) < 4 or head[2] not in IDX_DTYPES or len(head) < 4 + 4 * head[3]:
        return 0
    dims = struct.unpack(f">{head[3]}I", head[4 : 4 + 4 * head[3]])
    return min(int(np.prod(dims, dtype=object)) * np.dtype(IDX_DTYPES[head[2]]).itemsize, MAX_IDX_BYTES)


@SETTINGS
@given(mutated(IDX_SEEDS))
def test_idx_parser_raises_only_its_own_error_and_allocates_at_most_the_input(raw):
    peak, result = peak_bytes(lambda: parse_idx(raw, "x.idx"))
    # the array and its native-order copy are each at most the input's size
    assert peak <= 2 * len(raw) + MIB
    if isinstance(result, np.ndarray):
        assert result.nbytes <= len(raw)


def inflated_head(raw: bytes) -> bytes:
    """The first bytes the stream holds once decompressed, as far as they can be (a test's own view)."""
    if raw[:2] != b"\x1f\x8b":
        return raw[: 4 + 4 * 255]
    try:
        return zlib.decompressobj(31).decompress(raw, 4 + 4 * 255)
    except zlib.error:
        return b""


@SETTINGS
@given(mutated([gzip.compress(seed) for seed in IDX_SEEDS] + [gzip.compress(IDX_SEEDS[1] + bytes(8 * MIB))]))
def test_gzip_idx_files_inflate_no_further_than_their_header_declares(tmp_path, raw):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(raw)
    peak, _ = peak_bytes(lambda: read_idx(path))
    # what the header declares (read, then copied), one extra byte, and the decompressor's own buffers;
    # the last seed holds 8 MiB of zeros after its data, which must never be inflated
    assert peak <= 2 * declared_bytes(inflated_head(raw)) + 2 * MIB


# --- safetensors headers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def weights_seeds(tiny_weights) -> list[bytes]:
    raw = tiny_weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header_only = raw[: 8 + n] + raw[8 + n :][:64]  # a header whose data is cut short
    return [raw, header_only]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_weights_headers_raise_only_their_own_error_within_the_file_size(weights_seeds, data):
    raw = data.draw(mutated(weights_seeds))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        path.write_bytes(raw)
        peak, _ = peak_bytes(lambda: weights.ModelFile.open(path))
    assert peak <= 16 * len(raw) + MIB  # the header's JSON as Python objects, and one read of the data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_value_anywhere_in_the_header_is_checked(tiny_weights, data):
    """Every field of the header and of the metadata replaced by any JSON value: NaN, 2**70, a list..."""
    raw = tiny_weights.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = {k: json.loads(v) if k not in ("format", "format_version") else v for k, v in header["__metadata__"].items()}
    target = data.draw(st.sampled_from(["tensor", "metadata", "nested"]))
    if target == "tensor":
        name = data.draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        header[name][data.draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = data.draw(JSON)
    elif target == "metadata":
        meta[data.draw(st.sampled_from(sorted(meta)))] = data.draw(JSON)
    else:
        section = data.draw(st.sampled_from(["config", "preprocess"]))
        meta[section][data.draw(st.sampled_from(sorted(meta[section])))] = data.draw(JSON)
    header["__metadata__"] = {k: v if k in ("format", "format_version") else json.dumps(v) for k, v in meta.items()}
    text = json.dumps(header).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
        peak, _ = peak_bytes(lambda: weights.ModelFile.open(path))
    assert peak <= 16 * len(raw) + MIB


# --- images -------------------------------------------------------------------------------------------
def encoded(fmt: str, mode: str, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(0)
    pixels = np.zeros((size[1], size[0]), np.uint8)
    pixels[size[1] // 4 : 3 * size[1] // 4, size[0] // 2 - 2 : size[0] // 2 + 2] = 255  # a "1"
    img = Image.fromarray(np.clip(pixels + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


IMAGE_SEEDS = [
    encoded("PNG", "L", (40, 30)),
    encoded("PNG", "RGBA", (28, 28)),
    encoded("JPEG", "RGB", (64, 48)),
    encoded("GIF", "P", (32, 32)),
    encoded("BMP", "RGB", (20, 24)),
    encoded("TIFF", "I;16", (30, 30)),
    encoded("WEBP", "RGB", (32, 32)),
    encoded("PPM", "RGB", (28, 28)),
]


@SETTINGS
@given(mutated(IMAGE_SEEDS))
def test_the_image_reader_raises_only_its_own_error_and_stays_small(raw):
    peak, result = peak_bytes(lambda: preprocess(raw, "x"))
    if isinstance(result, np.ndarray):
        assert result.shape == (28, 28) and np.isfinite(result).all()
    # larger images are reduced to 512 pixels a side before any float work (MAX_WORK)
    assert peak <= 64 * MIB
