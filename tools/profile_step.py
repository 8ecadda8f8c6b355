"""Where a training step's time goes: each kernel of the compiled step, timed alone, heaviest first.

    python tools/profile_step.py [--batch-size 224] [--beam 2] [--ema 0.999] [--steps 10] [--top 20]

Builds the step the trainer runs (`edgevit.trainer.Trainer`, the shipped model's shape), runs it until
the direct replay takes over, times whole steps, then each kernel launch on its own
(`CPUReplay.profile`). Kernels are named as tinygrad names them: the numbers are the loop sizes, so a
reduction over a batch's 2,720 tokens (160 images x 17) shows up as `..._2720` or `..._160_17`.
"""

from __future__ import annotations

import argparse
import time

from edgevit.cache import Cache, default_cache_dir
from edgevit.cli import run
from edgevit.data import load_dataset
from edgevit.device import select_device
from edgevit.errors import EdgeViTError
from edgevit.resources import shipped_weights
from edgevit.training.trainer import Trainer, TrainSettings
from edgevit.weights import ModelFile

WARMUP_STEPS = 4  # eager, capture, the switch to the direct replay, one more


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="profile_step.py", description="Where a training step's time goes, kernel by kernel.")
    p.add_argument("--batch-size", type=int, default=224, help="images per step (default: the shipped recipe's 224)")
    p.add_argument("--beam", type=int, default=2, help="kernel search width, as train --beam (default 2)")
    p.add_argument("--ema", type=float, default=0.999, help="weight averaging, as train --ema (default 0.999)")
    p.add_argument("--steps", type=int, default=10, help="whole steps timed")
    p.add_argument("--top", type=int, default=20, help="kernels listed")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.beam < 0:
        raise EdgeViTError("--batch-size and --steps must be at least 1, --beam at least 0")
    select_device("CPU")
    Cache(default_cache_dir())  # tinygrad's kernel-search results live in EdgeViT's private cache
    config = ModelFile.open(shipped_weights("edgevit-mnist.safetensors")).config  # the shipped model's shape
    trainer = Trainer(config, TrainSettings(batch_size=args.batch_size, ema=args.ema), load_dataset())
    trainer.compiled.beam = args.beam
    batches = [trainer.batch(0, i) for i in range(WARMUP_STEPS)]
    for x, y in batches:
        trainer.train_step(x, y)
    replay = trainer.compiled.replay
    if replay is None:
        raise EdgeViTError("this backend has no direct replay to profile")
    start = time.perf_counter()
    for i in range(args.steps):
        trainer.train_step(*batches[i % len(batches)])
    step = (time.perf_counter() - start) / args.steps
    profile = replay.profile()
    total = sum(seconds for seconds, _ in profile.values())
    print(f"step {step * 1e3:.1f} ms = {args.batch_size / step:,.0f} images/s; {len(replay.launches)} kernel launches")
    print(f"kernels timed alone: {total * 1e3:.1f} ms per step (parts of a split kernel one after another)")
    print("| ms per step | share | launches | kernel |\n|---|---|---|---|")
    for name, (seconds, count) in sorted(profile.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"| {seconds * 1e3:.2f} | {seconds / total:.1%} | {count} | `{name}` |")
    return 0


if __name__ == "__main__":
    run("profile_step.py", main)
