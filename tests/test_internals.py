"""The one door to tinygrad's internals: what it gives on the tinygrad it was written for, and what
EdgeViT does on any other (simulated here by reporting another version)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from tinygrad import Tensor

from edgevit import internals

OTHER_VERSION = "0.99.0"
PRETEND = f"""
import importlib.metadata as md
real = md.version
md.version = lambda name: {OTHER_VERSION!r} if name == "tinygrad" else real(name)
"""


def pretend(code: str, env=None) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that believes another tinygrad version is installed."""
    return subprocess.run(
        [sys.executable, "-c", PRETEND + code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600
    )


def test_the_supported_version_is_the_installed_one():
    assert internals.AVAILABLE and internals.version_problem() is None
    assert "CPU" in internals.known_backends() and internals.known_backends()[-1] == "PYTHON"
    t = Tensor([1.0, 2.0, 3.0]).contiguous().realize()
    view = internals.host_view(t)
    view[1] = 7.0  # the view is the tensor's own memory
    assert t.tolist() == [1.0, 7.0, 3.0]


@pytest.mark.slow
def test_another_tinygrad_classifies_through_the_public_path_and_refuses_the_c_export(tiny_weights, tmp_path, mnist):
    np.save(tmp_path / "images.npy", mnist.test.images[:5].astype(np.float32))
    code = f"""
import numpy as np
from edgevit import internals
from edgevit.errors import EdgeViTError
from edgevit.export import export
from edgevit.runtime import Classifier
print(internals.version_problem())
clf = Classifier({str(tiny_weights)!r}, cache_dir={str(tmp_path / "cache")!r})
np.save({str(tmp_path / "probs.npy")!r}, clf.predict(np.load({str(tmp_path / "images.npy")!r})).probs)
print("replay", clf.backend.replay(1), "cache", clf.backend.jit.cache.enabled)
try:
    export({str(tiny_weights)!r}, {str(tmp_path / "c")!r})
except EdgeViTError as e:
    print("export:", e)
"""
    done = pretend(code)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"tinygrad {OTHER_VERSION} is installed but EdgeViT was written for tinygrad {internals.SUPPORTED}" in lines[0]
    assert lines[1] == "replay None cache False"  # no direct replay, no pickled graphs: tinygrad's own path
    assert lines[2] == f"export: the C export needs tinygrad {internals.SUPPORTED} (installed: {OTHER_VERSION}): " + (
        f"pip install tinygrad=={internals.SUPPORTED}"
    )
    from edgevit.runtime import Classifier

    expected = Classifier(tiny_weights, cache_dir=None).predict(mnist.test.images[:5].astype(np.float32)).probs
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), expected, atol=1e-6)


@pytest.mark.slow
def test_the_command_line_says_it_in_one_line_and_still_answers(tiny_weights, tmp_path):
    code = f"""
import sys
sys.argv = ["edgevit-classify", {str(ROOT / "samples" / "mnist-3.png")!r}, "--weights", {str(tiny_weights)!r}]
from edgevit.cli.classify import main
main()
"""
    done = pretend(code, env={"PATH": "/usr/bin:/bin", "EDGEVIT_CACHE": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    [warning] = done.stderr.strip().splitlines()
    assert warning.startswith(f"edgevit-classify: warning: tinygrad {OTHER_VERSION} is installed")
    assert done.stdout.startswith(str(ROOT / "samples" / "mnist-3.png") + "\t")
