"""tinygrad's WEBGPU backend, run for real: Dawn (the [webgpu] extra, dawn-python) on Mesa's llvmpipe,
Vulkan on the CPU (`make test-devices` installs both), against the CPU backend; and the backend
choice on a machine whose only WebGPU adapter is that CPU emulation.

Every weights scheme runs on WEBGPU here: int8 and int4 weights are unpacked from 32-bit words by
tinygrad's WGSL renderer, and llvmpipe offers shader-f16 for fp16 (an adapter without it is not
tested). The subprocesses start without WEBGPU_PATH: EdgeViT must find Dawn's library itself."""

import json
import os

import numpy as np
import pytest
from backend_runs import TRAIN, assert_same_answers, output
from backend_runs import python as run_python
from conftest import ROOT, SHIPPED, run_module

from edgevit.quantize import quantize_file

pytestmark = pytest.mark.devices

IMAGES = 256
EVALUATED = 300
TRAIN_STEPS = 8
SCHEMES = ("fp32", "int8", "w8a8", "fp16", "int4")
# losses of the same steps on WEBGPU and CPU: float32 summation order differs between the backends
# (measured: 3e-7 relative at most)
LOSS_RTOL = 1e-4
# probabilities, WEBGPU vs CPU (measured at most: fp32 1.7e-7, int8 7.8e-7, int4 6.0e-7, fp16 1.8e-7,
# w8a8 3.1e-5): float32 summation order; w8a8 rounds activations to int8, where float noise near a
# rounding boundary moves single integers, and the calibration temperature (0.54) scales logit
# differences by 1.8 (the same bounds as OpenCL's). The digits must be the same for every scheme.
PROB_ATOL = {"fp32": 1e-5, "int8": 1e-5, "int4": 1e-5, "fp16": 1e-4, "w8a8": 5e-3}
ECE_ATOL = 1e-6  # the calibration error is a mean of such probabilities
ENV = {k: v for k, v in os.environ.items() if k not in ("WEBGPU_PATH", "NODEVICE_SELECT", "XDG_RUNTIME_DIR")}

CLASSIFY = """
import json, sys
import numpy as np
from edgevit.data import load_dataset
from edgevit.errors import EdgeViTError
from edgevit.runtime import Classifier
images = load_dataset().test.images[: int(sys.argv[2])].astype(np.float32)
answers = {}
for scheme, path in json.loads(sys.argv[3]).items():
    try:
        clf = Classifier(path, cache_dir=None, device=sys.argv[1])
        answers[scheme] = {"device": clf.device, "probs": clf.predict(images).probs.tolist()}
    except EdgeViTError as e:
        answers[scheme] = {"error": str(e)}
print(json.dumps(answers))
"""


def python(code: str, *args, env=None):
    return run_python(code, *args, env=env or ENV)


@pytest.fixture(scope="module")
def answers(tmp_path_factory):
    """{device: {scheme: probabilities of the first IMAGES test images, or the error}}, one process a device."""
    out = tmp_path_factory.mktemp("schemes")
    files = {"fp32": SHIPPED, "int8": ROOT / "weights" / "edgevit-mnist-int8.safetensors"}
    files["w8a8"] = ROOT / "weights" / "edgevit-mnist-w8a8.safetensors"
    for scheme in ("fp16", "int4"):  # no calibration: cheap to make
        files[scheme] = out / f"{scheme}.safetensors"
        quantize_file(SHIPPED, files[scheme], scheme)
    paths = json.dumps({scheme: str(path) for scheme, path in files.items()})
    return {device: output(python(CLASSIFY, device, IMAGES, paths)) for device in ("CPU", "WEBGPU")}


def test_dawn_is_found_without_webgpu_path_and_opens_quietly():
    probe = "import os; from edgevit.device import problem; print(problem('WEBGPU')); print(os.environ['WEBGPU_PATH'])"
    done = python(probe)
    assert done.returncode == 0, done.stderr
    problem, path = done.stdout.splitlines()
    assert problem == "None" and "pydawn" in path and "libwebgpu_dawn" in path
    # Mesa's device-select layer would write "error: XDG_RUNTIME_DIR is invalid" twice on every open
    assert done.stderr == ""
    named = python(probe, env={**ENV, "WEBGPU_PATH": "/nonexistent/libwebgpu_dawn.so"})  # the user's own, kept
    assert named.stdout.splitlines()[1] == "/nonexistent/libwebgpu_dawn.so" and named.stdout.splitlines()[0] != "None"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_classifies_the_same_on_webgpu(answers, scheme):
    cpu, webgpu = answers["CPU"][scheme], answers["WEBGPU"][scheme]
    assert "error" not in cpu and "error" not in webgpu, (cpu.get("error"), webgpu.get("error"))
    assert webgpu["device"] == "WEBGPU"
    assert len(cpu["probs"]) == IMAGES
    assert_same_answers(cpu["probs"], webgpu["probs"], PROB_ATOL[scheme])


def test_training_steps_on_webgpu_give_the_cpu_losses():
    cpu, webgpu = (output(python(TRAIN, device, TRAIN_STEPS)) for device in ("CPU", "WEBGPU"))
    assert len(cpu) == len(webgpu) == TRAIN_STEPS
    np.testing.assert_allclose(webgpu, cpu, rtol=LOSS_RTOL)
    assert len(set(cpu)) > 1  # it really trained


def test_evaluate_on_webgpu_gives_the_cpu_answers():
    runs = [
        run_module("edgevit.evaluate", str(SHIPPED), "--limit", str(EVALUATED), "--json", "--device", d, env=ENV)
        for d in ("CPU", "WEBGPU")
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    cpu, webgpu = (json.loads(r.stdout) for r in runs)
    cpu_calibration, webgpu_calibration = cpu.pop("calibration"), webgpu.pop("calibration")
    assert webgpu == cpu and cpu["images"] == EVALUATED  # accuracy, confusion, rejection: the same images
    for key in ("ece", "ece_uncalibrated"):
        assert abs(webgpu_calibration[key] - cpu_calibration[key]) <= ECE_ATOL


def test_the_listing_shows_the_adapter_and_the_emulated_webgpu_is_never_chosen(tmp_path):
    env = {**ENV, "EDGEVIT_CACHE": str(tmp_path)}
    listed = run_module("edgevit.cli.classify", "--list-devices", env=env)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "usable on " in lines["WEBGPU"] and "llvmpipe" in lines["WEBGPU"] and "(Vulkan, CPU)" in lines["WEBGPU"]
    assert "a CPU emulation" in lines["WEBGPU"] and "never chosen automatically" in lines["WEBGPU"]
    assert lines["CPU"].endswith("chosen") and " ms" not in lines["WEBGPU"]  # not even measured
    # a memo that says WEBGPU was fastest here (planted, or from a GPU's adapter under the same fingerprint)
    key = python("from edgevit.device import fingerprint; print(fingerprint())", env=env).stdout.strip()
    (tmp_path / "backends.json").write_text(json.dumps({key: {"batch-1": {"WEBGPU": 0.01, "CPU": 0.5}}}))
    (tmp_path / "backends.json").chmod(0o600)
    chosen = python(
        "from edgevit.device import choose_device; from edgevit.runtime.jit import JOB, time_forward\n"
        "from edgevit.cache import Cache, default_cache_dir\n"
        "print(choose_device(None, JOB, time_forward, Cache(default_cache_dir())))",
        env=env,
    )
    assert chosen.returncode == 0 and chosen.stdout.strip() == "CPU", chosen.stderr


def test_classify_on_webgpu_named_gives_the_cpu_answers_for_the_samples(tmp_path):
    env = {**ENV, "EDGEVIT_CACHE": str(tmp_path)}
    # the second WEBGPU run loads the graph the first one cached
    runs = [
        run_module("edgevit.cli.classify", str(ROOT / "samples"), "--json", "--device", d, env=env)
        for d in ("CPU", "WEBGPU", "WEBGPU")
    ]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    cpu, *webgpu = ([json.loads(line) for line in r.stdout.splitlines()] for r in runs)
    assert len(cpu) == len(list((ROOT / "samples").iterdir()))
    for answers in webgpu:
        assert [r["digit"] for r in answers] == [r["digit"] for r in cpu]
        np.testing.assert_allclose([r["probs"] for r in answers], [r["probs"] for r in cpu], atol=PROB_ATOL["fp32"])
