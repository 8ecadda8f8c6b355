"""Choosing the tinygrad backend: by measurement, remembered per machine, or the one the user names.

tinygrad's own default is the first backend that opens in its fixed order (METAL, AMD, NV, CUDA, QCOM,
CL, CPU, ...), which is not the fastest: with a CPU OpenCL driver installed (pocl) it is CL, about ten
times slower than the CPU backend for this model. So with no `--device`, EdgeViT surveys the backends
that work here, times the job at hand on each (the caller says how: a batch-1 forward, a training
step) and remembers the winner with its measurements and a fingerprint of the survey. The memo is
reused while the survey is the same; a backend that disappears or appears makes a new choice.

Two usable backends are never chosen by themselves: the Python emulator, and WEBGPU where its adapter
is a CPU emulation (Mesa's llvmpipe, SwiftShader: a GPU's shaders run on the same cores the CPU
backend uses, with a GPU API's overhead on top). `--device` still runs on either.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Protocol

from tinygrad import Context, Device, Tensor

from edgevit import internals
from edgevit.errors import EdgeViTError

INSTALL_HINT = (
    "no usable tinygrad backend: install clang for the CPU backend (Debian/Ubuntu: sudo apt-get install -y clang), "
    "or a GPU driver (CUDA, Metal, OpenCL)"
)
EMULATOR = "PYTHON"  # computes correctly, about a thousand times slower: listed, never chosen by itself
MEMO = "backends.json"
MAX_REASON = 100  # characters of a backend's error shown as the reason it is not usable
CPU_EMULATION = "a CPU emulation of a GPU, slower than the CPU backend"  # why such a WEBGPU is not chosen
DAWN_HINT = "Dawn's WebGPU library is not installed: pip install 'edgevit[webgpu]'"
# Dawn falls back to its Null backend when it finds no driver: it opens, and computes nothing
NULL_ADAPTER = "Dawn found no GPU driver, only its Null backend (Debian: sudo apt-get install -y mesa-vulkan-drivers)"
# what makes a backend appear or disappear without tinygrad changing: driver environment variables...
STEERING_VARIABLES = (
    *("DEV", "OCL_ICD_VENDORS", "OPENCL_VENDOR_PATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES"),
    *("WEBGPU_BACKEND", "VK_ICD_FILENAMES", "VK_DRIVER_FILES"),  # which adapter Dawn picks
)
# ...and device files and installed drivers (GPUs, AMD's KFD, Qualcomm's KGSL, OpenCL and Vulkan ICD files)
DEVICE_FILES = (
    *("/dev/nvidia*", "/dev/kfd", "/dev/dri/renderD*", "/dev/kgsl-3d0", "/etc/OpenCL/vendors/*.icd"),
    *("/usr/share/vulkan/icd.d/*.json", "/etc/vulkan/icd.d/*.json"),
)


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Memo(Protocol):
    """Where the choice is remembered (edgevit.cache.Cache)."""

    def recall(self, name: str) -> str | None: ...
    def remember(self, name: str, value: str) -> None: ...


@dataclass(frozen=True)
class Backend:
    name: str
    problem: str | None  # why it is not usable here; None when it is
    ms: float | None = None  # the measured job, when it was measured
    chosen: bool = False
    adapter: str | None = None  # the hardware under it, where the backend says (WEBGPU's adapter)
    excluded: str | None = None  # why it is usable but never chosen automatically

    def describe(self, job: str) -> str:
        """One line: the name first, then whether it is usable (on what, or why not), its time, and `chosen`."""
        if self.problem is not None:
            state = f"not usable: {self.problem}"
        else:
            state = "usable" + (f" on {self.adapter}" if self.adapter else "")
            state += f" ({self.excluded}: never chosen automatically)" if self.excluded else ""
        timing = f"  {job} {self.ms:.3f} ms" if self.ms is not None else ""
        return f"{self.name:<8}{state}{timing}{'  chosen' if self.chosen else ''}"


def _reason(e: Exception) -> str:
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."


def problem(device: str) -> str | None:
    """Why `device` cannot compute here (one line), or None when it computes a tiny sum correctly."""
    internals.ensure_private_compile_cache()  # this may be the process's first compile
    if (why := opening_problem(device)) is not None:  # says why where computing would only say "wrong results"
        return why
    try:
        # as the default while it is checked: otherwise tinygrad opens every backend to find its own default
        with Context(DEV=device):
            if (Tensor([1.0, 2.0], device=device) * 2).tolist() == [2.0, 4.0]:
                return None
        return "computes wrong results"
    except Exception as e:  # any failure to open, compile or run means this backend is not usable here
        return _reason(e)


def opening_problem(device: str) -> str | None:
    """Why `device` does not open here, or None. Opening is what a survey can afford on every start
    (a backend that opens but cannot compute fails its measurement instead)."""
    try:
        Device[device]
    except Exception as e:  # a missing driver, library or device file: not usable here
        if device.upper().startswith("WEBGPU") and "failed to load library" in str(e) and internals.dawn_library() is None:
            return DAWN_HINT
        return _reason(e)
    adapter = internals.adapter(device)
    return NULL_ADAPTER if adapter is not None and adapter.backend == "Null" else None


def works(device: str) -> bool:
    return problem(device) is None


def surveyed(name: str) -> Backend:
    """`name` as a survey finds it: why it is not usable here (None when it is), its adapter, and why
    it is never chosen by itself (the emulator, a CPU-emulated WebGPU). The emulator is not tried: it
    works everywhere, and trying it costs more than classifying an image."""
    if name == EMULATOR:
        return Backend(name, None, excluded="the Python emulator")
    if (why := opening_problem(name)) is not None:
        return Backend(name, why)
    adapter = internals.adapter(name)
    emulated = adapter is not None and adapter.kind == "CPU"
    return Backend(name, None, adapter=str(adapter) if adapter else None, excluded=CPU_EMULATION if emulated else None)


def survey() -> list[Backend]:
    """Every backend tinygrad knows, as `surveyed` finds it."""
    return [surveyed(name) for name in internals.known_backends()]


def candidates(backends: list[Backend]) -> list[str]:
    """The backends an automatic choice picks between."""
    return [b.name for b in backends if b.problem is None and b.excluded is None]


def fingerprint() -> str:
    """What a remembered choice depends on, cheap enough to check on every start: the tinygrad version,
    the backends it knows, the environment variables that steer them and the device files and
    OpenCL drivers present. A driver installed or removed changes it, and the choice is made again."""
    signals = [version("tinygrad"), internals.known_backends()]
    signals.append({k: v for k, v in os.environ.items() if k in STEERING_VARIABLES or k.endswith("_PATH")})
    signals.append(sorted(str(p) for pattern in DEVICE_FILES for p in Path("/").glob(pattern.lstrip("/"))))
    return hashlib.sha256(json.dumps(signals).encode()).hexdigest()[:16]


def make_default(name: str) -> str:
    """Make `name` the backend new tensors go to; its canonical name."""
    internals.make_default(name)
    return Device.canonicalize(name)


def select_device(name: str) -> str:
    """The backend the user named, checked, made the default."""
    wanted = name.upper()
    if wanted.split(":")[0] not in internals.known_backends():
        known = ", ".join(sorted(internals.known_backends()))
        raise EdgeViTError(f"unknown device {name!r}; tinygrad knows {known}")
    if (why := problem(wanted)) is not None:
        hint = " (it needs clang: sudo apt-get install -y clang)" if wanted.startswith("CPU") and "clang" in why else ""
        raise EdgeViTError(f"device {wanted} is not usable on this machine: {why}{hint}")
    return make_default(wanted)


def _recall(memo: Memo, key: str, job: str) -> dict[str, float | None] | None:
    """The remembered timings of `job` on this machine as it is now, or None. A memo is data from disk:
    anything malformed, or naming a backend tinygrad does not offer, is ignored."""
    try:
        stored = json.loads(memo.recall(MEMO) or "{}")
        entry = stored.get(key, {}).get(job) if isinstance(stored, dict) and isinstance(stored.get(key), dict) else None
    except ValueError:
        return None
    known = set(internals.known_backends()) - {EMULATOR}
    if isinstance(entry, dict) and entry and set(entry) <= known and all(map(_is_timing, entry.values())):
        return entry
    return None


def _is_timing(value) -> bool:
    """None (not measured: it was the only candidate) or a positive, finite number of milliseconds."""
    if value is None:
        return True
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _remember(memo: Memo, key: str, job: str, timings: dict[str, float | None]) -> None:
    try:
        stored = json.loads(memo.recall(MEMO) or "{}")
    except ValueError:
        stored = {}
    entry = stored.get(key) if isinstance(stored, dict) and isinstance(stored.get(key), dict) else {}
    # only this fingerprint's entry is kept: the others describe a machine that is gone
    memo.remember(MEMO, json.dumps({key: entry | {job: timings}}))


def _fastest(timings: dict[str, float | None]) -> str:
    return min(timings, key=lambda name: timings[name] or 0.0)


def measured(job: str, measure: Callable[[str], float], memo: Memo) -> list[Backend]:
    """A fresh survey with each usable backend's time for `job` (remembered for this fingerprint, or
    measured now and remembered), the fastest marked chosen. A backend that fails its measurement is
    not usable."""
    backends = survey()
    usable = candidates(backends)
    if not usable:
        raise no_backend({b.name: b.problem for b in backends if b.problem})
    key = fingerprint()
    timings = _recall(memo, key, job)
    if timings is None or set(timings) - set(usable) or not set(timings):
        timings, failed = _measure_all(usable, job, measure)
        backends = [replace(b, problem=failed.get(b.name, b.problem)) for b in backends]
        _remember(memo, key, job, timings)
    best = _fastest(timings)
    return [replace(b, ms=timings.get(b.name), chosen=b.name == best) for b in backends]


def _measure_all(usable: list[str], job: str, measure: Callable[[str], float]) -> tuple[dict, dict]:
    """({backend: ms or None}, {backend: why its measurement failed}). With one candidate there is
    nothing to choose between, and nothing is measured."""
    if len(usable) == 1:
        return {usable[0]: None}, {}
    timings, failed = {}, {}
    for name in usable:
        try:
            timings[name] = float(measure(name))
        except Exception as e:  # a backend that opens but cannot run the model is not a candidate
            failed[name] = f"failed the {job} measurement: {_reason(e)}"
    if not timings:
        raise no_backend(failed)
    return timings, failed


def no_backend(reasons: dict[str, str]) -> EdgeViTError:
    """The error when nothing here computes: what to install when the CPU backend lacks its compiler
    (or is absent), else what did go wrong with it (a broken cache or disk is not a missing compiler)."""
    cpu = reasons.get("CPU")
    if cpu is None or "clang" in cpu:
        return EdgeViTError(INSTALL_HINT)
    return EdgeViTError(f"no usable tinygrad backend: the CPU backend fails here ({cpu})")


def choose_device(name: str | None, job: str, measure: Callable[[str], float], memo: Memo) -> str:
    """`name` if given; otherwise the fastest usable backend for `job`, made the default.

    The remembered choice is used while the fingerprint is the same and the backend still opens (the
    cost of a start); otherwise every backend is surveyed and the usable ones timed again.
    """
    internals.ensure_private_compile_cache()  # before the first compile, here or in `measure`
    if name:
        return select_device(name)
    timings = _recall(memo, fingerprint(), job)
    if timings is not None and candidates([surveyed(remembered := _fastest(timings))]):
        return make_default(remembered)
    chosen = next(b.name for b in measured(job, measure, memo) if b.chosen)
    return make_default(chosen)
