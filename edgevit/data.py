"""MNIST-format datasets: a strict IDX reader, checksum verification, batching and augmentation.

Any directory holding the four IDX files (gzipped or not) works: MNIST, Fashion-MNIST, EMNIST digits.
When the directory has a SHA256SUMS manifest (the bundled copy does), every file it lists is verified.

Files are data from anywhere: an IDX header's dimensions are checked (at most MAX_IDX_NDIM of them,
at most MAX_IDX_BYTES of data) before the data is read or decompressed, so a small gzip file cannot
expand into gigabytes; a manifest may only name files in its own directory.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.errors import EdgeViTError
from edgevit.resources import bundled_banks, bundled_mnist

DATA_ENV = "EDGEVIT_DATA"
MANIFEST = "SHA256SUMS"
GZIP_MAGIC = b"\x1f\x8b"

# IDX type codes (third magic byte) and the big-endian numpy dtype each stores.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_NDIM, LABELS_NDIM = 3, 1
IDX_PREFIX = 4  # two zero bytes, the type code, the number of dimensions; then 4 bytes per dimension
MAX_IDX_NDIM = 8
MAX_IDX_BYTES = 2**30  # EMNIST's largest split (ByClass, training) holds 547 MB
MAX_MANIFEST_BYTES = 2**16
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
HASH_CHUNK = 1 << 20
READ_CHUNK = 1 << 20  # IDX data is read in pieces: a read of n bytes allocates n up front, even from a short file

# Augmentation: a small random affine, the range handwriting varies within.
MAX_ROTATE_DEG = 10.0
MAX_SHIFT_PX = 2.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHEAR_DEG = 5.0

TEST_NEGATIVES = "test-negatives"  # the held-out bank of non-digits, never trained or tuned on
NEGATIVE_KINDS = ("font", "handwritten", "scribble", "noise", "texture", "shape")  # what tools/negatives.py draws


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W) uint8, white ink on black
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: Path

    def pixel_stats(self) -> tuple[float, float]:
        """Of the whole training split (a trainer holding images out computes its own)."""
        return pixel_stats(self.train.images)


def pixel_stats(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixels on [0, 1]: the normalisation a model is trained with."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def idx_layout(head: bytes, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and dimensions an IDX header declares; `head` holds the header (and maybe more).
    The dimensions are checked before anything is allocated for them."""
    if len(head) < IDX_PREFIX:
        raise EdgeViTError(f"{name}: truncated IDX file ({len(head)} bytes, the header alone needs {IDX_PREFIX})")
    if head[0:2] != b"\x00\x00" or head[2] not in IDX_DTYPES:
        raise EdgeViTError(f"{name}: not an IDX file (magic {head[:4].hex()}, expected 0000 then a type code)")
    dtype, ndim = np.dtype(IDX_DTYPES[head[2]]), head[3]
    if not 1 <= ndim <= MAX_IDX_NDIM:
        raise EdgeViTError(f"{name}: IDX file with {ndim} dimensions (1 to {MAX_IDX_NDIM} are accepted)")
    size = IDX_PREFIX + 4 * ndim
    if len(head) < size:
        raise EdgeViTError(f"{name}: truncated IDX header ({ndim} dimensions need {size} bytes, file has {len(head)})")
    dims = struct.unpack(f">{ndim}I", head[IDX_PREFIX:size])
    if math.prod(dims) * dtype.itemsize > MAX_IDX_BYTES:  # Python ints: no overflow, however large
        raise EdgeViTError(f"{name}: IDX dims {dims} declare over {MAX_IDX_BYTES // 2**20} MiB of data, the most accepted")
    return dtype, dims


def _idx_array(data: bytes | bytearray, dtype: np.dtype, dims: tuple[int, ...], name: str, header: int) -> np.ndarray:
    """The array from the data after an IDX header, which must hold exactly what `dims` declare."""
    expected = math.prod(dims) * dtype.itemsize
    if len(data) < expected:
        total = header + expected
        raise EdgeViTError(f"{name}: truncated IDX data (dims {dims} need {total} bytes, file has {header + len(data)})")
    if len(data) > expected:
        raise EdgeViTError(f"{name}: oversized IDX file (bytes after the data that dims {dims} declare)")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode one uncompressed IDX file; any deviation from the format is an error naming `name`."""
    dtype, dims = idx_layout(raw, name)
    header = IDX_PREFIX + 4 * len(dims)
    return _idx_array(raw[header:], dtype, dims, name, header)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, gunzipping it when it starts with the gzip magic (whatever its name). Only
    the header is read (and decompressed) before its dimensions are checked; then at most one byte
    more than they declare."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            stream = gzip.GzipFile(fileobj=f) if f.read(len(GZIP_MAGIC)) == GZIP_MAGIC else f
            f.seek(0)
            head = stream.read(IDX_PREFIX)
            if len(head) == IDX_PREFIX:
                head += stream.read(4 * head[3])
            dtype, dims = idx_layout(head, name)
            data = read_at_most(stream, math.prod(dims) * dtype.itemsize + 1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise EdgeViTError(f"{path}: corrupt gzip stream ({e})") from None
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot read ({e.strerror})") from None
    return _idx_array(data, dtype, dims, name, len(head))


def read_at_most(stream, limit: int) -> bytearray:
    """Up to `limit` bytes of `stream`, in pieces: memory grows with what the stream really holds,
    not with what its header claims."""
    data = bytearray()
    while len(data) < limit and (piece := stream.read(min(READ_CHUNK, limit - len(data)))):
        data += piece
    return data


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_manifest(directory: Path) -> None:
    """Check every file SHA256SUMS lists; a mismatch means the data is not what was shipped. The
    manifest is `sha256sum` output: a hex digest, two spaces (or space and `*`), a file name in this
    directory (a path elsewhere is refused: the manifest must not make EdgeViT read other files)."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return
    try:
        with open(manifest, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise EdgeViTError(f"{manifest}: over {MAX_MANIFEST_BYTES} bytes: not a list of four checksums")
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise EdgeViTError(f"{manifest}: not a text file of sha256 sums") from None
    except OSError as e:
        raise EdgeViTError(f"{manifest}: cannot read ({e.strerror})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        digest, fname = line[:64], line[66:]
        if not SHA256_HEX.fullmatch(digest) or line[64:66] not in ("  ", " *") or not fname:
            raise EdgeViTError(f"{manifest}: line {number} is not '<sha256>  <file name>'")
        if "/" in fname or "\\" in fname or fname in (".", ".."):
            raise EdgeViTError(f"{manifest}: line {number} names {fname!r}, not a file in {directory}")
        path = directory / fname
        if not path.is_file():
            raise EdgeViTError(f"{path}: listed in {manifest} but missing")
        try:
            actual = file_sha256(path)
        except OSError as e:
            raise EdgeViTError(f"{path}: cannot read ({e.strerror})") from None
        if actual != digest:
            raise EdgeViTError(f"{path}: sha256 {actual[:16]}... does not match {manifest} ({digest[:16]}...)")


def _find(directory: Path, splits: tuple[str, ...], kind: str, ndim: int) -> Path:
    # Official names (train-images-idx3-ubyte), the dotted variant (train-images.idx3-ubyte) and
    # EMNIST's prefixed ones (emnist-digits-train-images-idx3-ubyte), each optionally .gz.
    pattern = re.compile(rf"^(?:.*-)?(?:{'|'.join(splits)})-{kind}[.-]idx{ndim}-ubyte(?:\.gz)?$")
    try:
        found = sorted(p for p in directory.iterdir() if pattern.match(p.name))
    except OSError as e:
        raise EdgeViTError(f"{directory}: cannot list ({e.strerror})") from None
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} candidate"
        raise EdgeViTError(
            f"{directory}: {what} {splits[0]}-{kind}-idx{ndim}-ubyte[.gz] file"
            + (f" ({', '.join(p.name for p in found)})" if found else "")
        )
    return found[0]


def _load_split(directory: Path, splits: tuple[str, ...]) -> Split:
    images_path = _find(directory, splits, "images", IMAGES_NDIM)
    labels_path = _find(directory, splits, "labels", LABELS_NDIM)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != IMAGES_NDIM or images.dtype != np.uint8:
        raise EdgeViTError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != LABELS_NDIM or labels.dtype != np.uint8:
        raise EdgeViTError(f"{labels_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if 0 in images.shape[1:]:
        raise EdgeViTError(f"{images_path}: images of {images.shape[1]}x{images.shape[2]} pixels hold nothing")
    if len(images) != len(labels):
        raise EdgeViTError(f"{directory}: {len(images)} images but {len(labels)} labels in the {splits[0]} split")
    if images_path.name.startswith("emnist"):
        images = images.transpose(0, 2, 1)  # EMNIST stores each image transposed relative to MNIST
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def resolve_data_dir(directory: str | os.PathLike | None = None) -> Path:
    """--data beats $EDGEVIT_DATA beats the bundled MNIST."""
    chosen = Path(directory or os.environ.get(DATA_ENV) or bundled_mnist())
    if not chosen.is_dir():
        raise EdgeViTError(f"{chosen}: data directory not found")
    return chosen


def load_dataset(directory: str | os.PathLike | None = None, num_classes: int = 10) -> Dataset:
    path = resolve_data_dir(directory)
    verify_manifest(path)
    train, test = _load_split(path, ("train",)), _load_split(path, ("t10k", "test"))
    if train.images.shape[1:] != test.images.shape[1:]:
        raise EdgeViTError(f"{path}: train images are {train.images.shape[1:]} but test images {test.images.shape[1:]}")
    for name, split in (("train", train), ("test", test)):
        if len(split) and split.labels.max() >= num_classes:
            raise EdgeViTError(f"{path}: {name} label {split.labels.max()} is outside 0..{num_classes - 1}")
    return Dataset(train, test, path)


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 or float pixels on [0, 255] (N, H, W) -> float32 (N, 1, H, W) standardised."""
    x = images.astype(np.float32) * np.float32(1.0 / 255.0)
    return ((x - np.float32(mean)) / np.float32(std))[:, None]


def random_affines(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 2, 3) matrices mapping output pixel coordinates (relative to the centre) to input ones."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATE_DEG, MAX_ROTATE_DEG, n))
    shear = np.deg2rad(rng.uniform(-MAX_SHEAR_DEG, MAX_SHEAR_DEG, n))
    scale = rng.uniform(*SCALE_RANGE, n)
    shift = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, (n, 2))
    cos, sin, tan = np.cos(angle), np.sin(angle), np.tan(shear)
    # forward map = scale * rotate @ shear; sampling needs its inverse, applied about the centre
    fwd = np.stack([np.stack([cos, cos * tan - sin], -1), np.stack([sin, sin * tan + cos], -1)], 1) * scale[:, None, None]
    inv = np.linalg.inv(fwd)
    return np.concatenate([inv, -(inv @ shift[:, :, None])], axis=2)


def warp_affine(images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Bilinear-resample every image (N, H, W) through its (2, 3) inverse map; outside is black.

    Coordinates are (x, y) relative to the image centre, so matrices compose with rotations about it.
    """
    n, h, w = images.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    grid = np.stack([xs.ravel() - cx, ys.ravel() - cy, np.ones(h * w, np.float32)])  # (3, HW)
    src = matrices.astype(np.float32) @ grid  # (N, 2, HW)
    sx, sy = src[:, 0] + cx, src[:, 1] + cy
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    padded = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1)))  # a black border absorbs off-image taps
    flat = padded.reshape(n, -1)
    row = np.arange(n)[:, None]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = (yy >= -1) & (yy <= h) & (xx >= -1) & (xx <= w)
        idx = (np.clip(yy, -1, h) + 1) * (w + 2) + np.clip(xx, -1, w) + 1
        return np.where(inside, flat[row, idx], 0.0)

    out = (
        tap(y0, x0) * (1 - fx) * (1 - fy)
        + tap(y0, x0 + 1) * fx * (1 - fy)
        + tap(y0 + 1, x0) * (1 - fx) * fy
        + tap(y0 + 1, x0 + 1) * fx * fy
    )
    return out.reshape(n, h, w)


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random small affine per image, vectorised over the batch; float32 on [0, 255]."""
    return warp_affine(images, random_affines(rng, len(images)))


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def training_batch(
    split: Split, epoch: int, index: int, *, batch_size: int, seed: int, do_augment: bool, mean: float, std: float
) -> tuple[np.ndarray, np.ndarray]:
    """Batch `index` of `epoch` (0-based): normalised float32 images (B, 1, H, W) and int32 labels.

    A pure function of its arguments: order and augmentation come from generators seeded by (seed,
    epoch, step), so a resumed run, or another framework being benchmarked, sees the same batches.
    """
    idx = batch_order(seed, epoch, len(split.images))[index * batch_size : (index + 1) * batch_size]
    images = split.images[idx]
    if do_augment:
        images = augment(images, np.random.default_rng([seed, epoch, index]))
    return normalize(images, mean, std), split.labels[idx].astype(np.int32)


@dataclass(frozen=True)
class Negatives:
    """Held-out images that are no digit (data/negatives, from tools/banks.py), already preprocessed."""

    images: np.ndarray  # (N, H, W) float32 on [0, 255]
    kinds: np.ndarray  # (N,) indices into NEGATIVE_KINDS
    source: Path


def load_negatives(directory: str | os.PathLike | None = None) -> Negatives:
    """The test split of the non-digit bank in `directory` (default: the bundled data/negatives)."""
    root = Path(directory) if directory else bundled_banks()
    verify_manifest(root)
    images = read_idx(root / f"{TEST_NEGATIVES}-images-idx3-ubyte.gz")
    kinds = read_idx(root / f"{TEST_NEGATIVES}-kinds-idx1-ubyte.gz")
    if images.ndim != 3 or kinds.shape != images.shape[:1] or kinds.max(initial=0) >= len(NEGATIVE_KINDS):
        raise EdgeViTError(f"{root}: {TEST_NEGATIVES} images {images.shape} and kinds {kinds.shape} do not match")
    return Negatives(images.astype(np.float32), kinds.astype(np.int64), root)
