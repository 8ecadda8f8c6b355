import gzip
import platform
import signal
import struct
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

# A shell without job control starts a background command with Ctrl-C ignored, and every process it
# starts inherits that; the tests of what Ctrl-C does (here and in the commands they run) need it
# delivered, so a suite started that way (`bash .ci/run &`) gets Python's own handler back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
TINY_FLAGS = ["--recipe", "plain", "--dim", "16", "--depth", "1", "--heads", "2", "--mlp-dim", "32"]


def native_int8_path() -> str:
    """The path templates/int8_gemm.c takes for big products when built with the native flag here. On
    64-bit Arm the kernel's HWCAP decides (under qemu-user /proc/cpuinfo shows the host's CPU)."""
    from edgevit.export.build import ARM64_MACHINES, arm64_features
    from edgevit.measure import cpu_flags

    if platform.machine().lower() in ARM64_MACHINES:
        return "sdot (ARMv8.2 dotprod)" if "asimddp" in arm64_features() else "plain C"
    flags = cpu_flags()  # Linux clears the AMX flags where it does not manage the tile state
    if {"amx_int8", "amx_tile"} <= flags:
        return "tdpbssd (AMX-INT8)"
    return "vpdpbusd (AVX512-VNNI)" if "avx512_vnni" in flags else "plain C"


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file as the format describes it: 0, 0, type code, ndim, big-endian dims, data."""
    dtype = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    return bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(dtype).tobytes()


def write_dataset(directory: Path, n_train: int = 64, n_test: int = 32, gz: bool = True, prefix: str = "", seed: int = 0):
    """A small MNIST-format dataset of random images, in the official file layout."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        raw = idx_bytes(array)
        path = directory / (prefix + name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


def run_module(module: str, *args: str, timeout: float = 600, text: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=text, timeout=timeout, cwd=ROOT, **kwargs
    )


def step_losses(trainer, stop_after=None):
    """Every step's loss of a Trainer run (stopped after `stop_after` steps, if given)."""
    from edgevit.training.trainer import StepReport

    losses = []
    for event in trainer.run(stop=lambda: stop_after is not None and len(losses) >= stop_after):
        if isinstance(event, StepReport):
            losses.append(event.step_loss)
    return losses


@pytest.fixture(scope="session")
def mnist():
    from edgevit.data import load_dataset

    return load_dataset()


@pytest.fixture(scope="session")
def degraded(mnist):
    """Damaged test digits as whole pixels: two of every kind and severity of the held-out set
    (edgevit.robustness), preprocessed as a user's files are."""
    from edgevit.robustness import held_out_set

    cells = held_out_set(mnist.test, per_cell=2)
    return np.clip(np.rint(np.concatenate([c.images for c in cells])), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def interrupted_run(tmp_path_factory):
    """A CLI run stopped with Ctrl-C after its first steps, then resumed to the end."""
    root = tmp_path_factory.mktemp("cli-run")
    write_dataset(root / "data", n_train=64, n_test=32)
    out = root / "w.safetensors"
    args = ["--data", str(root / "data"), "--out", str(out), "--epochs", "20", "--batch-size", "16", *TINY_FLAGS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgevit.train", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    for line in proc.stderr:  # progress lines arrive once the training graph is compiled and running
        if "loss" in line:
            break
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=300)
    resumed = run_module("edgevit.train", "--resume", str(root / "w.ckpt.safetensors"), timeout=300)
    return proc.returncode, stdout, root, out, resumed


SHIPPED = ROOT / "weights" / "edgevit-mnist.safetensors"


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    from edgevit.runtime import Classifier

    return Classifier(SHIPPED, cache_dir=tmp_path_factory.mktemp("jit-cache"))


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """An untrained small model's weights file: fast to compile, same file format as the shipped one."""
    from tinygrad import Tensor
    from tinygrad.nn.state import get_state_dict

    from edgevit import weights
    from edgevit.model import ViT, ViTConfig

    Tensor.manual_seed(3)
    config = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    meta = {"config": asdict(config), "preprocess": {"mean": 0.1307, "std": 0.3081}}
    weights.save(path, get_state_dict(ViT(config)), meta)
    return path


@pytest.fixture(scope="session")
def rejecting_weights(tmp_path_factory) -> dict[str, Path]:
    """Small untrained 11-class models that answer "not a digit" to everything, one per reason:
    "class" (the 11th class's bias makes it the likeliest) and "threshold" (no digit reaches 0.99)."""
    from tinygrad import Tensor
    from tinygrad.nn.state import get_state_dict

    from edgevit import weights
    from edgevit.model import ViT, ViTConfig

    config = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32, num_classes=11)
    out = {}
    for reason, bias, threshold in (("class", 20.0, 0.0), ("threshold", 0.0, 0.99)):
        Tensor.manual_seed(3)
        model = ViT(config)
        model.head.bias = Tensor([0.0] * 10 + [bias])
        out[reason] = tmp_path_factory.mktemp("rejecting") / f"{reason}.safetensors"
        meta = {"config": asdict(config), "preprocess": {"mean": 0.1307, "std": 0.3081}}
        meta["reject"] = {"class": 10, "threshold": threshold}
        weights.save(out[reason], get_state_dict(model), meta)
    return out


def reject_rule(weights: Path):
    """The "not a digit" rule stored in a weights file."""
    from edgevit.weights import ModelFile

    return ModelFile.open(weights).reject
