import itertools

import numpy as np
import pytest
from conftest import run_module, write_dataset
from tinygrad.nn.state import get_state_dict

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.train import StepReport, Trainer, TrainSettings, lr_at

TINY = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1)


def step_losses(trainer, stop_after=None):
    losses = []
    for event in trainer.run(stop=lambda: stop_after is not None and len(losses) >= stop_after):
        if isinstance(event, StepReport):
            losses.append(event.step_loss)
    return losses


def state(trainer):
    tensors = {k: v.numpy() for k, v in get_state_dict(trainer.model).items()}
    for group, (_, opt) in trainer.groups.items():
        tensors |= {f"{group}.m{i}": m.numpy() for i, m in enumerate(opt.m)}
        tensors |= {f"{group}.v{i}": v.numpy() for i, v in enumerate(opt.v)}
    return tensors


def test_lr_warms_up_then_decays_to_the_floor():
    lrs = [lr_at(s, 100, 10, 1e-3, 1e-5) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[55] == pytest.approx((1e-3 + 1e-5) / 2) and lrs[100] == pytest.approx(1e-5)


def test_a_few_steps_on_a_small_subset_lower_the_loss(mnist):
    settings = TrainSettings(epochs=15, batch_size=32, limit=64, lr=3e-3, augment=False, warmup_epochs=1)
    trainer = Trainer(ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32), settings, mnist)
    losses = step_losses(trainer)
    assert len(losses) == 30
    assert np.mean(losses[-4:]) < 0.85 * np.mean(losses[:4]), losses


def test_same_seed_same_losses_and_resume_continues_exactly(mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=16, limit=96, seed=7)
    uninterrupted = Trainer(TINY, settings, mnist)
    expected = step_losses(uninterrupted)
    assert len(expected) == 12

    first = Trainer(TINY, settings, mnist)
    head = step_losses(first, stop_after=7)
    assert head == expected[:7]  # same seed, same backend: the same losses, bit for bit
    ckpt = tmp_path / "run.ckpt.safetensors"
    first.save_checkpoint(ckpt)

    resumed = Trainer.resume(ckpt, mnist)
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
    last.save_checkpoint(ckpt)
    finisher = Trainer.resume(ckpt, mnist)
    assert step_losses(finisher) == [] and finisher.history == uninterrupted.history


def test_settings_and_data_are_checked(mnist):
    with pytest.raises(EdgeViTError, match="exceeds the 10 training images"):
        Trainer(TINY, TrainSettings(batch_size=16, limit=10), mnist).steps_per_epoch  # noqa: B018
    with pytest.raises(EdgeViTError, match="must be at least 1"):
        TrainSettings(epochs=0)


def one_line_error(result, *needles):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevit.train: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_command_lines_give_one_line_errors(tmp_path):
    one_line_error(run_module("edgevit.train", "--data", str(tmp_path / "none")), "data directory not found")
    one_line_error(run_module("edgevit.train", "--dim", "30", "--heads", "4"), "dim 30 is not divisible by heads 4")
    one_line_error(run_module("edgevit.train", "--device", "NOPE"), "unknown device 'NOPE'")
    one_line_error(run_module("edgevit.train", "--resume", "x.ckpt.safetensors", "--lr", "0.1"), "drop --lr")
    one_line_error(run_module("edgevit.train", "--resume", str(tmp_path / "missing.ckpt")), "missing.ckpt: cannot read")
    write_dataset(tmp_path / "data", n_train=8)
    one_line_error(
        run_module("edgevit.train", "--data", str(tmp_path / "data")), "batch size 128 exceeds the 8 training images"
    )


def test_ctrl_c_writes_a_checkpoint_that_resume_finishes(interrupted_run):
    code, stdout, root, out, resumed = interrupted_run
    assert code == 130
    assert "python -m edgevit.train --resume" in stdout
    assert not out.exists() or resumed.returncode == 0
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "epoch 20/20" in resumed.stdout
    header = weights.read_header(out)
    assert header.metadata["metrics"]["epochs_done"] == 20
    assert not any(k.startswith(weights.OPTIMIZER_PREFIX) for k in header.tensors)  # inference file: no optimizer
    assert sorted(p.name for p in root.iterdir() if not p.is_dir()) == ["w.ckpt.safetensors", "w.safetensors"]


def test_resume_refuses_a_weights_only_file(interrupted_run):
    out = interrupted_run[3]
    one_line_error(run_module("edgevit.train", "--resume", str(out)), "not a training checkpoint")
