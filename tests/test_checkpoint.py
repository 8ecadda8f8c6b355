import copy
import os
import signal

import numpy as np
import pytest
from conftest import step_losses
from tinygrad.nn.state import get_state_dict

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.training import checkpoint
from edgevit.training.trainer import Trainer, TrainSettings

TINY = ViTConfig(dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.1)


def state(trainer):
    tensors = {k: v.numpy() for k, v in get_state_dict(trainer.model).items()}
    for group, (_, opt) in trainer.optimizer.groups.items():
        tensors |= {f"{group}.m{i}": m.numpy() for i, m in enumerate(opt.m)}
        tensors |= {f"{group}.v{i}": v.numpy() for i, v in enumerate(opt.v)}
    return tensors


@pytest.mark.slow
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

    resumed = checkpoint.resume(checkpoint.read(ckpt), mnist)
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
    finisher = checkpoint.resume(checkpoint.read(ckpt), mnist)
    assert step_losses(finisher) == [] and finisher.history == uninterrupted.history


def edited(source, path, edit):
    """A copy of checkpoint `source` at `path` whose metadata `edit` changed (as a hand edit would)."""
    header = weights.read_header(source)
    metadata = copy.deepcopy(header.metadata)
    edit(metadata)
    weights.save(path, weights.read_weights(header.path).tensors(), metadata)
    return path


EDITS = {
    "step is text": (lambda m: m["train_state"].update(step="7"), "metadata train_state.step is not a whole number ('7')"),
    "step negative": (lambda m: m["train_state"].update(step=-1), "metadata train_state.step is negative"),
    "step too far": (lambda m: m["train_state"].update(step=10**6), "step 1000000 after 0 epochs does not fit"),
    "no sums": (lambda m: m["train_state"].pop("epoch_sums"), "no train_state.epoch_sums in its metadata"),
    "banks a list": (lambda m: m["train_state"].update(banks=["x"]), "metadata train_state.banks is not an object"),
    "bad counter": (lambda m: m["train_state"].update(rng_counters={"CPU": [1]}), "rng_counters.CPU is not two 32-bit"),
    "history text": (lambda m: m["metrics"].update(history="x"), "metadata metrics.history is not a list"),
    "lr nan": (lambda m: m["training"].update(lr="nan"), "saved training settings are not usable: --lr must be"),
    "depth float": (lambda m: m["config"].update(depth=1.0), "depth 1.0 is not a whole number"),
}


@pytest.fixture(scope="module")
def fresh_checkpoint(mnist, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt.safetensors"
    checkpoint.save(Trainer(TINY, TrainSettings(epochs=1, batch_size=16, limit=32), mnist), path)
    return path


@pytest.mark.parametrize("case", EDITS)
def test_a_checkpoint_with_edited_metadata_is_one_error(mnist, fresh_checkpoint, tmp_path, case):
    edit, message = EDITS[case]
    with pytest.raises(EdgeViTError) as e:
        checkpoint.resume(checkpoint.read(edited(fresh_checkpoint, tmp_path / "edited.ckpt.safetensors", edit)), mnist)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_second_signal_during_a_checkpoint_save_lets_it_finish(tmp_path, monkeypatch):
    written = []

    def interrupted(trainer, path):  # the tensors are read back, then a second Ctrl-C, then the write
        os.kill(os.getpid(), signal.SIGINT)
        written.append(path)

    monkeypatch.setattr(checkpoint, "_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(None, tmp_path / "c")
    assert written == [tmp_path / "c"]
