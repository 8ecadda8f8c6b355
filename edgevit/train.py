"""Training the ViT: AdamW, warm-up then cosine decay, label smoothing, host-side augmentation.

`python -m edgevit.train` trains on bundled MNIST (or --data DIR) on the best backend found.
The run is a pure function of (config, settings, seed, data, backend): batch order and augmentation
come from generators seeded by (seed, epoch, step), so a resumed run replays exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tinygrad import Context, Tensor, TinyJit, nn
from tinygrad.nn.state import get_state_dict, load_state_dict

from edgevit import weights
from edgevit.data import Dataset, Split, training_batch
from edgevit.errors import EdgeViTError
from edgevit.model import ViT, ViTConfig
from edgevit.runtime import BatchedForward

EVAL_BATCH = 500
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

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.limit < 0:
            raise EdgeViTError("epochs and batch size must be at least 1, the learning rate positive, limit >= 0")


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


class Trainer:
    def __init__(self, config: ViTConfig, settings: TrainSettings, data: Dataset):
        self.config, self.settings, self.data = config, settings, data
        if data.train.images.shape[1:] != (config.image_size, config.image_size):
            raise EdgeViTError(
                f"{data.source}: images are {data.train.images.shape[1:]}, the model expects {config.image_size}"
            )
        self.mean, self.std = data.pixel_stats()
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
        self._train_step = TinyJit(self._train_fn)
        # BEAM width for compiling the step: kernel shapes searched by timing them (once; tinygrad caches
        # the result). Measured on a 2-core CPU: 507 -> 1,029 img/s for an 11-minute first compile.
        self.beam = 0
        self.forward = BatchedForward(self.model, self.mean, self.std, EVAL_BATCH)

    # --- sizes --------------------------------------------------------------------------------
    @property
    def train_images(self) -> np.ndarray:
        return self.data.train.images[: self.settings.limit or None]

    @property
    def steps_per_epoch(self) -> int:
        steps = len(self.train_images) // self.settings.batch_size
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
        return loss, correct

    def batch(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Host batch `index` of `epoch` (0-based): normalised float32 images and int32 labels."""
        s = self.settings
        split = Split(self.train_images, self.data.train.labels[: s.limit or None])
        return training_batch(
            split, epoch, index, batch_size=s.batch_size, seed=s.seed, do_augment=s.augment, mean=self.mean, std=self.std
        )

    def train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        compiling = self._train_step.captured is None
        with Context(BEAM=self.beam) if compiling and self.beam else contextlib.nullcontext():
            loss, correct = self._train_step(Tensor(x), Tensor(y), Tensor([self.lr(self.step)], dtype="float32"))
        self.step += 1
        return loss.item(), int(correct.item())

    # --- the loop -----------------------------------------------------------------------------
    def test_accuracy(self) -> tuple[float, np.ndarray]:
        predictions = self.forward(self.data.test.images).argmax(-1)
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
                compiling = self._train_step.cnt < 2
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

    # --- files --------------------------------------------------------------------------------
    def _metadata(self, **extra) -> dict:
        from importlib.metadata import version

        from tinygrad import Device

        return {
            "config": dataclasses.asdict(self.config),
            "preprocess": {"mean": self.mean, "std": self.std, "image_size": self.config.image_size},
            "training": dataclasses.asdict(self.settings) | {"device": Device.DEFAULT, "tinygrad": version("tinygrad")},
            "metrics": {"epochs_done": len(self.history), "history": self.history, "train_seconds": self.train_seconds}
            | (self.history[-1] if self.history else {}),
        } | extra

    def save_weights(self, path: str | Path, **metrics) -> None:
        """The inference file: weights, config, preprocessing constants and metrics; no optimizer state."""
        meta = self._metadata()
        meta["metrics"] |= metrics
        weights.save(path, dict(self.params), meta)

    def optimizer_state(self) -> dict[str, Tensor]:
        """The optimizer's tensors under their checkpoint names."""
        state = {}
        for group, (names, opt) in self.groups.items():
            prefix = f"{weights.OPTIMIZER_PREFIX}{group}."
            state |= {prefix + "b1_t": opt.b1_t, prefix + "b2_t": opt.b2_t}
            state |= {f"{prefix}m.{n}": m for n, m in zip(names, opt.m)}
            state |= {f"{prefix}v.{n}": v for n, v in zip(names, opt.v)}
        return state

    def save_checkpoint(self, path: str | Path) -> None:
        """Everything `resume` needs to continue this exact run."""
        rng = {dev: c.tolist() for dev, c in Tensor._device_rng_counters.items()}
        state = {"step": self.step, "epoch_sums": self.epoch_sums, "data": str(self.data.source), "rng_counters": rng}
        weights.save(path, self.params | self.optimizer_state(), self._metadata(train_state=state))

    @classmethod
    def resume(cls, path: str | Path, data: Dataset) -> Trainer:
        header = weights.read_header(path)
        if "train_state" not in header.metadata:
            raise EdgeViTError(f"{header.path}: not a training checkpoint (no optimizer state); cannot resume from it")
        fields = {f.name for f in dataclasses.fields(TrainSettings)}
        trainer = cls(
            weights.config_of(header),
            TrainSettings(**{k: v for k, v in header.metadata["training"].items() if k in fields}),
            data,
        )
        optimizer = trainer.optimizer_state()
        weights.check_tensors(header, {k: (v.shape, "F32") for k, v in (trainer.params | optimizer).items()}, optimizer=True)
        tensors = weights.load_tensors(header)
        load_state_dict(trainer.model, {k: tensors[k] for k in trainer.params}, verbose=False)
        for name, t in optimizer.items():
            t.assign(tensors[name].to(t.device)).realize()
        state, metrics = header.metadata["train_state"], header.metadata["metrics"]
        for dev, counter in state["rng_counters"].items():
            if dev in Tensor._device_rng_counters:  # dropout's random stream continues where it stopped
                Tensor._device_rng_counters[dev].assign(Tensor(counter, device=dev, dtype="uint32")).realize()
        trainer.step, trainer.epoch_sums = state["step"], state["epoch_sums"]
        trainer.history, trainer.train_seconds = metrics["history"], metrics["train_seconds"]
        return trainer


def default_checkpoint(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".safetensors") + ".ckpt.safetensors")


def cli(argv: list[str] | None = None) -> int:
    import argparse

    from edgevit.cli import ProgressBar, StopFlag, format_duration
    from edgevit.data import load_dataset
    from edgevit.device import select_device

    p = argparse.ArgumentParser(prog="python -m edgevit.train", description="Train the EdgeViT digit classifier.")
    p.add_argument("--data", help="directory with the four MNIST-format IDX files (default: $EDGEVIT_DATA or bundled MNIST)")
    p.add_argument("--out", type=Path, help="weights file to write (default: runs/edgevit-mnist.safetensors)")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue the run saved in this checkpoint")
    p.add_argument("--device", help="tinygrad backend, e.g. CPU, CUDA, METAL, CL (default: the best available)")
    p.add_argument(
        "--beam",
        type=int,
        default=0,
        metavar="N",
        help="BEAM-search the training kernels when compiling (e.g. 2: about 2x faster steps on a CPU "
        "after a compile of about 11 minutes, cached for later runs; losses may differ in the last bits)",
    )
    run_args = p.add_argument_group("training (defaults: the shipped recipe)")
    d = TrainSettings()
    run_args.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    run_args.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    run_args.add_argument("--lr", type=float, help=f"peak learning rate, default {d.lr}")
    run_args.add_argument("--weight-decay", type=float, help=f"default {d.weight_decay}")
    run_args.add_argument("--warmup-epochs", type=float, help=f"default {d.warmup_epochs}")
    run_args.add_argument("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    run_args.add_argument("--no-augment", dest="augment", action="store_const", const=False, help="train on the raw images")
    run_args.add_argument("--seed", type=int, help=f"default {d.seed}")
    run_args.add_argument("--limit", type=int, help="train on the first N images only")
    model_args = p.add_argument_group("model size (defaults: the 16-patch, 64-dim design)")
    c = ViTConfig()
    for name in ("patch_size", "dim", "depth", "heads", "mlp_dim"):
        model_args.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {getattr(c, name)}")
    model_args.add_argument("--dropout", type=float, help=f"default {c.dropout}")
    args = p.parse_args(argv)

    setting_names = [f.name for f in dataclasses.fields(TrainSettings)]
    model_names = ["patch_size", "dim", "depth", "heads", "mlp_dim", "dropout"]
    given = {k: v for k, v in vars(args).items() if k in setting_names + model_names and v is not None}
    if args.resume and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise EdgeViTError(f"--resume continues a run with its saved settings; drop {flags}")

    device = select_device(args.device)
    if args.resume:
        # the run continues on the data it started with unless told otherwise
        saved = weights.read_header(args.resume).metadata.get("train_state", {}).get("data")
        data = load_dataset(args.data or saved)
        trainer = Trainer.resume(args.resume, data)
        out = args.out or args.resume.with_name(args.resume.name.replace(".ckpt.safetensors", ".safetensors"))
    else:
        data = load_dataset(args.data)
        try:
            config = ViTConfig(**{k: v for k, v in given.items() if k in model_names})
        except ValueError as e:
            raise EdgeViTError(str(e)) from None
        trainer = Trainer(config, TrainSettings(**{k: v for k, v in given.items() if k in setting_names}), data)
        out = args.out or Path("runs/edgevit-mnist.safetensors")
    if args.beam < 0:
        raise EdgeViTError(f"--beam must be 0 (no search) or more, not {args.beam}")
    trainer.beam = args.beam
    checkpoint = args.resume or default_checkpoint(out)
    if out.resolve() == checkpoint.resolve():
        raise EdgeViTError(f"--out {out} would overwrite the checkpoint it resumes from")
    out.parent.mkdir(parents=True, exist_ok=True)

    from importlib.metadata import version

    n_params = sum(t.numel() for t in trainer.params.values())
    s = trainer.settings
    print(f"device {device} (tinygrad {version('tinygrad')}); data {data.source}; {len(trainer.train_images)} train images")
    print(f"model {n_params:,} parameters; {s.epochs} epochs of {trainer.steps_per_epoch} steps of {s.batch_size} images")
    if trainer.step:
        print(f"resuming {checkpoint} at step {trainer.step} of {trainer.total_steps}")
    compile_time = "about a minute on a CPU" if not args.beam else "with a kernel search: minutes the first time"
    print(f"the first steps compile the training graph ({compile_time})", flush=True)

    bar, stop = ProgressBar(), StopFlag()
    try:
        for event in trainer.run(stop):
            if isinstance(event, StepReport):
                speed = f"{event.images_per_s:,.0f} img/s ETA {format_duration(event.eta_s)}"
                fields = f"loss {event.loss:.4f} acc {100 * event.accuracy:5.2f}% {speed}"
                bar.update(f"epoch {event.epoch}/{s.epochs}", event.step, event.steps_per_epoch, fields)
            else:
                bar.close()
                train = f"loss {event.train_loss:.4f} train acc {100 * event.train_accuracy:.2f}%"
                cost = f"({event.seconds:.0f} s, {event.images_per_s:,.0f} img/s)"
                print(
                    f"epoch {event.epoch}/{event.epochs}: {train} test acc {100 * event.test_accuracy:.2f}% {cost}", flush=True
                )
                trainer.save_checkpoint(checkpoint)
    finally:
        stop.restore()
        bar.close()
    if len(trainer.history) < s.epochs:
        trainer.save_checkpoint(checkpoint)
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with:")
        print(f"  python -m edgevit.train --resume {checkpoint}")
        return 130
    trainer.save_weights(out)
    print(f"saved {out} (test accuracy {100 * trainer.history[-1]['test_accuracy']:.2f}%); checkpoint {checkpoint}")
    return 0


if __name__ == "__main__":
    from edgevit.cli import run

    run("edgevit.train", cli)
