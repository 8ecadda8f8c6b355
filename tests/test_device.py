import json
import os
import sys

import pytest
from conftest import run_module

from edgevit import device
from edgevit.device import MEMO, choose_device, fingerprint, measured, select_device
from edgevit.errors import EdgeViTError


class Memo:
    """The cache's recall/remember, in memory."""

    def __init__(self, text: str | None = None):
        self.stored = {} if text is None else {MEMO: text}

    def recall(self, name):
        return self.stored.get(name)

    def remember(self, name, value):
        self.stored[name] = value


def never(name):
    raise AssertionError(f"measured {name}: with one usable backend there is nothing to measure")


def test_named_backends_are_checked():
    assert select_device("cpu") == "CPU"
    with pytest.raises(EdgeViTError, match="unknown device 'TPU'"):
        select_device("TPU")
    with pytest.raises(EdgeViTError, match="device CUDA is not usable on this machine: "):
        select_device("CUDA")


def test_with_one_usable_backend_it_is_chosen_without_measuring():
    memo = Memo()
    backends = measured("batch-1", never, memo)
    assert [b.name for b in backends if b.chosen] == ["CPU"]
    assert all(b.problem for b in backends if b.name not in ("CPU", "PYTHON"))  # every other one says why not
    assert choose_device(None, "batch-1", never, memo) == "CPU"
    assert json.loads(memo.stored[MEMO]) == {fingerprint(): {"batch-1": {"CPU": None}}}


def test_the_fastest_usable_backend_wins_and_is_remembered(monkeypatch):
    monkeypatch.setattr(device, "opening_problem", lambda name: None if name in ("CPU", "CL") else "absent")
    times, calls = {"CPU": 0.5, "CL": 9.0}, []
    memo = Memo()

    def measure(name):
        calls.append(name)
        return times[name]

    assert choose_device(None, "batch-1", measure, memo) == "CPU" and sorted(calls) == ["CL", "CPU"]
    assert choose_device(None, "batch-1", measure, memo) == "CPU" and len(calls) == 2  # remembered: not measured again
    lines = [b.describe("batch-1") for b in measured("batch-1", measure, memo)]
    assert any(line.startswith("CL ") and "batch-1 9.000 ms" in line and "chosen" not in line for line in lines)
    assert any(line.startswith("CPU ") and line.endswith("chosen") for line in lines)


def test_a_remembered_backend_that_disappeared_is_dropped(monkeypatch):
    memo = Memo(json.dumps({fingerprint(): {"batch-1": {"CL": 0.1, "CPU": 0.5}}}))
    assert choose_device(None, "batch-1", never, memo) == "CPU"  # CL does not open here: a fresh choice
    assert json.loads(memo.stored[MEMO])[fingerprint()]["batch-1"] == {"CPU": None}


@pytest.mark.parametrize(
    "planted",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"x": {"batch-1": {"CPU": 1.0}}}),  # another machine's fingerprint
        "FP" + json.dumps({"batch-1": {"PYTHON": 0.001}}),  # the emulator: never a choice
        "FP" + json.dumps({"batch-1": {"NOPE": 0.001}}),
        "FP" + json.dumps({"batch-1": {"CPU": -1}}),
        "FP" + json.dumps({"batch-1": {"CPU": "fast"}}),
        "FP" + json.dumps({"batch-1": []}),
    ],
)
def test_a_damaged_or_planted_memo_is_ignored(planted):
    if planted.startswith("FP"):
        planted = json.dumps({fingerprint(): json.loads(planted[2:])})
    assert choose_device(None, "batch-1", never, Memo(planted)) == "CPU"


def test_list_devices_prints_every_backend_and_the_chosen_one(tmp_path):
    done = run_module("edgevit.cli.classify", "--list-devices", env={**os.environ, "EDGEVIT_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == device.internals.known_backends()
    assert [line.split()[0] for line in lines if line.endswith("chosen")] == ["CPU"]
    assert all(" usable" in line or "not usable: " in line for line in lines)


def test_without_clang_the_error_says_what_to_install(tmp_path):
    # no clang on PATH and an empty kernel cache: the CPU backend cannot compile anything
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_module("edgevit.train", "--epochs", "1", env=env | {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "edgevit.train: error: no usable tinygrad backend: install clang for the CPU backend "
        "(Debian/Ubuntu: sudo apt-get install -y clang), or a GPU driver (CUDA, Metal, OpenCL)"
    ]
