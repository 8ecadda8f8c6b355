"""Write the banks of extra images that teach and test "not a digit", as IDX files (data/negatives/).

    python tools/banks.py data/negatives

- train-negatives: 20,000 non-digits of the train split (fonts DejaVu and GNU FreeFont), kinds drawn
  with negatives.TRAIN_MIX, through edgevit.preprocess, rounded to uint8;
- train-positives: 12,000 digits drawn the way the non-digits are (MNIST training digits 0..54,999
  and digits printed in the train-split fonts), uint8, with their labels;
- test-negatives: 3,000 non-digits of the test split (other fonts, seeds and drawing parameters),
  kinds in turn, kept float32 as preprocessing gives them, with each image's kind (negatives.KINDS).
Images that preprocessing refuses ("no digit found") are left out and counted on stdout. Then
SHA256SUMS. About 25 minutes on one core; needs fonts-dejavu-core fonts-dejavu-extra
fonts-freefont-ttf (train) and fonts-liberation fonts-urw-base35 (test).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
from negatives import KINDS, TRAIN_MIX, bank
from positives import bank as positives_bank

from edgevit.cli import run
from edgevit.weights import atomic_write

TRAIN_NEGATIVES, TRAIN_SEED = 20_000, 1
POSITIVES, POSITIVES_SEED = 12_000, 0
TEST_NEGATIVES, TEST_SEED = 3_000, 0
IDX_TYPES = {np.dtype(np.uint8): 0x08, np.dtype(np.float32): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as an IDX file: 0, 0, its type code, ndim, big-endian dims, big-endian data."""
    head = bytes([0, 0, IDX_TYPES[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(gzip.compress(idx_bytes(array), mtime=0)))


def to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="banks.py", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="directory for the IDX files (e.g. data/negatives)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = {}
    images, _, refused = bank("train", TRAIN_NEGATIVES, TRAIN_SEED, mix=TRAIN_MIX)
    print(f"train negatives: {len(images)}, refused by preprocessing {refused}")
    files["train-negatives-images-idx3-ubyte.gz"] = to_uint8(images)
    images, labels, refused = positives_bank(POSITIVES, POSITIVES_SEED)
    print(f"train positives: {len(images)}, refused by preprocessing {refused}")
    files["train-positives-images-idx3-ubyte.gz"] = to_uint8(images)
    files["train-positives-labels-idx1-ubyte.gz"] = labels.astype(np.uint8)
    images, kinds, refused = bank("test", TEST_NEGATIVES, TEST_SEED)
    print(f"test negatives: {len(images)}, refused by preprocessing {refused}")
    files["test-negatives-images-idx3-ubyte.gz"] = images.astype(np.float32)
    files["test-negatives-kinds-idx1-ubyte.gz"] = np.array([KINDS.index(k) for k in kinds], np.uint8)
    sums = []
    for name, array in files.items():
        write_idx(args.out / name, array)
        sums.append(f"{hashlib.sha256((args.out / name).read_bytes()).hexdigest()}  {name}")
    atomic_write(args.out / "SHA256SUMS", lambda tmp: tmp.write_text("\n".join(sums) + "\n"))
    return 0


if __name__ == "__main__":
    run("banks.py", main)
