"""Training the ViT: AdamW, warm-up then cosine decay, label smoothing, host-side augmentation.

The run is a pure function of (config, settings, seed, data, backend): batch order and augmentation
come from generators seeded by (seed, epoch, step) (edgevit.training.batches), so a resumed run
(edgevit.training.checkpoint) replays exactly what an uninterrupted one would have done.
`python -m edgevit.train` is the command line.
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
from tinygrad import Context, Device, Tensor

from edgevit import internals
from edgevit.answer import DIGITS
from edgevit.data import Dataset, Split, pixel_stats
from edgevit.errors import EdgeViTError
from edgevit.graph import BatchedForward
from edgevit.model import ViT, ViTConfig
from edgevit.training.batches import Bank, Batches, splits
from edgevit.training.calibrate import calibration
from edgevit.training.optimizer import Optimizer
from edgevit.training.settings import TrainSettings, lr_at
from edgevit.training.step import CompiledStep

EVAL_BATCH = 500
CHECK_SLICE = 1000  # a fixed test slice whose accuracy is recorded, so a file can be checked quickly later
SPEED_SMOOTHING = 0.9  # EMA weight for the images/s figure shown while training


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


def epoch_record(epoch: int, sums: dict, accuracy: float, predictions: np.ndarray, labels: np.ndarray) -> dict:
    """What the history keeps of a finished epoch (0-based `epoch`): its running sums and test scores."""
    head = slice(0, CHECK_SLICE)
    return {
        "epoch": epoch + 1,
        "train_loss": sums["loss"] / sums["seen"],
        "train_accuracy": sums["correct"] / sums["seen"],
        "test_accuracy": accuracy,
        f"test_accuracy_first_{CHECK_SLICE}": float((predictions[head] == labels[head]).mean()),
    }


class Trainer:
    """A training run. `negatives`, `positives` and `degraded` (Banks) are needed when the settings
    mix them into batches; negatives are labelled with class DIGITS, which the model must have then."""

    def __init__(
        self,
        config: ViTConfig,
        settings: TrainSettings,
        data: Dataset,
        negatives: Bank | None = None,
        positives: Bank | None = None,
        degraded: Bank | None = None,
        validation_negatives: Bank | None = None,
    ):
        self.config, self.settings, self.data = config, settings, data
        if data.train.images.shape[1:] != (config.image_size, config.image_size):
            raise EdgeViTError(
                f"{data.source}: images are {data.train.images.shape[1:]}, the model expects {config.image_size}"
            )
        if not len(data.test):
            raise EdgeViTError(f"{data.source}: the test split is empty: there is nothing to score the run on")
        if settings.negatives_per_batch and config.num_classes != DIGITS + 1:
            raise EdgeViTError(f"training with negatives needs {DIGITS + 1} classes (the last: not a digit)")
        self.train_split, self.validation_split = splits(data, settings)
        self.mean, self.std = pixel_stats(self.train_split.images)
        self.banks = {"negatives": negatives, "positives": positives, "degraded": degraded}
        self.validation_negatives = validation_negatives
        self.batch = Batches(self.train_split, self.banks, settings, self.mean, self.std)
        Tensor.manual_seed(settings.seed)
        self.model = ViT(config)
        self.optimizer = Optimizer(self.model, config, settings)
        self.params = self.optimizer.params
        self.step = 0  # optimizer steps done since the start of the run
        self.history: list[dict] = []  # one entry per finished epoch
        self.epoch_sums = {"loss": 0.0, "correct": 0, "seen": 0}  # of the epoch in progress
        self.train_seconds = 0.0
        self.compiled = CompiledStep(self._train_fn, self.updated_state)
        self.forward = BatchedForward(self.optimizer.ema or self.model, self.mean, self.std, EVAL_BATCH)

    @property
    def steps_per_epoch(self) -> int:
        return self.batch.steps_per_epoch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.settings.epochs

    def lr(self, step: int) -> float:
        s = self.settings
        return lr_at(step, self.total_steps, round(s.warmup_epochs * self.steps_per_epoch), s.lr, s.min_lr)

    def _train_fn(self, x: Tensor, y: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
        with Context(TRAINING=1):
            self.optimizer.all.zero_grad()
            logits = self.model(x)
            loss = logits.sparse_categorical_crossentropy(y, label_smoothing=self.settings.label_smoothing).backward()
            correct = (logits.argmax(-1) == y).sum()
            Tensor.realize(loss, correct, *self.optimizer.step(lr))
            self.optimizer.average()
        return loss, correct

    def optimizer_state(self) -> dict[str, Tensor]:
        return self.optimizer.state()

    @property
    def shipped_weights(self) -> dict[str, Tensor]:
        return self.optimizer.shipped

    def updated_state(self) -> list[Tensor]:
        """Every tensor a training step writes that outlives it: weights, optimizer, random stream."""
        return [*self.params.values(), *self.optimizer_state().values(), *internals.random_state()]

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        """One step; a loss that is not a finite number stops the run before anything is saved from it."""
        loss, correct = self.compiled(x, y, self.lr(self.step))
        if not math.isfinite(loss):
            raise EdgeViTError(
                f"training diverged at step {self.step + 1} (loss {loss}): try a lower --lr; no weights were written"
            )
        self.step += 1
        return loss, correct

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
                compiling = self.compiled.compiling
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
            self.history.append(epoch_record(epoch, sums, *self.test_accuracy(), self.data.test.labels))
            seconds, ips = time.perf_counter() - epoch_start, (spe - start) * bs / busy if busy else 0.0
            h = self.history[-1]
            yield EpochReport(
                epoch + 1, self.settings.epochs, h["train_loss"], h["train_accuracy"], h["test_accuracy"], seconds, ips
            )

    def calibration(self) -> dict:
        """What is fitted on the validation split (edgevit.training.calibrate): with damaged digits
        in training, the reject threshold also spares damaged copies of the validation digits."""
        damaged_seed = self.settings.seed if self.settings.degraded_per_batch else None
        held = self.validation_negatives.images if self.validation_negatives is not None else None
        return calibration(self.forward, self.validation_split, self.config.num_classes, damaged_seed, held)

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
