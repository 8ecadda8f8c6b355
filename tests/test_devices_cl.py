"""OpenCL, run for real on pocl (OpenCL on the CPU), against the CPU backend; and the backend choice on
a machine where pocl is installed. `make test-devices` installs pocl visible only to these tests (the
OpenCL loader reads OCL_ICD_VENDORS), so nothing else on the machine starts using it."""

import json
import os

import numpy as np
import pytest
from backend_runs import TRAIN, assert_same_answers, output
from backend_runs import python as run_python
from conftest import ROOT, SHIPPED, run_module

from edgevit.quantize import quantize_file

pytestmark = pytest.mark.devices

VENDORS = ROOT / ".venv" / "opencl-vendors"
INT8 = ROOT / "weights" / "edgevit-mnist-int8.safetensors"
IMAGES = 200
TRAIN_STEPS = 8
# losses of the same steps on CL and CPU: float32 summation order differs between the backends
LOSS_RTOL = 1e-4
# probabilities, CL vs CPU: float32 summation order; fp16 weights round through half precision; w8a8
# rounds activations to int8, where float noise near a rounding boundary moves single integers (as in
# the C export); the calibration temperature (0.54) scales logit differences by 1.8. The digits must be
# the same for every scheme.
PROB_ATOL = {"fp32": 1e-5, "int8": 1e-5, "int4": 1e-5, "fp16": 1e-4, "w8a8": 5e-3}
ECE_ATOL = 1e-6  # the calibration error is a mean of such probabilities
WITH_POCL = {**os.environ, "OCL_ICD_VENDORS": str(VENDORS)}

CLASSIFY = """
import json, sys
import numpy as np
from edgevit.data import load_dataset
from edgevit.runtime import Classifier
clf = Classifier(sys.argv[1], cache_dir=None, device=sys.argv[2])
images = load_dataset().test.images[: int(sys.argv[3])].astype(np.float32)
print(json.dumps({"device": clf.device, "probs": clf.predict(images).probs.tolist()}))
"""


def python(code: str, *args, env=None):
    return run_python(code, *args, env=env or WITH_POCL)


@pytest.fixture(scope="module")
def schemes(tmp_path_factory):
    out = tmp_path_factory.mktemp("schemes")
    files = {"fp32": SHIPPED, "int8": INT8}
    for scheme in ("w8a8", "fp16", "int4"):
        files[scheme] = out / f"{scheme}.safetensors"
        quantize_file(SHIPPED, files[scheme], scheme, calibration=256)
    return files


def test_pocl_is_installed_for_these_tests_only():
    assert (VENDORS / "pocl.icd").is_file(), "make test-devices installs pocl (tools/setup.sh devices)"
    probe = "from edgevit.device import problem; print(problem('CL'))"
    assert python(probe, env=WITH_POCL).stdout.strip() == "None"
    assert python(probe, env={**os.environ, "OCL_ICD_VENDORS": "/nonexistent"}).stdout.strip() != "None"


@pytest.mark.parametrize("scheme", ["fp32", "int8", "w8a8", "fp16", "int4"])
def test_every_scheme_classifies_the_same_on_opencl(schemes, scheme):
    cpu, cl = (output(python(CLASSIFY, schemes[scheme], device, IMAGES)) for device in ("CPU", "CL"))
    assert cl["device"] == "CL"
    assert_same_answers(cpu["probs"], cl["probs"], PROB_ATOL[scheme])


def test_training_steps_on_opencl_give_the_cpu_losses():
    cpu, cl = (output(python(TRAIN, device, TRAIN_STEPS)) for device in ("CPU", "CL"))
    assert len(cpu) == len(cl) == TRAIN_STEPS
    np.testing.assert_allclose(cl, cpu, rtol=LOSS_RTOL)


def test_evaluate_on_opencl_gives_the_cpu_accuracy():
    runs = [
        run_module("edgevit.evaluate", str(SHIPPED), "--limit", "500", "--json", "--device", d, env=WITH_POCL)
        for d in ("CPU", "CL")
    ]
    cpu, cl = (json.loads(r.stdout) for r in runs)
    cpu_calibration, cl_calibration = cpu.pop("calibration"), cl.pop("calibration")
    assert cl == cpu and cpu["images"] == 500  # accuracy, confusion, rejection: the same images
    for key in ("ece", "ece_uncalibrated"):
        assert abs(cl_calibration[key] - cpu_calibration[key]) <= ECE_ATOL


def test_with_pocl_installed_the_measured_choice_is_still_the_cpu(tmp_path):
    env = {**WITH_POCL, "EDGEVIT_CACHE": str(tmp_path)}
    listed = run_module("edgevit.cli.classify", "--list-devices", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "usable" in lines["CL"] and " ms" in lines["CL"] and not lines["CL"].endswith("chosen")
    assert lines["CPU"].endswith("chosen")
    done = run_module("edgevit.cli.classify", str(ROOT / "samples" / "mnist-3.png"), "--json", env=env)
    assert done.returncode == 0 and json.loads(done.stdout)["digit"] == 3, done.stderr


def test_a_remembered_opencl_that_disappears_is_dropped_without_a_traceback(tmp_path):
    env = {**WITH_POCL, "EDGEVIT_CACHE": str(tmp_path)}
    plant = "import json, sys; from edgevit.device import fingerprint; print(fingerprint())"
    key = python(plant, env=env).stdout.strip()
    # as if CL had been measured fastest here (say, a GPU's OpenCL)
    (tmp_path / "backends.json").write_text(json.dumps({key: {"batch-1": {"CL": 0.01, "CPU": 0.5}}}))
    (tmp_path / "backends.json").chmod(0o600)
    still_there = run_module("edgevit.cli.classify", "--list-devices", env=env)
    assert [line.split()[0] for line in still_there.stdout.splitlines() if line.endswith("chosen")] == ["CL"]
    gone = {**env, "OCL_ICD_VENDORS": str(tmp_path / "no-vendors")}  # the driver was removed
    done = run_module("edgevit.cli.classify", str(ROOT / "samples" / "mnist-3.png"), "--json", env=gone)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["digit"] == 3
