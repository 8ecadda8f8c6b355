"""`edgevit train` (also `python -m edgevit.train`): train the ViT on bundled MNIST (or --data DIR), with a progress bar,
a checkpoint after every epoch and on Ctrl-C, and `--resume` to continue a run exactly.

A thin command line over edgevit.training: the run (`trainer`), its banks and its files (`checkpoint`).
"""

from __future__ import annotations

import argparse
import dataclasses
from importlib.metadata import version
from pathlib import Path

from edgevit.answer import DIGITS
from edgevit.cache import Cache, default_cache_dir
from edgevit.cli import ProgressBar, StopFlag, UsageError, format_duration, run
from edgevit.data import load_dataset
from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.files import OutputLock, check_writable, remove_stale_temps
from edgevit.model import ViTConfig
from edgevit.training import checkpoint
from edgevit.training.banks import banks_for
from edgevit.training.settings import DEFAULT_RECIPE, RECIPES, TrainSettings, recipe_config, recipe_settings
from edgevit.training.trainer import StepReport, Trainer, time_training_step

DEFAULT_OUT = Path("runs/edgevit-mnist.safetensors")
MODEL_FLAGS = ("patch_size", "dim", "depth", "heads", "mlp_dim", "dropout")
SETTING_FLAGS = tuple(f.name for f in dataclasses.fields(TrainSettings))


PROG = "python -m edgevit.train"


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train the EdgeViT digit classifier.")
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
        "recipe, a few hours on a CPU; quick: the same in a few minutes, for trying things; plain: the images "
        "of --data alone, ten classes, no extra banks, for other data sets)",
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
        ("validation-negatives", "hold the bank's last N non-digits out of training, to measure the rule on"),
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


def start(args: argparse.Namespace, config: ViTConfig, settings: TrainSettings, ckpt: checkpoint.Checkpoint | None) -> Trainer:
    """The trainer: resumed from --resume (read as `ckpt`), else new with `config` and `settings`.
    A run continues on the data it started with unless told otherwise."""
    if ckpt is not None:
        settings = ckpt.settings
    if settings.degraded_per_batch:
        n, m = settings.degraded_images, settings.degraded_negatives
        print(f"making {n:,} damaged digits and {m:,} damaged non-digits for training", flush=True)
    if ckpt is not None:
        data = load_dataset(args.data or ckpt.state["data"])
        trainer = checkpoint.resume(ckpt, data, banks_for(settings, data, args.banks, ckpt.state["banks"]))
    else:
        data = load_dataset(args.data)
        trainer = Trainer(config, settings, data, **banks_for(settings, data, args.banks))
    trainer.compiled.beam = args.beam  # BEAM width for compiling the step (tinygrad caches the search)
    return trainer


def prepare_outputs(*paths: Path) -> list[OutputLock]:
    """Fail now, not after an epoch, if an output cannot be written or another run is writing it;
    remove the temp files that runs killed mid-save (kill -9, a power cut) left beside it."""
    locks = []
    for path in paths:
        check_writable(path)
        locks.append(OutputLock(path))
        remove_stale_temps(path)
    return locks


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


def cli(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parser(prog).parse_args(argv)
    config, settings = new_run(args)
    resumed = checkpoint.read(args.resume) if args.resume else None
    out, ckpt = outputs(args)
    locks = prepare_outputs(out, ckpt)
    try:
        # with several usable backends, the first run times a training step on each (once per machine)
        device = choose_device(args.device, "training step", time_training_step, Cache(default_cache_dir()))
        return fit(start(args, config, settings, resumed), device, out, ckpt, args.beam, prog)
    finally:
        for lock in locks:
            lock.release()


def fit(trainer: Trainer, device: str, out: Path, ckpt: Path, beam: int, prog: str) -> int:
    """Train to the end (or to a stop) with what a person watching needs to know; the exit code."""
    n_params = sum(t.numel() for t in trainer.params.values())
    s, data = trainer.settings, trainer.data
    print(f"device {device} (tinygrad {version('tinygrad')}); data {data.source}; {len(trainer.train_split)} train images")
    print(f"model {n_params:,} parameters; {s.epochs} epochs of {trainer.steps_per_epoch} steps of {s.batch_size} images")
    if trainer.step:
        print(f"resuming {ckpt} at step {trainer.step} of {trainer.total_steps}")
    compile_time = "about a minute on a CPU" if not beam else "with a kernel search: minutes the first time"
    print(f"the first steps compile the training graph ({compile_time})", flush=True)
    if (stopped := train(trainer, ckpt)) is not None:
        checkpoint.save(trainer, ckpt)
        print(f"stopped at step {trainer.step} of {trainer.total_steps}; continue with:")
        print(f"  {prog} --resume {ckpt}")
        return stopped
    checkpoint.save_weights(trainer, out)
    print(f"saved {out} (test accuracy {100 * trainer.history[-1]['test_accuracy']:.2f}%); checkpoint {ckpt}")
    return 0


def main() -> None:
    run("edgevit.train", cli)


if __name__ == "__main__":
    main()
