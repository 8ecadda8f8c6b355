import os
import sys

import pytest
from conftest import run_module

from edgevit.device import select_device
from edgevit.errors import EdgeViTError


def test_default_and_named_cpu_backend_work():
    assert select_device("cpu") == "CPU"
    assert select_device() == "CPU"


def test_unknown_and_unavailable_backends_are_named():
    with pytest.raises(EdgeViTError, match="unknown device 'TPU'"):
        select_device("TPU")


def test_without_clang_the_error_says_what_to_install(tmp_path):
    # no clang on PATH and an empty kernel cache: the CPU backend cannot compile anything
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    result = run_module("edgevit.train", "--epochs", "1", env=env | {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "edgevit.train: error: no usable tinygrad backend: install clang for the CPU backend "
        "(Debian/Ubuntu: sudo apt-get install -y clang), or a GPU driver (CUDA, Metal, OpenCL)"
    ]
