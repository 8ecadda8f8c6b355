"""`python -m edgevit.train`: train the ViT on bundled MNIST (or --data DIR), with a progress bar,
a checkpoint after every epoch and on Ctrl-C, and `--resume` to continue a run exactly.

A thin command line over edgevit.trainer (the run) and edgevit.checkpoint (its files).
"""

from __future__ import annotations

import argparse
import dataclasses
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edgevit import checkpoint, weights
from edgevit.answer import DIGITS
from edgevit.cli import ProgressBar, StopFlag, format_duration, run
from edgevit.data import load_dataset, read_idx
from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.resources import shipped
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.trainer import Negatives, StepReport, Trainer, TrainSettings, time_training_step

DEFAULT_OUT = Path("runs/edgevit-mnist.safetensors")
NEGATIVES = ("data", "negatives", "train-images-idx3-ubyte.gz")  # the bundled bank, from tools/negatives.py
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "dropout")
SETTING_FLAGS = tuple(f.name for f in dataclasses.fields(TrainSettings))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edgevit.train", description="Train the EdgeViT digit classifier.")
    p.add_argument("--data", help="directory with the four MNIST-format IDX files (default: $EDGEVIT_DATA or bundled MNIST)")
    p.add_argument("--out", type=Path, help=f"weights file to write (default: {DEFAULT_OUT})")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue the run saved in this checkpoint")
    p.add_argument("--device", help="tinygrad backend, e.g. CPU, CUDA, METAL, CL (default: the fastest here, measured once)")
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
    run_args.add_argument(
        "--negatives-per-batch",
        type=int,
        metavar="K",
        help="mix K images of non-digits into every batch as an 11th class, 'not a digit' (default 0)",
    )
    p.add_argument(
        "--negatives",
        type=Path,
        metavar="IDX",
        help="the non-digit images (an IDX file of uint8 28x28 images; default: the bundled data/negatives bank)",
    )
    run_args.add_argument(
        "--validation",
        type=int,
        help=f"hold out the last N training images to fit the calibration temperature on (default {d.validation})",
    )
    model_args = p.add_argument_group("model size (defaults: the 16-patch, 64-dim design)")
    c = ViTConfig()
    for name in MODEL_FLAGS[:-1]:
        model_args.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {getattr(c, name)}")
    model_args.add_argument("--dropout", type=float, help=f"default {c.dropout}")
    return p


def load_negatives(path: str | Path | None) -> Negatives:
    """The non-digit images to train on: an IDX file of uint8 (N, 28, 28) images."""
    source = Path(path) if path else shipped(*NEGATIVES)
    images = read_idx(source)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise EdgeViTError(f"{source}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    return Negatives(images, source)


def start(args: argparse.Namespace) -> tuple[Trainer, Path, Path]:
    """The trainer (new or resumed), its output weights file and its checkpoint file."""
    given = {k: v for k, v in vars(args).items() if k in SETTING_FLAGS + MODEL_FLAGS and v is not None}
    if args.resume and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise EdgeViTError(f"--resume continues a run with its saved settings; drop {flags}")
    if args.beam < 0:
        raise EdgeViTError(f"--beam must be 0 (no search) or more, not {args.beam}")
    if args.resume:
        # the run continues on the data it started with unless told otherwise
        state = weights.read_header(args.resume).metadata.get("train_state", {})
        negatives = load_negatives(args.negatives or state.get("negatives")) if state.get("negatives") else None
        trainer = checkpoint.resume(args.resume, load_dataset(args.data or state.get("data")), negatives)
        out, ckpt = args.out or checkpoint.weights_path(args.resume), args.resume
    else:
        data = load_dataset(args.data)
        settings = TrainSettings(**{k: v for k, v in given.items() if k in SETTING_FLAGS})
        # the extra class exists only when negatives are trained on
        classes = {"num_classes": DIGITS + 1} if settings.negatives_per_batch else {}
        try:
            config = ViTConfig(**{k: v for k, v in given.items() if k in MODEL_FLAGS} | classes)
        except ValueError as e:
            raise EdgeViTError(str(e)) from None
        negatives = load_negatives(args.negatives) if settings.negatives_per_batch else None
        trainer = Trainer(config, settings, data, negatives)
        out = args.out or DEFAULT_OUT
        ckpt = checkpoint.default_path(out)
    if out.resolve() == ckpt.resolve():
        raise EdgeViTError(f"--out {out} would overwrite the checkpoint it resumes from")
    trainer.beam = args.beam
    return trainer, out, ckpt


def train(trainer: Trainer, ckpt: Path) -> bool:
    """Run to the end with a progress bar, checkpointing every epoch; False when stopped by Ctrl-C."""
    s = trainer.settings
    bar, stop = ProgressBar(), StopFlag()
    try:
        for event in trainer.run(stop):
            if isinstance(event, StepReport):
                speed = f"{event.images_per_s:,.0f} img/s ETA {format_duration(event.eta_s)}"
                fields = f"loss {event.loss:.4f} acc {100 * event.accuracy:5.2f}% {speed}"
                bar.update(f"epoch {event.epoch}/{s.epochs}", event.step, event.steps_per_epoch, fields)
                continue
            bar.close()
            result = f"loss {event.train_loss:.4f} train acc {100 * event.train_accuracy:.2f}%"
            cost = f"({event.seconds:.0f} s, {event.images_per_s:,.0f} img/s)"
            print(f"epoch {event.epoch}/{event.epochs}: {result} test acc {100 * event.test_accuracy:.2f}% {cost}", flush=True)
            checkpoint.save(trainer, ckpt)
    finally:
        stop.restore()
        bar.close()
    return len(trainer.history) == s.epochs


def cli(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # with several usable backends, the first run times a training step on each (once per machine)
    device = choose_device(args.device, "training step", time_training_step, Cache(default_cache_dir()))
    trainer, out, ckpt = start(args)
    out.parent.mkdir(parents=True, exist_ok=True)

    n_params = sum(t.numel() for t in trainer.params.values())
    s, data = trainer.settings, trainer.data
    print(f"device {device} (tinygrad {version('tinygrad')}); data {data.source}; {len(trainer.train_images)} train images")
    print(f"model {n_params:,} parameters; {s.epochs} epochs of {trainer.steps_per_epoch} steps of {s.batch_size} images")
    if trainer.step:
        print(f"resuming {ckpt} at step {trainer.step} of {trainer.total_steps}")
    compile_time = "about a minute on a CPU" if not args.beam else "with a kernel search: minutes the first time"
    print(f"the first steps compile the training graph ({compile_time})", flush=True)
    if not train(trainer, ckpt):
        checkpoint.save(trainer, ckpt)
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with:")
        print(f"  python -m edgevit.train --resume {ckpt}")
        return 130
    checkpoint.save_weights(trainer, out)
    print(f"saved {out} (test accuracy {100 * trainer.history[-1]['test_accuracy']:.2f}%); checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    run("edgevit.train", cli)
