"""Training files: the inference weights a run produces, and the checkpoint that continues it.

A checkpoint is a weights file plus the optimizer state (tensors under `optimizer.`) and
`train_state` in its metadata: the step, the running sums of the epoch in progress, the data it
trains on and where dropout's random stream had got to. `resume` rebuilds the exact run: the same
losses and weights, bit for bit, as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tinygrad.nn.state import load_state_dict

from edgevit import internals, weights
from edgevit.data import Dataset
from edgevit.errors import EdgeViTError
from edgevit.trainer import Bank, Trainer, TrainSettings

SUFFIX = ".ckpt.safetensors"


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
    """Everything `resume` needs to continue this exact run."""
    state = {
        "step": trainer.step,
        "epoch_sums": trainer.epoch_sums,
        "data": str(trainer.data.source),
        "banks": {name: str(bank.source) for name, bank in trainer.banks.items() if bank is not None},
        "rng_counters": internals.rng_state(),
    }
    weights.save(path, trainer.params | trainer.optimizer_state(), trainer.metadata(train_state=state))


def resume(path: str | Path, data: Dataset, banks: dict[str, Bank] | None = None) -> Trainer:
    """The run saved in checkpoint `path`, ready to continue on `data` (and its extra image banks)."""
    header = weights.read_header(path)
    if "train_state" not in header.metadata:
        raise EdgeViTError(f"{header.path}: not a training checkpoint (no optimizer state); cannot resume from it")
    fields = {f.name for f in dataclasses.fields(TrainSettings)}
    # runs from before validation splits trained on every image: they continue that way
    saved = {"validation": 0} | {k: v for k, v in header.metadata["training"].items() if k in fields}
    trainer = Trainer(weights.config_of(header), TrainSettings(**saved), data, **(banks or {}))
    optimizer = trainer.optimizer_state()
    weights.check_tensors(header, {k: (v.shape, "F32") for k, v in (trainer.params | optimizer).items()}, optimizer=True)
    tensors = weights.load_tensors(header)
    load_state_dict(trainer.model, {k: tensors[k] for k in trainer.params}, verbose=False)
    for name, t in optimizer.items():
        t.assign(tensors[name].to(t.device)).realize()
    state, metrics = header.metadata["train_state"], header.metadata["metrics"]
    internals.restore_rng_state(state["rng_counters"])  # dropout's random stream continues where it stopped
    trainer.step, trainer.epoch_sums = state["step"], state["epoch_sums"]
    trainer.history, trainer.train_seconds = metrics["history"], metrics["train_seconds"]
    return trainer
