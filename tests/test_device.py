import json
import os
import sys

import pytest
from conftest import run_module

from edgevit import device
from edgevit.device import DAWN_HINT, MEMO, NULL_ADAPTER, choose_device, fingerprint, measured, opening_problem, select_device
from edgevit.errors import EdgeViTError
from edgevit.internals import Adapter


@pytest.fixture(autouse=True)
def keep_the_default_backend(monkeypatch):
    """A test that lets a faked backend win must not send the rest of the suite's tensors to it."""
    monkeypatch.setattr(device.internals, "make_default", lambda name: None)


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
    # every other one says why not, or why it is never chosen (a WEBGPU on a CPU emulation, where one opens)
    assert all(b.problem or b.excluded for b in backends if b.name not in ("CPU", "PYTHON"))
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


LLVMPIPE = Adapter("llvmpipe (LLVM 15.0.6, 256 bits)", "mesa", "Vulkan", "CPU")
RTX = Adapter("NVIDIA GeForce RTX 3060", "nvidia", "Vulkan", "discrete GPU")


def webgpu_on(monkeypatch, adapter: Adapter) -> None:
    """A machine where CPU and WEBGPU open, WEBGPU on `adapter` (Dawn is not touched)."""
    monkeypatch.setattr(device, "opening_problem", lambda name: None if name in ("CPU", "WEBGPU") else "absent")
    monkeypatch.setattr(device.internals, "adapter", lambda name: adapter if name == "WEBGPU" else None)


def test_a_cpu_emulated_webgpu_is_listed_with_its_adapter_and_never_chosen(monkeypatch):
    webgpu_on(monkeypatch, LLVMPIPE)
    memo = Memo()
    assert choose_device(None, "batch-1", never, memo) == "CPU"  # the only candidate: nothing measured
    lines = {b.name: b.describe("batch-1") for b in measured("batch-1", never, memo)}
    assert lines["WEBGPU"] == (
        "WEBGPU  usable on mesa llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan, CPU) "
        "(a CPU emulation of a GPU, slower than the CPU backend: never chosen automatically)"
    )
    assert lines["CPU"].endswith("chosen")
    # a memo that says it was fastest (planted, or left from another adapter) does not make it the choice
    planted = Memo(json.dumps({fingerprint(): {"batch-1": {"WEBGPU": 0.01, "CPU": 0.5}}}))
    assert choose_device(None, "batch-1", never, planted) == "CPU"


def test_a_webgpu_on_a_real_gpu_is_measured_and_can_win(monkeypatch):
    webgpu_on(monkeypatch, RTX)
    times = {"CPU": 0.5, "WEBGPU": 0.1}
    memo = Memo()
    assert choose_device(None, "batch-1", times.get, memo) == "WEBGPU"
    lines = {b.name: b.describe("batch-1") for b in measured("batch-1", times.get, memo)}
    assert lines["WEBGPU"] == "WEBGPU  usable on NVIDIA GeForce RTX 3060 (Vulkan, discrete GPU)  batch-1 0.100 ms  chosen"


class Unopenable:
    def __getitem__(self, name):
        raise AttributeError(f"failed to load library {name.lower()}: try setting {name}_PATH?")


def test_webgpu_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(device, "Device", Unopenable())
    monkeypatch.setattr(device.internals, "dawn_library", lambda: None)
    assert opening_problem("WEBGPU") == DAWN_HINT  # not tinygrad's "try setting WEBGPU_PATH?"
    assert opening_problem("CUDA") == "failed to load library cuda: try setting CUDA_PATH?"
    # Dawn without any driver opens its Null backend, which computes nothing
    monkeypatch.setattr(device, "Device", {"WEBGPU": object()})
    monkeypatch.setattr(device.internals, "adapter", lambda name: Adapter("Null backend", "", "Null", "CPU"))
    assert opening_problem("WEBGPU") == NULL_ADAPTER


@pytest.mark.parametrize(
    ("environment", "path", "device_select"),
    [
        ({}, "/dawn/libwebgpu_dawn_x86_64.so", "1"),  # headless: Mesa's device-select layer would write errors
        ({"WEBGPU_PATH": "/mine.so"}, "/mine.so", "1"),  # the user's own library is kept
        ({"XDG_RUNTIME_DIR": "/run/user/1000"}, "/dawn/libwebgpu_dawn_x86_64.so", None),  # a desktop session
        ({"DRI_PRIME": "1"}, "/dawn/libwebgpu_dawn_x86_64.so", None),  # the user steers the layer
    ],
)
def test_dawn_is_found_without_webgpu_path(monkeypatch, environment, path, device_select):
    for name in ("WEBGPU_PATH", "XDG_RUNTIME_DIR", "NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT", "DRI_PRIME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(device.internals, "dawn_library", lambda: "/dawn/libwebgpu_dawn_x86_64.so")
    device.internals.prepare_webgpu()
    assert os.environ["WEBGPU_PATH"] == path and os.environ.get("NODEVICE_SELECT") == device_select
