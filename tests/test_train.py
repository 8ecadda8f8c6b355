from conftest import run_module, write_dataset

from edgevit import weights


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
