"""What a training run is asked to do: its settings, the named recipes, and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgevit.checks import checked_float, checked_int
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig

MAX_SEED = 2**32 - 1  # tinygrad keeps the seed in a uint32
# each bank of extra images: the setting that says how many join a batch, and the fourth seed word of
# the generator picking them
BANKS = {
    "positives": ("positives_per_batch", 2),
    "negatives": ("negatives_per_batch", 1),
    "degraded": ("degraded_per_batch", 3),
}
BANK_COUNTS = tuple(count for count, _ in BANKS.values())


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: bool = True
    seed: int = 0
    limit: int = 0  # train on the first N images only (0: all); for smoke runs and tests
    # the last N training images are held out, never trained on: the calibration temperature is fitted
    # on them (at most a tenth of a small training split)
    validation: int = 5000
    # the last N non-digits of the negatives bank are held out of training too: how many of them the
    # "not a digit" rule catches is recorded with it (the report's test non-digits stay unseen)
    validation_negatives: int = 0
    # images of non-digits in every batch, labelled with the model's extra "not a digit" class, and
    # of digits drawn the way the non-digits are (on paper, a canvas, a scan), so that looking like a
    # scan never means "not a digit"; the rest of the batch is training digits
    negatives_per_batch: int = 0
    positives_per_batch: int = 0
    # damaged digits in every batch (edgevit.robustness: noise, blur, lines, blots, outlines, ... through
    # preprocessing), from a bank of `degraded_images` made from the training split when the run starts,
    # together with `degraded_negatives` damaged non-digits: so "damaged" never means "not a digit"
    degraded_per_batch: int = 0
    degraded_images: int = 0
    degraded_negatives: int = 0
    # exponential moving average of the weights, updated after every step (0: off); the shipped
    # weights are the average, which generalises better than the last step's
    ema: float = 0.0

    def __post_init__(self):
        # values come from flags and from checkpoints anyone may edit: NaN, 5.0 or "3" must not train
        for name in ("epochs", "batch_size"):
            checked_int(flag(name), getattr(self, name), 1)
        for name in ("limit", "validation", "validation_negatives", *BANK_COUNTS, "degraded_images", "degraded_negatives"):
            checked_int(flag(name), getattr(self, name), 0)
        checked_int(flag("seed"), self.seed, 0, MAX_SEED)
        checked_float(flag("lr"), self.lr, 0.0, above=True)
        for name in ("min_lr", "weight_decay", "warmup_epochs"):
            checked_float(flag(name), getattr(self, name), 0.0)
        checked_float(flag("label_smoothing"), self.label_smoothing, 0.0, 1.0, below=True)
        checked_float(flag("ema"), self.ema, 0.0, 1.0, below=True)
        if not isinstance(self.augment, bool):
            raise EdgeViTError(f"augment must be true or false, not {self.augment!r}")
        if sum(getattr(self, f) for f in BANK_COUNTS) >= self.batch_size:
            raise EdgeViTError(f"negatives, positives and degraded per batch must leave digits in a batch of {self.batch_size}")
        if self.degraded_per_batch and not self.degraded_images:
            raise EdgeViTError("--degraded-per-batch needs a bank of them: --degraded-images N")
        if (self.degraded_negatives or self.validation_negatives) and not self.negatives_per_batch:
            raise EdgeViTError("--degraded-negatives and --validation-negatives need negatives: --negatives-per-batch K")


# named starting points for a run: (settings, model config) changed from their defaults; the flags of
# `python -m edgevit.train` change them further. "shipped" made weights/ (weights/README.md)
RECIPES = {
    "shipped": (
        {
            "epochs": 100,
            "batch_size": 224,
            "negatives_per_batch": 40,
            "positives_per_batch": 16,
            "degraded_per_batch": 56,
            "degraded_images": 60_000,
            "degraded_negatives": 20_000,
            "validation_negatives": 2_000,
            "ema": 0.999,
        },
        {"mlp_dim": 144},
    ),
    "quick": (
        {
            "epochs": 3,
            "batch_size": 224,
            "negatives_per_batch": 40,
            "positives_per_batch": 16,
            "degraded_per_batch": 56,
            "degraded_images": 6_000,
            "degraded_negatives": 2_000,
            "validation_negatives": 500,
            "ema": 0.99,
        },
        {"mlp_dim": 144},
    ),
}
# MNIST-format images only, ten classes, no extra banks: for other data sets (Fashion-MNIST, EMNIST)
RECIPES["plain"] = ({}, {})
DEFAULT_RECIPE = "shipped"


def recipe_settings(name: str) -> TrainSettings:
    return TrainSettings(**RECIPES[name][0])


def recipe_config(name: str) -> ViTConfig:
    return ViTConfig(**RECIPES[name][1])


def flag(name: str) -> str:
    """The command-line flag of a setting, as errors name it: warmup_epochs -> --warmup-epochs."""
    return "--" + name.replace("_", "-")


def lr_at(step: int, total: int, warmup: int, peak: float, floor: float) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `floor` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
