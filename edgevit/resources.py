"""Where the shipped weights and the bundled MNIST live: beside the package in a checkout, or in the
installation's data directory after `pip install .` (share/edgevit/, from pyproject's data-files)."""

from __future__ import annotations

import site
import sysconfig
from pathlib import Path

from edgevit.errors import EdgeViTError

CHECKOUT = Path(__file__).resolve().parent.parent
INSTALLED = Path("share") / "edgevit"
DEFAULT_WEIGHTS = "edgevit-mnist-int8.safetensors"
FLOAT_WEIGHTS = "edgevit-mnist.safetensors"


def _roots() -> list[Path]:
    roots = [CHECKOUT]
    # a venv or system install puts data files under its prefix; `pip install --user` under the user base
    for base in (sysconfig.get_path("data"), site.USER_BASE):
        if base:
            roots.append(Path(base) / INSTALLED)
    return roots


def shipped(*parts: str) -> Path:
    """The first existing copy of a shipped file or directory (`weights/...`, `data/mnist`)."""
    for root in _roots():
        if (candidate := root.joinpath(*parts)).exists():
            return candidate
    places = ", ".join(str(r) for r in _roots())
    raise EdgeViTError(f"{'/'.join(parts)} is not installed (looked in {places}); reinstall edgevit")


def shipped_weights(name: str = DEFAULT_WEIGHTS) -> Path:
    return shipped("weights", name)


def bundled_mnist() -> Path:
    return shipped("data", "mnist")


def bundled_banks() -> Path:
    """The banks of extra images, from tools/banks.py: non-digits and presented digits."""
    return shipped("data", "negatives")
