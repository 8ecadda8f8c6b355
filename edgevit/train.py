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

from edgevit import checkpoint
from edgevit.answer import DIGITS
from edgevit.cli import ProgressBar, StopFlag, UsageError, format_duration, run
from edgevit.data import Dataset, Split, load_dataset, read_idx, verify_manifest
from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.files import check_writable, remove_stale_temps
from edgevit.model import ViTConfig
from edgevit.resources import bundled_banks
from edgevit.robustness import degraded_bank
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.trainer import (
    BANK_WORKERS,
    DEFAULT_RECIPE,
    RECIPES,
    Bank,
    StepReport,
    Trainer,
    TrainSettings,
    recipe_config,
    recipe_settings,
    splits,
    time_training_step,
)

DEFAULT_OUT = Path("runs/edgevit-mnist.safetensors")
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "dropout")
SETTING_FLAGS = tuple(f.name for f in dataclasses.fields(TrainSettings))
GENERATED = "generated"  # how a checkpoint names a bank made when the run starts, not read from a file
NEGATIVES_BANK_SEED = 7  # added to the run's seed for the damaged non-digits


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
    p.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default=DEFAULT_RECIPE,
        help=f"the starting point the flags below change (default {DEFAULT_RECIPE}: the shipped weights' "
        "recipe, a few hours on a CPU; quick: a few minutes, for trying things)",
    )
    run_args = p.add_argument_group(f"training (defaults: the {DEFAULT_RECIPE} recipe)")
    d = recipe_settings(DEFAULT_RECIPE)
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
    run_args.add_argument(
        "--positives-per-batch",
        type=int,
        metavar="K",
        help="mix K digits drawn like the non-digits (paper, canvas, scan) into every batch (default 0)",
    )
    for name, what in (
        ("degraded-per-batch", "mix K damaged digits (noise, blur, lines, blots, outlines...) into every batch"),
        ("degraded-images", "make a bank of N damaged training digits when the run starts"),
        ("degraded-negatives", "and N damaged non-digits"),
    ):
        run_args.add_argument(f"--{name}", type=int, metavar="K" if "batch" in name else "N", help=what)
    run_args.add_argument("--ema", type=float, help="decay of the weights' moving average, shipped instead (default 0: off)")
    p.add_argument(
        "--banks",
        type=Path,
        metavar="DIR",
        help="the extra images: IDX files from tools/negatives.py (default: the bundled data/negatives)",
    )
    run_args.add_argument(
        "--validation",
        type=int,
        help=f"hold out the last N training images to fit the calibration temperature on (default {d.validation})",
    )
    model_args = p.add_argument_group(f"model size (defaults: the {DEFAULT_RECIPE} recipe's)")
    c = recipe_config(DEFAULT_RECIPE)
    for name in MODEL_FLAGS[:-1]:
        model_args.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"default {getattr(c, name)}")
    model_args.add_argument("--dropout", type=float, help=f"default {c.dropout}")
    return p


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


def load_banks(directory: str | Path | None, settings: TrainSettings, data: Dataset) -> dict[str, Bank]:
    """The banks the settings mix into batches: read from `directory`, and the damaged digits (and
    non-digits) made from the training split (a minute or two; the same for the same settings)."""
    root = Path(directory) if directory else bundled_banks()
    wanted = {"negatives": settings.negatives_per_batch, "positives": settings.positives_per_batch}
    banks = {name: load_bank(root, name) for name, per_batch in wanted.items() if per_batch}
    if settings.degraded_per_batch:
        banks["degraded"] = make_degraded_bank(splits(data, settings)[0], banks.get("negatives"), settings)
    return banks


def make_degraded_bank(train: Split, negatives: Bank | None, settings: TrainSettings) -> Bank:
    n, m = settings.degraded_images, settings.degraded_negatives
    print(f"making {n:,} damaged digits and {m:,} damaged non-digits for training", flush=True)
    images, labels, _ = degraded_bank(train, n, settings.seed, BANK_WORKERS)
    if m and negatives is not None:
        others = Split(negatives.images, np.full(len(negatives.images), DIGITS, np.int64))
        more, more_labels, _ = degraded_bank(others, m, settings.seed + NEGATIVES_BANK_SEED, BANK_WORKERS)
        images, labels = np.concatenate([images, more]), np.concatenate([labels, more_labels])
    return Bank(images, Path(f"{GENERATED}: {n} digits, {m} non-digits, seed {settings.seed}"), labels)


def new_run(args: argparse.Namespace) -> tuple[ViTConfig, TrainSettings]:
    """The model and settings the flags ask for, checked before anything is loaded or compiled: a
    value argparse lets through (`--lr nan`, `--seed -1`) is a usage error, as argparse's own are."""
    given = {k: v for k, v in vars(args).items() if k in SETTING_FLAGS + MODEL_FLAGS and v is not None}
    if args.resume and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UsageError(f"--resume continues a run with its saved settings; drop {flags}")
    if args.beam < 0:
        raise UsageError(f"--beam must be 0 (no search) or more, not {args.beam}")
    try:
        base_settings, base_config = RECIPES[args.recipe]
        settings = TrainSettings(**base_settings | {k: v for k, v in given.items() if k in SETTING_FLAGS})
        # the extra class exists only when negatives are trained on
        classes = {"num_classes": DIGITS + 1 if settings.negatives_per_batch else DIGITS}
        config = ViTConfig(**base_config | {k: v for k, v in given.items() if k in MODEL_FLAGS} | classes)
    except (EdgeViTError, ValueError) as e:
        raise UsageError(str(e)) from None
    return config, settings


def outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """The weights file the run writes at its end and the checkpoint it writes every epoch."""
    if args.resume:
        out, ckpt = args.out or checkpoint.weights_path(args.resume), args.resume
    else:
        out = args.out or DEFAULT_OUT
        ckpt = checkpoint.default_path(out)
    if out.resolve() == ckpt.resolve():
        raise EdgeViTError(f"--out {out} would overwrite the checkpoint it resumes from")
    return out, ckpt


def start(args: argparse.Namespace, config: ViTConfig, settings: TrainSettings, state: dict | None) -> Trainer:
    """The trainer: resumed from --resume (whose `train_state` is `state`), else new with `config`
    and `settings`."""
    if state is not None:
        # the run continues on the data it started with unless told otherwise
        saved_banks = {k: v for k, v in state["banks"].items() if not v.startswith(GENERATED)}
        directory = args.banks or (Path(next(iter(saved_banks.values()))).parent if saved_banks else None)
        data = load_dataset(args.data or state["data"])
        saved = checkpoint.read_settings(args.resume)
        banks = {name: load_bank(directory, name) for name in saved_banks}
        if saved.degraded_per_batch:
            banks["degraded"] = make_degraded_bank(splits(data, saved)[0], banks.get("negatives"), saved)
        trainer = checkpoint.resume(args.resume, data, banks)
    else:
        data = load_dataset(args.data)
        trainer = Trainer(config, settings, data, **load_banks(args.banks, settings, data))
    trainer.beam = args.beam
    return trainer


def prepare_outputs(*paths: Path) -> None:
    """Fail now, not after an epoch, if an output cannot be written; and remove the temp files that
    runs killed mid-save (kill -9, a power cut) left beside it."""
    for path in paths:
        check_writable(path)
        remove_stale_temps(path)


def train(trainer: Trainer, ckpt: Path) -> int | None:
    """Run to the end with a progress bar, checkpointing every epoch. None when done; when stopped by
    Ctrl-C or SIGTERM, the exit code that says which (a second one during a save lets it finish:
    checkpoint.save holds signals)."""
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
    return None if len(trainer.history) == s.epochs else stop.exit_code


def cli(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config, settings = new_run(args)
    state = checkpoint.read_state(args.resume)[1] if args.resume else None
    out, ckpt = outputs(args)
    prepare_outputs(out, ckpt)
    # with several usable backends, the first run times a training step on each (once per machine)
    device = choose_device(args.device, "training step", time_training_step, Cache(default_cache_dir()))
    trainer = start(args, config, settings, state)

    n_params = sum(t.numel() for t in trainer.params.values())
    s, data = trainer.settings, trainer.data
    print(f"device {device} (tinygrad {version('tinygrad')}); data {data.source}; {len(trainer.train_images)} train images")
    print(f"model {n_params:,} parameters; {s.epochs} epochs of {trainer.steps_per_epoch} steps of {s.batch_size} images")
    if trainer.step:
        print(f"resuming {ckpt} at step {trainer.step} of {trainer.total_steps}")
    compile_time = "about a minute on a CPU" if not args.beam else "with a kernel search: minutes the first time"
    print(f"the first steps compile the training graph ({compile_time})", flush=True)
    if (stopped := train(trainer, ckpt)) is not None:
        checkpoint.save(trainer, ckpt)
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with:")
        print(f"  python -m edgevit.train --resume {ckpt}")
        return stopped
    checkpoint.save_weights(trainer, out)
    print(f"saved {out} (test accuracy {100 * trainer.history[-1]['test_accuracy']:.2f}%); checkpoint {ckpt}")
    return 0


if __name__ == "__main__":
    run("edgevit.train", cli)
