"""EdgeViT on a GPU against the CPU, as one JSON result: what tools/gpu_check.sh runs after training.

For each shipped weights file: the GPU's answers and probabilities against the CPU backend's on test
images, and images/s at batch 1 and 256 on the GPU; PyTorch on the same GPU with the same fp32
weights as the reference, checked against EdgeViT before it is timed. Usage:

    python tools/gpu_check.py --device CUDA --out runs/gpu/result.json [--trained runs/gpu/gpu.safetensors]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgevit.data import load_dataset, normalize
from edgevit.errors import EdgeViTError
from edgevit.files import atomic_write
from edgevit.reference import float_weights, torch_vit
from edgevit.resources import shipped_weights
from edgevit.runtime import Classifier

SCHEMES = ("edgevit-mnist.safetensors", "edgevit-mnist-int8.safetensors", "edgevit-mnist-w8a8.safetensors")
ROUNDS = 20  # timed calls per batch size, after one warm-up
BATCHES = (1, 256)


def gpu_name() -> str | None:
    """What nvidia-smi says about the GPU, or None on a machine without one."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def images_per_second(run, images: np.ndarray, batch: int) -> float:
    x = images[:batch]
    run(x)  # compiles the graph of this batch size
    start = time.perf_counter()
    for _ in range(ROUNDS):
        run(x)
    return ROUNDS * batch / (time.perf_counter() - start)


def against_cpu(weights: Path, device: str, images: np.ndarray, on_cpu: np.ndarray) -> dict:
    """One weights file on `device`: answers and probabilities against the CPU backend's (`on_cpu`), and speed."""
    try:
        gpu = Classifier(weights, cache_dir=None, device=device)
    except EdgeViTError as e:
        return {"weights": weights.name, "ran": False, "reason": str(e)}
    on_gpu = gpu.predict(images).probs
    return {
        "weights": weights.name,
        "ran": True,
        "images": len(images),
        "same_answers": float((on_gpu.argmax(1) == on_cpu.argmax(1)).mean()),
        "max_prob_diff": float(np.abs(on_gpu - on_cpu).max()),
        "images_per_s": {str(b): images_per_second(gpu.predict, images, b) for b in BATCHES},
    }


def pytorch_on_gpu(weights: Path, images: np.ndarray, on_cpu: np.ndarray) -> dict:
    """The same fp32 weights in PyTorch on the GPU: checked against EdgeViT's CPU answers (`on_cpu`), then timed."""
    try:
        import torch
    except ImportError:
        return {"ran": False, "reason": "PyTorch is not installed"}
    if not torch.cuda.is_available():
        return {"ran": False, "reason": f"PyTorch {torch.__version__} sees no CUDA device"}
    w, config, (mean, std) = float_weights(weights)
    model = torch_vit(w, config).cuda().eval()
    x = torch.from_numpy(normalize(images, mean, std)).cuda()

    def run(batch: np.ndarray) -> torch.Tensor:
        """The first len(batch) images, already on the GPU: the timing leaves the copy out."""
        with torch.no_grad():
            out = model(x[: len(batch)])
        torch.cuda.synchronize()
        return out

    logits = run(images).cpu().numpy()
    return {
        "ran": True,
        "torch": torch.__version__,
        "same_answers_as_edgevit_cpu": float((logits.argmax(1) == on_cpu.argmax(1)).mean()),
        "images_per_s": {str(b): images_per_second(run, images, b) for b in BATCHES},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="CUDA", help="the tinygrad backend to check (default CUDA)")
    p.add_argument("--out", type=Path, required=True, help="where to write the JSON result")
    p.add_argument("--images", type=int, default=1000, help="test images compared against the CPU (default 1000)")
    p.add_argument("--trained", type=Path, help="weights trained on the device (also checked)")
    p.add_argument("--log", type=Path, action="append", default=[], help="a log to keep in the result (repeatable)")
    args = p.parse_args()
    images = load_dataset().test.images[: args.images].astype(np.float32)
    files = [shipped_weights(name) for name in SCHEMES] + ([args.trained] if args.trained else [])
    on_cpu = {f: Classifier(f, cache_dir=None, device="CPU").predict(images).probs for f in files}
    result = {
        "device": args.device,
        "gpu": gpu_name(),
        "host": {"machine": platform.machine(), "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "edgevit": [against_cpu(Path(f), args.device, images, on_cpu[f]) for f in files],
        "pytorch": pytorch_on_gpu(files[0], images, on_cpu[files[0]]),
        "logs": {str(log): log.read_text()[-4000:] for log in args.log if log.is_file()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except EdgeViTError as e:
        sys.exit(f"gpu_check: error: {e}")
