"""A wheel install (`pip install .`, not editable) carries the shipped weights and bundled MNIST."""

import shutil
import site
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with EdgeViT installed from a freshly built wheel; its dependencies (tinygrad,
    numpy, pillow) are borrowed from this environment so the test needs no network."""
    root = tmp_path_factory.mktemp("install")
    # built from a copy: setuptools writes its build/ folder into the source tree
    source = root / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "runs", "__pycache__", "*.egg-info"))
    dist = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = dist.glob("edgevit-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    packages = subprocess.run(
        [str(python), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    )
    # a plain path in a .pth file: this environment's packages, but not its editable edgevit (that needs its own .pth run)
    (
        root / "venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages" / "deps.pth"
    ).write_text("\n".join(site.getsitepackages()) + "\n")
    assert packages.returncode == 0
    return root


def run(venv, *cmd):
    elsewhere = venv / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(venv), "EDGEVIT_CACHE": str(venv / "cache")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)


def test_the_installed_package_is_the_wheel_not_the_checkout(venv):
    done = run(venv, venv / "venv" / "bin" / "python", "-c", "import edgevit; print(edgevit.__file__)")
    assert done.returncode == 0 and done.stdout.startswith(str(venv / "venv")), done.stdout + done.stderr


def test_classify_uses_the_installed_weights_from_another_directory(venv):
    done = run(venv, venv / "venv" / "bin" / "edgevit-classify", ROOT / "samples" / "mnist-3.png")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\t")[1].split()[0] == "3"


def test_evaluate_scores_the_shipped_weights_on_the_installed_mnist(venv):
    done = run(venv, venv / "venv" / "bin" / "python", "-m", "edgevit.evaluate", "--json")
    assert done.returncode == 0, done.stderr
    assert '"images": 10000' in done.stdout and '"accuracy": 0.99' in done.stdout
