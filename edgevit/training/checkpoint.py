"""Training files: the inference weights a run produces, and the checkpoint that continues it.

A checkpoint is a weights file plus the optimizer state (tensors under `optimizer.`) and
`train_state` in its metadata: the step, the running sums of the epoch in progress, the data it
trains on and where dropout's random stream had got to. `resume` rebuilds the exact run: the same
losses and weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from tinygrad import Tensor
from tinygrad.nn.state import load_state_dict

from edgevit import checks, internals, weights
from edgevit.data import Dataset
from edgevit.errors import EdgeViTError
from edgevit.files import signals_deferred
from edgevit.training.trainer import Bank, Trainer, TrainSettings

SUFFIX = ".ckpt.safetensors"
BANK_NAMES = ("negatives", "positives", "degraded")
COUNTER_MAX = 2**32 - 1  # a random-number counter word is a uint32


def default_path(out: Path) -> Path:
    """The checkpoint beside an output weights file: run.safetensors -> run.ckpt.safetensors."""
    return out.with_name(out.name.removesuffix(".safetensors") + SUFFIX)


def weights_path(checkpoint: Path) -> Path:
    """The inference weights a checkpoint's run writes: run.ckpt.safetensors -> run.safetensors."""
    return checkpoint.with_name(checkpoint.name.replace(SUFFIX, ".safetensors"))


def save_weights(trainer: Trainer, path: str | Path, **metrics) -> None:
    """The inference file: weights, config, preprocessing constants, metrics and what was fitted on the
    validation split (the calibration temperature, the reject rule); no optimizer state."""
    meta = trainer.metadata() | trainer.calibration()
    meta["metrics"] |= metrics
    weights.save(path, trainer.shipped_weights, meta)


def save(trainer: Trainer, path: str | Path) -> None:
    """Everything `resume` needs to continue this exact run. Ctrl-C and SIGTERM wait until the file is
    in place: the tensors are read back from the device first, and losing the checkpoint to a second
    Ctrl-C would lose the epoch."""
    with signals_deferred():
        _save(trainer, path)


def _save(trainer: Trainer, path: str | Path) -> None:
    state = {
        "step": trainer.step,
        "epoch_sums": trainer.epoch_sums,
        "data": str(trainer.data.source),
        "banks": {name: str(bank.source) for name, bank in trainer.banks.items() if bank is not None},
        "rng_counters": internals.rng_state(),
    }
    weights.save(path, trainer.params | trainer.optimizer_state(), trainer.metadata(train_state=state))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint file, read once and its `train_state` checked: what `resume` continues."""

    file: weights.WeightsFile
    state: dict
    settings: TrainSettings

    @property
    def path(self) -> Path:
        return self.file.path


def read(path: str | Path) -> Checkpoint:
    """A checkpoint, every field `resume` uses checked first: a file edited by hand is one error
    naming the field, not a traceback deep inside the resume."""
    file = weights.read_weights(path)
    header = file.header
    if "train_state" not in header.metadata:
        raise EdgeViTError(f"{header.path}: not a training checkpoint (no optimizer state); cannot resume from it")
    field = functools.partial(weights.metadata_value, header)
    state = field("train_state", kind=dict)
    if field("train_state", "step", kind=int) < 0:
        raise EdgeViTError(f"{header.path}: metadata train_state.step is negative")
    field("train_state", "epoch_sums", "loss", kind=float)
    for count in ("correct", "seen"):
        field("train_state", "epoch_sums", count, kind=int)
    field("train_state", "data", kind=str)
    banks = field("train_state", "banks", kind=dict)
    if set(banks) - set(BANK_NAMES) or not all(isinstance(v, str) for v in banks.values()):
        raise EdgeViTError(f"{header.path}: metadata train_state.banks is not {{name: path}} of {', '.join(BANK_NAMES)}")
    for device in field("train_state", "rng_counters", kind=dict):
        counter = field("train_state", "rng_counters", device, kind=list)
        if len(counter) != 2 or not all(checks.is_int(c) and 0 <= c <= COUNTER_MAX for c in counter):
            raise EdgeViTError(f"{header.path}: metadata train_state.rng_counters.{device} is not two 32-bit counters")
    field("training", kind=dict)
    field("metrics", "train_seconds", kind=float)
    for epoch in range(len(field("metrics", "history", kind=list))):
        field("metrics", "history", epoch, kind=dict)
        field("metrics", "history", epoch, "test_accuracy", kind=float)
    return Checkpoint(file, state, _settings(header))


def _settings(header: weights.WeightsHeader) -> TrainSettings:
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    # runs from before validation splits trained on every image: they continue that way
    saved = {"validation": 0} | {k: v for k, v in header.metadata["training"].items() if k in fields}
    try:
        return TrainSettings(**saved)
    except EdgeViTError as e:
        raise EdgeViTError(f"{header.path}: its saved training settings are not usable: {e}") from None


def _check_optimizer(ckpt: Checkpoint, arrays: dict) -> None:
    """Refuse optimizer state no run could have reached: Adam's powers of beta on (0, 1], second
    moments that are negative (every tensor was already checked finite)."""
    for name, a in arrays.items():
        what = name.rsplit(".", 1)[-1]
        if (what in ("b1_t", "b2_t") and not ((a > 0) & (a <= 1)).all()) or (".v." in name and (a < 0).any()):
            raise EdgeViTError(f"{ckpt.path}: optimizer state {name} is impossible (edited or damaged); cannot resume from it")


def resume(ckpt: Checkpoint, data: Dataset, banks: dict[str, Bank] | None = None) -> Trainer:
    """The run saved in `ckpt`, ready to continue on `data` (and its extra image banks)."""
    header, state, settings = ckpt.file.header, ckpt.state, ckpt.settings
    trainer = Trainer(weights.config_of(header), settings, data, **(banks or {}))
    history = header.metadata["metrics"]["history"]
    done = state["step"] - len(history) * trainer.steps_per_epoch  # steps into the epoch in progress
    if len(history) > settings.epochs or not 0 <= done <= trainer.steps_per_epoch:
        raise EdgeViTError(
            f"{header.path}: step {state['step']} after {len(history)} epochs does not fit "
            f"{settings.epochs} epochs of {trainer.steps_per_epoch} steps"
        )
    optimizer = trainer.optimizer_state()
    weights.check_tensors(header, {k: (v.shape, "F32") for k, v in (trainer.params | optimizer).items()}, optimizer=True)
    weights.check_finite(ckpt.file)
    arrays = ckpt.file.arrays()
    _check_optimizer(ckpt, {k: arrays[k] for k in optimizer})
    load_state_dict(trainer.model, {k: Tensor(arrays[k]) for k in trainer.params}, verbose=False)
    for name, t in optimizer.items():
        t.assign(Tensor(arrays[name], device=t.device)).realize()
    internals.restore_rng_state(state["rng_counters"])  # dropout's random stream continues where it stopped
    trainer.step, trainer.epoch_sums = state["step"], state["epoch_sums"]
    trainer.history, trainer.train_seconds = history, header.metadata["metrics"]["train_seconds"]
    return trainer
