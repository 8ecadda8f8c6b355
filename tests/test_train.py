import os
import signal
from types import SimpleNamespace

import pytest
from conftest import run_module, write_dataset

from edgevit import weights
from edgevit.cli import EXIT_TERMINATED, Terminated, UsageError, train
from edgevit.training.settings import recipe_settings
from edgevit.training.trainer import EpochReport, StepReport


def one_line_error(result, *needles, code=1):
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgevit.train: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_command_lines_give_one_line_errors(tmp_path):
    one_line_error(run_module("edgevit.train", "--data", str(tmp_path / "none")), "data directory not found")
    one_line_error(run_module("edgevit.train", "--dim", "30", "--heads", "4"), "dim 30 is not divisible by heads 4", code=2)
    one_line_error(run_module("edgevit.train", "--device", "NOPE"), "unknown device 'NOPE'")
    one_line_error(run_module("edgevit.train", "--resume", "x.ckpt.safetensors", "--lr", "0.1"), "drop --lr", code=2)
    one_line_error(run_module("edgevit.train", "--resume", str(tmp_path / "missing.ckpt")), "missing.ckpt: no such file")
    write_dataset(tmp_path / "data", n_train=8)
    batch = recipe_settings("shipped").batch_size
    too_small = run_module("edgevit.train", "--data", str(tmp_path / "data"))
    one_line_error(too_small, f"batch size {batch} exceeds the 8 training images")


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


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed must be a whole number from 0 to 4294967295, not -1"),
        (["--seed", str(2**40)], "--seed must be a whole number from 0 to 4294967295"),
        (["--warmup-epochs", "nan"], "--warmup-epochs must be a finite number of at least 0, not nan"),
        (["--label-smoothing", "5"], "--label-smoothing must be a finite number in [0, 1), not 5.0"),
        (["--lr", "nan"], "--lr must be a finite number above 0, not nan"),
        (["--lr", "inf"], "--lr must be a finite number above 0, not inf"),
        (["--epochs", "0"], "--epochs must be a whole number of at least 1, not 0"),
        (["--ema", "1"], "--ema must be a finite number in [0, 1), not 1.0"),
        (["--dropout", "nan"], "dropout nan is not a finite number"),
        (["--depth", "100000"], "depth 100000 is over 64"),
        (["--beam", "-1"], "--beam must be 0 (no search) or more, not -1"),
    ],
)
def test_values_argparse_lets_through_are_usage_errors(flags, message):
    """Checked before any data is read or anything compiled (a NaN learning rate trains a NaN model)."""
    with pytest.raises(UsageError) as e:
        train.new_run(train.parser().parse_args(flags))
    assert message in str(e.value)


def test_a_bad_flag_value_exits_2_and_a_bad_out_fails_before_training(tmp_path):
    one_line_error(run_module("edgevit.train", "--lr", "nan"), "--lr must be a finite number", code=2)
    (tmp_path / "file").write_text("")
    bad_out = run_module("edgevit.train", "--out", str(tmp_path / "file" / "w.safetensors"), "--device", "NOPE")
    one_line_error(bad_out, "cannot create its directory")  # found before the device, the data, the model
    os.mkfifo(tmp_path / "pipe")  # not /dev/null: a regression must not replace the real one
    one_line_error(run_module("edgevit.train", "--out", str(tmp_path / "pipe")), "not a regular file; not replacing it")


class FakeTrainer:
    """What train.train drives: events from run(), a setting and a history."""

    def __init__(self, events):
        self.events, self.settings, self.history = events, SimpleNamespace(epochs=2), []

    def run(self, stop):
        for event in self.events:
            if event == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
                continue
            yield event
            if stop():
                return


STEP = StepReport(1, 1, 2, 0.5, 0.5, 0.5, 100.0, 1.0)
EPOCH = EpochReport(1, 2, 0.5, 0.5, 0.5, 1.0, 100.0)


def test_sigterm_stops_training_like_ctrl_c_and_a_second_one_waits_for_the_save(tmp_path, monkeypatch):
    previous = signal.getsignal(signal.SIGTERM)
    # the first SIGTERM: the loop stops at the next step, and the command exits 143
    assert train.train(FakeTrainer(["SIGTERM", STEP, STEP]), tmp_path / "c") == EXIT_TERMINATED
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored

    # a second one while the end-of-epoch checkpoint is written: the file is finished, then it stops
    saved = []

    def interrupted_save(trainer, path):
        os.kill(os.getpid(), signal.SIGTERM)
        saved.append(path)

    monkeypatch.setattr(train.checkpoint, "_save", interrupted_save)
    with pytest.raises(Terminated):
        train.train(FakeTrainer(["SIGTERM", EPOCH, STEP]), tmp_path / "c")
    assert saved == [tmp_path / "c"]
