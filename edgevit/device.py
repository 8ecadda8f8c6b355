"""Choosing the tinygrad backend: the best one that really computes, or the one the user names."""

from __future__ import annotations

from tinygrad import Device, Tensor

from edgevit import internals
from edgevit.errors import EdgeViTError

INSTALL_HINT = (
    "no usable tinygrad backend: install clang for the CPU backend (Debian/Ubuntu: sudo apt-get install -y clang), "
    "or a GPU driver (CUDA, Metal, OpenCL)"
)


def works(device: str) -> bool:
    """Whether `device` opens, compiles and computes a tiny sum correctly here."""
    try:
        return (Tensor([1.0, 2.0], device=device) * 2).tolist() == [2.0, 4.0]
    except Exception:  # any failure to open, compile or run means this backend is not usable here
        return False


def select_device(name: str | None = None) -> str:
    """Make `name` (or tinygrad's best available backend) the default and return its canonical name."""
    if name:
        wanted = name.upper()
        if wanted.split(":")[0] not in internals.known_backends():
            known = ", ".join(sorted(d for d in internals.known_backends() if d != "PYTHON"))
            raise EdgeViTError(f"unknown device {name!r}; tinygrad knows {known}")
        if not works(wanted):
            hint = " (it needs clang: sudo apt-get install -y clang)" if wanted.startswith("CPU") else ""
            raise EdgeViTError(f"device {wanted} is not usable on this machine{hint}")
        internals.make_default(wanted)
        return Device.canonicalize(wanted)
    try:
        chosen = Device.DEFAULT
    except RuntimeError:
        raise EdgeViTError(INSTALL_HINT) from None
    if not works(chosen):
        raise EdgeViTError(INSTALL_HINT)
    internals.make_default(chosen)
    return chosen
