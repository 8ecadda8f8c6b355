"""Running EdgeViT on another tinygrad backend in a fresh process, for the device tests (OpenCL on
pocl, WebGPU on Mesa's Vulkan): each backend's environment is the process's, so each run is its own."""

import json
import subprocess
import sys

import numpy as np
from conftest import ROOT

# a few training steps of a small model on the backend argv[1]: the losses, one per step
TRAIN = """
import json, sys
from edgevit.data import load_dataset
from edgevit.device import select_device
from edgevit.model import ViTConfig
from edgevit.training.trainer import StepReport, Trainer, TrainSettings
select_device(sys.argv[1])
settings = TrainSettings(epochs=1, batch_size=32, limit=32 * int(sys.argv[2]), augment=False)
trainer = Trainer(ViTConfig(dim=32, depth=2, heads=4, mlp_dim=64), settings, load_dataset())
print(json.dumps([e.step_loss for e in trainer.run() if isinstance(e, StepReport)]))
"""


def python(code: str, *args, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=900
    )


def output(done: subprocess.CompletedProcess):
    """The JSON on the last line of a run that must have succeeded."""
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def assert_same_answers(cpu: list, other: list, atol: float) -> None:
    """Probabilities from another backend: the CPU's digits, and its numbers within `atol`."""
    cpu_probs, other_probs = np.array(cpu), np.array(other)
    assert other_probs.shape == cpu_probs.shape
    np.testing.assert_array_equal(other_probs.argmax(1), cpu_probs.argmax(1))
    np.testing.assert_allclose(other_probs, cpu_probs, atol=atol)
