"""The banks of extra images a run mixes into its batches: read from IDX files (tools/banks.py's
non-digits and presented digits), or made when the run starts (damaged digits and non-digits,
edgevit.robustness), the same for the same settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgevit.answer import DIGITS
from edgevit.data import Dataset, Split, read_idx, verify_manifest
from edgevit.errors import EdgeViTError
from edgevit.resources import bundled_banks
from edgevit.robustness import degraded_bank
from edgevit.training.batches import Bank, splits, steps_per_epoch
from edgevit.training.calibrate import BANK_WORKERS
from edgevit.training.settings import TrainSettings

GENERATED = "generated"  # how a checkpoint names a bank made when the run starts, not read from a file
NEGATIVES_BANK_SEED = 7  # added to the run's seed for the damaged non-digits


def load_bank(directory: Path, name: str) -> Bank:
    """One bank of extra training images from `directory`: train-NAME-images-idx3-ubyte.gz, and for
    digits their labels in train-NAME-labels-idx1-ubyte.gz."""
    verify_manifest(directory)
    images_path = directory / f"train-{name}-images-idx3-ubyte.gz"
    images = read_idx(images_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise EdgeViTError(f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    labels_path = directory / f"train-{name}-labels-idx1-ubyte.gz"
    labels = read_idx(labels_path) if name == "positives" else None
    if labels is not None and (labels.shape != images.shape[:1] or labels.max(initial=0) >= DIGITS):
        raise EdgeViTError(f"{labels_path}: expected {len(images)} digit labels, got {labels.dtype} {labels.shape}")
    return Bank(images, images_path, labels)


def degraded(train: Split, negatives: Bank | None, settings: TrainSettings) -> Bank:
    """`settings.degraded_images` damaged training digits and `degraded_negatives` damaged non-digits."""
    n, m = settings.degraded_images, settings.degraded_negatives
    images, labels, _ = degraded_bank(train, n, settings.seed, BANK_WORKERS)
    if m and negatives is not None:
        others = Split(negatives.images, np.full(len(negatives.images), DIGITS, np.int64))
        more, more_labels, _ = degraded_bank(others, m, settings.seed + NEGATIVES_BANK_SEED, BANK_WORKERS)
        images, labels = np.concatenate([images, more]), np.concatenate([labels, more_labels])
    return Bank(images, Path(f"{GENERATED}: {n} digits, {m} non-digits, seed {settings.seed}"), labels)


def banks_for(settings: TrainSettings, data: Dataset, directory: str | Path | None = None, saved: dict | None = None):
    """The banks `settings` mix into batches: read from `directory` (default: where a resumed run's
    `saved` banks came from, else the bundled ones), and the damaged ones made from `data`'s training
    split (a minute or two)."""
    steps_per_epoch(len(splits(data, settings)[0]), settings)  # a data set too small fails now, not after the banks
    files = {k: Path(v) for k, v in (saved or {}).items() if not v.startswith(GENERATED)}
    root = Path(directory) if directory else next(iter(files.values())).parent if files else bundled_banks()
    wanted = {"negatives": settings.negatives_per_batch, "positives": settings.positives_per_batch}
    banks = {name: load_bank(root, name) for name, per_batch in wanted.items() if per_batch}
    if (held := settings.validation_negatives) and "negatives" in banks:
        bank = banks["negatives"]
        if held >= len(bank.images):
            raise EdgeViTError(f"{bank.source}: --validation-negatives {held} would leave no non-digits to train on")
        banks["negatives"] = Bank(bank.images[:-held], bank.source)
        banks["validation_negatives"] = Bank(bank.images[-held:], bank.source)
    if settings.degraded_per_batch:
        banks["degraded"] = degraded(splits(data, settings)[0], banks.get("negatives"), settings)
    return banks
