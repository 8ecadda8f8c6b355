"""What a training step sees: MNIST's digits, split into training and validation, and the banks of
extra images mixed into every batch (non-digits, presented digits, damaged digits).

Every batch is a pure function of (settings, epoch, step): order and augmentation come from
generators seeded by them, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.answer import DIGITS
from edgevit.data import Dataset, Split, augment, normalize, training_batch
from edgevit.errors import EdgeViTError
from edgevit.training.settings import BANK_COUNTS, BANKS, TrainSettings

VALIDATION_SHARE = 10  # a small training split gives at most a tenth of its images to validation


@dataclass(frozen=True)
class Bank:
    """Extra training images (uint8 (M, H, W), already brought to MNIST's convention), their labels
    (None: non-digits, the class DIGITS) and where they came from."""

    images: np.ndarray
    source: Path
    labels: np.ndarray | None = None


def splits(data: Dataset, settings: TrainSettings) -> tuple[Split, Split]:
    """The images a run trains on and the validation split: the last training images (at most a
    tenth of a small training split), never trained on."""
    train = data.train
    held_out = min(settings.validation, len(train) // VALIDATION_SHARE)
    end = len(train) - held_out
    stop = min(end, settings.limit or end)
    return Split(train.images[:stop], train.labels[:stop]), Split(train.images[end:], train.labels[end:])


def steps_per_epoch(train_images: int, settings: TrainSettings) -> int:
    """Every training digit once an epoch, `digits_per_batch` a step; refused when not even one step fits."""
    steps = train_images // (settings.batch_size - sum(getattr(settings, count) for count in BANK_COUNTS))
    if steps == 0:
        raise EdgeViTError(f"batch size {settings.batch_size} exceeds the {train_images} training images")
    return steps


class Batches:
    """The batches of a run: `digits_per_batch` training digits, then each bank's share."""

    def __init__(self, train: Split, banks: dict[str, Bank | None], settings: TrainSettings, mean: float, std: float):
        self.train, self.banks, self.settings, self.mean, self.std = train, banks, settings, mean, std
        for name, (count, _) in BANKS.items():
            bank = banks.get(name)
            if getattr(settings, count) and (
                bank is None or not len(bank.images) or bank.images.shape[1:] != train.images.shape[1:]
            ):
                raise EdgeViTError(f"training with {name} needs a bank of images the size of the digits")

    @property
    def digits_per_batch(self) -> int:
        return self.settings.batch_size - sum(getattr(self.settings, count) for count in BANK_COUNTS)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.train), self.settings)

    def __call__(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch `index` of `epoch` (0-based): normalised float32 images (B, 1, H, W) and int32 labels."""
        s = self.settings
        settings = {"batch_size": self.digits_per_batch, "seed": s.seed, "do_augment": s.augment}
        xs, ys = training_batch(self.train, epoch, index, **settings, mean=self.mean, std=self.std)
        for name, (count, stream) in BANKS.items():
            if not (per_batch := getattr(s, count)):
                continue
            # drawn from their own stream, seeded like the digits': a resumed run draws the same ones
            bank, rng = self.banks[name], np.random.default_rng([s.seed, epoch, index, stream])
            picked = rng.integers(0, len(bank.images), per_batch)
            images = augment(bank.images[picked], rng) if s.augment else bank.images[picked]
            labels = np.full(per_batch, DIGITS) if bank.labels is None else bank.labels[picked]
            xs, ys = np.concatenate([xs, normalize(images, self.mean, self.std)]), np.concatenate([ys, labels.astype(np.int32)])
        return xs, ys
