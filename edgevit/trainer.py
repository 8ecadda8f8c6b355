"""Training the ViT: AdamW, warm-up then cosine decay, label smoothing, host-side augmentation.

The run is a pure function of (config, settings, seed, data, backend): batch order and augmentation
come from generators seeded by (seed, epoch, step), so a resumed run (edgevit.checkpoint) replays
exactly what an uninterrupted one would have done. `python -m edgevit.train` is the command line.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tinygrad import Context, Device, Tensor, nn
from tinygrad.nn.state import get_state_dict

from edgevit import internals
from edgevit.answer import DIGITS, Reject, fit_threshold
from edgevit.calibration import fit_temperature, nll, softmax
from edgevit.checks import checked_float, checked_int
from edgevit.data import Dataset, Split, augment, normalize, pixel_stats, training_batch
from edgevit.errors import EdgeViTError
from edgevit.graph import BatchedForward
from edgevit.model import ViT, ViTConfig
from edgevit.robustness import degraded_bank
from edgevit.step import CompiledStep
from edgevit.weights import OPTIMIZER_PREFIX

EVAL_BATCH = 500
MAX_SEED = 2**32 - 1  # tinygrad keeps the seed in a uint32
VALIDATION_SHARE = 10  # a small training split gives at most a tenth of its images to validation
# the reject threshold may turn away this share of the held-out digits (the target on test is 0.3%)
MAX_FALSE_REJECTION = 0.001
MAX_DEGRADED_FALSE_REJECTION = 0.01  # and at most this share of damaged copies of them
VALIDATION_BANK_SEED = 1_000_003  # the damaged validation digits' seed, apart from the training bank's
BANK_WORKERS = 2  # processes making damaged images
# each bank of extra images: the setting that says how many join a batch, and the fourth seed word of
# the generator picking them
BANKS = {
    "positives": ("positives_per_batch", 2),
    "negatives": ("negatives_per_batch", 1),
    "degraded": ("degraded_per_batch", 3),
}
BANK_COUNTS = tuple(count for count, _ in BANKS.values())
CHECK_SLICE = 1000  # a fixed test slice whose accuracy is recorded, so a file can be checked quickly later
SPEED_SMOOTHING = 0.9  # EMA weight for the images/s figure shown while training
# LayerNorm scales, biases, the class token and position embeddings are not weights to shrink
NO_DECAY_SUFFIXES = (".bias", "cls_token", "pos_embedding")
NO_DECAY_PARTS = ("ln1.", "ln2.", "norm.")


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
        for name in ("limit", "validation", *BANK_COUNTS, "degraded_images", "degraded_negatives"):
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
        if self.degraded_negatives and not self.negatives_per_batch:
            raise EdgeViTError("--degraded-negatives needs negatives to damage: --negatives-per-batch K")


# named starting points for a run: (settings, model config) changed from their defaults; the flags of
# `python -m edgevit.train` change them further. "shipped" made weights/ (weights/README.md)
RECIPES = {
    "shipped": (
        {
            "epochs": 100,
            "batch_size": 192,
            "negatives_per_batch": 16,
            "positives_per_batch": 16,
            "degraded_per_batch": 48,
            "degraded_images": 60_000,
            "degraded_negatives": 10_000,
            "ema": 0.999,
        },
        {"mlp_dim": 144},
    ),
    "quick": (
        {
            "epochs": 3,
            "batch_size": 192,
            "negatives_per_batch": 16,
            "positives_per_batch": 16,
            "degraded_per_batch": 48,
            "degraded_images": 6_000,
            "degraded_negatives": 1_000,
            "ema": 0.99,
        },
        {"mlp_dim": 144},
    ),
}
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


@dataclass(frozen=True)
class StepReport:
    epoch: int  # 1-based
    step: int  # optimizer steps done in this epoch
    steps_per_epoch: int
    step_loss: float  # this step's loss
    loss: float  # mean over the epoch so far
    accuracy: float  # running training accuracy over the epoch so far
    images_per_s: float
    eta_s: float  # to the end of training


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    epochs: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    images_per_s: float  # training steps only, compile included: what the epoch really cost


@dataclass(frozen=True)
class Bank:
    """Extra training images (uint8 (M, H, W), already brought to MNIST's convention), their labels
    (None: non-digits, the class DIGITS) and the file they came from."""

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


class Trainer:
    """A training run. `negatives` and `positives` (Banks) are needed when the settings mix them into
    batches; negatives are labelled with class DIGITS, which the model must have then."""

    def __init__(
        self,
        config: ViTConfig,
        settings: TrainSettings,
        data: Dataset,
        negatives: Bank | None = None,
        positives: Bank | None = None,
        degraded: Bank | None = None,
    ):
        self.config, self.settings, self.data = config, settings, data
        self.banks = {"negatives": negatives, "positives": positives, "degraded": degraded}
        if data.train.images.shape[1:] != (config.image_size, config.image_size):
            raise EdgeViTError(
                f"{data.source}: images are {data.train.images.shape[1:]}, the model expects {config.image_size}"
            )
        for name, (count, _) in BANKS.items():
            bank = self.banks[name]
            if getattr(settings, count) and (
                bank is None or not len(bank.images) or bank.images.shape[1:] != data.train.images.shape[1:]
            ):
                raise EdgeViTError(f"training with {name} needs a bank of images the size of the digits")
        if settings.negatives_per_batch and config.num_classes != DIGITS + 1:
            raise EdgeViTError(f"training with negatives needs {DIGITS + 1} classes (the last: not a digit)")
        self.mean, self.std = pixel_stats(self.train_split.images)
        Tensor.manual_seed(settings.seed)
        self.model = ViT(config)
        self.params = get_state_dict(self.model)
        decay = [k for k in self.params if not (k.endswith(NO_DECAY_SUFFIXES) or any(p in k for p in NO_DECAY_PARTS))]
        self.groups = {
            "decay": (
                decay,
                nn.optim.AdamW(
                    [self.params[k] for k in decay], lr=settings.lr, weight_decay=settings.weight_decay, fused=False
                ),
            ),
            "no_decay": (
                keep := [k for k in self.params if k not in decay],
                nn.optim.AdamW([self.params[k] for k in keep], lr=settings.lr, weight_decay=0.0, fused=False),
            ),
        }
        self.optimizer = nn.optim.OptimizerGroup(*(opt for _, opt in self.groups.values()))
        self.step = 0  # optimizer steps done since the start of the run
        self.history: list[dict] = []  # one entry per finished epoch
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0}  # of the epoch in progress
        self.train_seconds = 0.0
        self.compiled = CompiledStep(self._train_fn, self.updated_state)
        # the averaged weights live in a second model of the same shape, which is what is evaluated
        self.ema_model = None
        if settings.ema:
            self.ema_model = ViT(config)
            for name, t in get_state_dict(self.ema_model).items():
                t.assign(self.params[name].detach()).realize()
        self.forward = BatchedForward(self.ema_model or self.model, self.mean, self.std, EVAL_BATCH)

    # --- sizes --------------------------------------------------------------------------------
    @property
    def train_split(self) -> Split:
        return splits(self.data, self.settings)[0]

    @property
    def validation_split(self) -> Split:
        return splits(self.data, self.settings)[1]

    @property
    def train_images(self) -> np.ndarray:
        return self.train_split.images

    @property
    def digits_per_batch(self) -> int:
        return self.settings.batch_size - sum(getattr(self.settings, count) for count in BANK_COUNTS)

    @property
    def steps_per_epoch(self) -> int:
        steps = len(self.train_images) // self.digits_per_batch
        if steps == 0:
            raise EdgeViTError(f"batch size {self.settings.batch_size} exceeds the {len(self.train_images)} training images")
        return steps

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.settings.epochs

    def lr(self, step: int) -> float:
        s = self.settings
        return lr_at(step, self.total_steps, round(s.warmup_epochs * self.steps_per_epoch), s.lr, s.min_lr)

    # --- one step -----------------------------------------------------------------------------
    def _train_fn(self, x: Tensor, y: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
        with Context(TRAINING=1):
            for _, opt in self.groups.values():
                opt.lr.assign(lr)
            self.optimizer.zero_grad()
            logits = self.model(x)
            loss = logits.sparse_categorical_crossentropy(y, label_smoothing=self.settings.label_smoothing).backward()
            correct = (logits.argmax(-1) == y).sum()
            Tensor.realize(loss, correct, *self.optimizer.schedule_step())
            if self.ema_model is not None:
                d = self.settings.ema
                averaged = get_state_dict(self.ema_model)
                Tensor.realize(*(averaged[k].assign(averaged[k] * d + w.detach() * (1 - d)) for k, w in self.params.items()))
        return loss, correct

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Host batch `index` of `epoch` (0-based): normalised float32 images and int32 labels."""
        s = self.settings
        settings = {"batch_size": self.digits_per_batch, "seed": s.seed, "do_augment": s.augment}
        xs, ys = [*training_batch(self.train_split, epoch, index, **settings, mean=self.mean, std=self.std)]
        for name, (count, stream) in BANKS.items():
            per_batch = getattr(s, count)
            if not per_batch:
                continue
            # drawn from their own stream, seeded like the digits': a resumed run draws the same ones
            bank, rng = self.banks[name], np.random.default_rng([s.seed, epoch, index, stream])
            picked = rng.integers(0, len(bank.images), per_batch)
            images = augment(bank.images[picked], rng) if s.augment else bank.images[picked]
            labels = np.full(per_batch, DIGITS) if bank.labels is None else bank.labels[picked]
            xs, ys = np.concatenate([xs, normalize(images, self.mean, self.std)]), np.concatenate([ys, labels.astype(np.int32)])
        return xs, ys

    @property
    def beam(self) -> int:
        """BEAM width for compiling the step: kernel shapes searched by timing them (once; tinygrad
        caches the result). Measured on a 2-core CPU: 507 -> 1,029 img/s for an 11-minute first compile."""
        return self.compiled.beam

    @beam.setter
    def beam(self, width: int) -> None:
        self.compiled.beam = width

    @property
    def compiling(self) -> bool:
        """Whether the next step still compiles the training graph rather than replaying it."""
        return self.compiled.compiling

    def optimizer_state(self) -> dict[str, Tensor]:
        """The optimizer's tensors under their checkpoint names (with the weights' moving average: it
        is as much training state as the moments are)."""
        state = {}
        if self.ema_model is not None:
            state |= {f"{OPTIMIZER_PREFIX}ema.{k}": t for k, t in get_state_dict(self.ema_model).items()}
        for group, (names, opt) in self.groups.items():
            prefix = f"{OPTIMIZER_PREFIX}{group}."
            state |= {prefix + "b1_t": opt.b1_t, prefix + "b2_t": opt.b2_t}
            state |= {f"{prefix}m.{n}": m for n, m in zip(names, opt.m)}
            state |= {f"{prefix}v.{n}": v for n, v in zip(names, opt.v)}
        return state

    @property
    def shipped_weights(self) -> dict[str, Tensor]:
        """What a weights file holds: the moving average when there is one, else the weights."""
        return get_state_dict(self.ema_model) if self.ema_model is not None else dict(self.params)

    def updated_state(self) -> list[Tensor]:
        """Every tensor a training step writes that outlives it: weights, optimizer, random stream."""
        return [*self.params.values(), *self.optimizer_state().values(), *internals.random_state()]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        loss, correct = self.compiled(x, y, self.lr(self.step))
        self.step += 1
        return loss, correct

    # --- the loop -----------------------------------------------------------------------------
    def test_accuracy(self) -> tuple[float, np.ndarray]:
        """Of the best digit (a model with a "not a digit" class is scored on the digits it gives)."""
        predictions = self.forward(self.data.test.images)[:, :DIGITS].argmax(-1)
        return float((predictions == self.data.test.labels).mean()), predictions

    def run(self, stop: Callable[[], bool] = lambda: False) -> Iterator[StepReport | EpochReport]:
        """Train to the last epoch, yielding progress; returns early (between steps) when stop() says so."""
        spe, bs = self.steps_per_epoch, self.settings.batch_size
        step_time = None
        while len(self.history) < self.settings.epochs:
            # an epoch whose steps are all done but whose evaluation is not has start == spe
            epoch = len(self.history)
            start = self.step - epoch * spe
            if start == 0:
                self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0}
            sums, busy, epoch_start = self.epoch_sums, 0.0, time.perf_counter()
            for index in range(start, spe):
                t0 = time.perf_counter()
                x, y = self.batch(epoch, index)
                compiling = self.compiling
                loss, ok = self.train_step(x, y)
                dt = time.perf_counter() - t0
                self.train_seconds, busy = self.train_seconds + dt, busy + dt
                if not compiling:
                    step_time = dt if step_time is None else SPEED_SMOOTHING * step_time + (1 - SPEED_SMOOTHING) * dt
                sums["loss"], sums["correct"], sums["seen"] = (
                    sums["loss"] + loss * len(y),
                    sums["correct"] + ok,
                    sums["seen"] + len(y),
                )
                ips = bs / step_time if step_time else 0.0
                eta = (self.total_steps - self.step) * step_time if step_time else float("nan")
                yield StepReport(
                    epoch + 1, index + 1, spe, loss, sums["loss"] / sums["seen"], sums["correct"] / sums["seen"], ips, eta
                )
                if stop():
                    return
            accuracy, predictions = self.test_accuracy()
            head = slice(0, CHECK_SLICE)
            train_loss, train_accuracy = sums["loss"] / sums["seen"], sums["correct"] / sums["seen"]
            self.history.append(
                {
                    "epoch": epoch + 1,
                    "train_loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "test_accuracy": accuracy,
                    f"test_accuracy_first_{CHECK_SLICE}": float((predictions[head] == self.data.test.labels[head]).mean()),
                }
            )
            seconds = time.perf_counter() - epoch_start
            ips = (spe - start) * bs / busy if busy else 0.0
            yield EpochReport(epoch + 1, self.settings.epochs, train_loss, train_accuracy, accuracy, seconds, ips)

    def calibration(self) -> dict:
        """Metadata fitted on the validation split: the temperature that calibrates the probabilities
        and, for a model with a "not a digit" class, the reject rule's confidence threshold (the
        highest that turns away at most MAX_FALSE_REJECTION of these held-out digits). Empty
        without a validation split."""
        val = self.validation_split
        if not len(val):
            return {}
        logits = self.forward(val.images)
        t = fit_temperature(logits, val.labels)
        before, after = nll(logits, val.labels, 1.0), nll(logits, val.labels, t)
        out = {
            "temperature": {
                "value": t,
                "validation_images": len(val),
                "validation_nll": before,
                "validation_nll_calibrated": after,
            }
        }
        if self.config.num_classes == DIGITS + 1:
            threshold = fit_threshold(softmax(logits, t), Reject(DIGITS), MAX_FALSE_REJECTION)
            out["reject"] = {"class": DIGITS, "threshold": threshold, "max_false_rejection": MAX_FALSE_REJECTION}
            if self.settings.degraded_per_batch:
                # damaged copies of the same held-out digits (the training generators; the report's are others)
                damaged, _, refused = degraded_bank(val, len(val), self.settings.seed + VALIDATION_BANK_SEED, BANK_WORKERS)
                fitted = fit_threshold(softmax(self.forward(damaged), t), Reject(DIGITS), MAX_DEGRADED_FALSE_REJECTION)
                out["reject"] |= {
                    "threshold": min(threshold, fitted),
                    "max_degraded_false_rejection": MAX_DEGRADED_FALSE_REJECTION,
                    "degraded_validation_images": len(damaged) + refused,
                }
        return out

    def metadata(self, **extra) -> dict:
        """What a weights file records about this run: config, normalisation, settings, metrics."""
        return {
            "config": dataclasses.asdict(self.config),
            "preprocess": {"mean": self.mean, "std": self.std, "image_size": self.config.image_size},
            "training": dataclasses.asdict(self.settings) | {"device": Device.DEFAULT, "tinygrad": version("tinygrad")},
            "metrics": {"epochs_done": len(self.history), "history": self.history, "train_seconds": self.train_seconds}
            | (self.history[-1] if self.history else {}),
        } | extra


TIMING_BATCH = 32
TIMING_IMAGES = 64


def time_training_step(device: str, config: ViTConfig | None = None) -> float:
    """Median ms of a compiled training step (batch TIMING_BATCH, the default-size model) on `device`:
    what choosing a backend for training compares. Random images: only the time matters."""
    internals.make_default(device)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (TIMING_IMAGES, 28, 28), dtype=np.uint8)
    split = Split(images, rng.integers(0, 10, TIMING_IMAGES))
    trainer = Trainer(config or ViTConfig(), TrainSettings(batch_size=TIMING_BATCH), Dataset(split, split, Path("timing")))
    x, y = trainer.batch(0, 0)
    times = []
    for _ in range(5):  # the first two compile; the rest are what a training step costs
        start = time.perf_counter()
        trainer.train_step(x, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]) * 1e3)
