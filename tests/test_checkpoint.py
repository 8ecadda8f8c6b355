import numpy as np
from conftest import step_losses
from tinygrad.nn.state import get_state_dict

from edgevit import checkpoint
from edgevit.model import ViTConfig
from edgevit.trainer import Trainer, TrainSettings

TINY = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1)


def state(trainer):
    tensors = {k: v.numpy() for k, v in get_state_dict(trainer.model).items()}
    for group, (_, opt) in trainer.groups.items():
        tensors |= {f"{group}.m{i}": m.numpy() for i, m in enumerate(opt.m)}
        tensors |= {f"{group}.v{i}": v.numpy() for i, v in enumerate(opt.v)}
    return tensors


def test_same_seed_same_losses_and_resume_continues_exactly(mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=16, limit=96, seed=7, ema=0.9)  # the average is state too
    uninterrupted = Trainer(TINY, settings, mnist)
    expected = step_losses(uninterrupted)
    assert len(expected) == 12

    first = Trainer(TINY, settings, mnist)
    head = step_losses(first, stop_after=7)
    assert head == expected[:7]  # same seed, same backend: the same losses, bit for bit
    ckpt = tmp_path / "run.ckpt.safetensors"
    checkpoint.save(first, ckpt)

    resumed = checkpoint.resume(ckpt, mnist)
    assert resumed.step == 7
    saved, restored = state(first), state(resumed)
    assert all(np.array_equal(saved[k], restored[k]) for k in saved)  # the checkpoint round trip is exact
    assert head + step_losses(resumed) == expected
    final, reference = state(resumed), state(uninterrupted)
    assert all(np.array_equal(final[k], reference[k]) for k in final)
    assert resumed.history == uninterrupted.history

    # stopped after the last step but before the final evaluation: resume still evaluates and finishes
    last = Trainer(TINY, settings, mnist)
    assert step_losses(last, stop_after=12) == expected and len(last.history) == 1
    checkpoint.save(last, ckpt)
    finisher = checkpoint.resume(ckpt, mnist)
    assert step_losses(finisher) == [] and finisher.history == uninterrupted.history
