"""Compiling exported C on this machine: the shared library the C runtime loads, and stack measurement."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from edgevit.errors import EdgeViTError

# the library is built for this machine from kernels BEAM-searched on it; BEAM times candidates as
# tinygrad compiles them (clang -O2 for this CPU, -fno-math-errno), so the library is built the same
# way. Measured per image (fp32, x86-64): 313 us untuned, 162 us with BEAM=2 and -march=native, and
# about 3% less with -fno-math-errno (the model never reads errno).
LIBRARY_CFLAGS = ("-std=c99", "-O2", "-fno-math-errno", "-fPIC", "-shared")
STACK_CFLAGS = ("-std=c99", "-O2", "-fstack-usage", "-c")
# Arm compilers tune for the CPU they run on with -mcpu=native: Debian's clang on arm64 (a Raspberry
# Pi) refuses -march=native outright
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l")
ARM64_MACHINES = ("aarch64", "arm64")
# clang 14 (Debian 12's) takes -mcpu=native's CPU from /proc/cpuinfo: a CPU part it does not know, or a
# /proc/cpuinfo that is not Arm's (qemu-user 7.2 shows the host's), leaves plain ARMv8.0, and the w8a8
# products miss sdot. The kernel's feature bits say what the CPU runs: dotprod is added from them.
AT_HWCAP = 16
HWCAP_ASIMDDP = 1 << 20  # arm64's asm/hwcap.h


def arm64_features() -> set[str]:
    """The features of this 64-bit Arm CPU that native_flag adds, from the kernel's HWCAP (none on
    another machine, whose HWCAP bits mean other things)."""
    if platform.machine().lower() not in ARM64_MACHINES:
        return set()
    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):  # not glibc or musl: -mcpu=native alone
        return set()
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return {"asimddp"} if getauxval(AT_HWCAP) & HWCAP_ASIMDDP else set()


def native_flag(machine: str | None = None, features: set[str] | None = None) -> str:
    """The flag that tunes C for this machine's CPU (its vector and dot-product instructions);
    `features` (a 64-bit Arm CPU's, default this one's) say whether to add dotprod."""
    machine = (machine or platform.machine()).lower()
    if machine not in ARM_MACHINES:
        return "-march=native"
    if machine in ARM64_MACHINES and "asimddp" in (arm64_features() if features is None else features):
        return "-mcpu=native+dotprod"
    return "-mcpu=native"


def find_compiler() -> str:
    """$CC, else clang (tinygrad's CPU backend needs it anyway; its code was the faster here), cc or gcc."""
    for candidate in (os.environ.get("CC"), "clang", "cc", "gcc"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    raise EdgeViTError("the C runtime needs a C compiler: install gcc or clang, or set $CC")


def run_compiler(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeViTError(f"compiling C for this machine failed ({' '.join(cmd[:2])} ...): {last}")


def compile_library(source: Path, target: Path) -> None:
    """`source` (an exported edgevit_model.c) -> the shared library `target`, tuned for this CPU."""
    run_compiler([*find_compiler().split(), *LIBRARY_CFLAGS, native_flag(), "-o", str(target), str(source), "-lm"])


def stack_bytes(source: Path) -> int | None:
    """The deepest stack an entry point of `source` uses, measured by this machine's compiler.

    Entry point -> edgevit_run -> edgevit_forward -> the hungriest kernel: the sum of their frames
    from `-fstack-usage` (kernels call nothing). None when no compiler here reports it.
    """
    try:
        compiler = find_compiler().split()
    except EdgeViTError:
        return None
    with tempfile.TemporaryDirectory(prefix="edgevit-stack-") as tmp:
        obj = Path(tmp) / "model.o"
        done = subprocess.run([*compiler, *STACK_CFLAGS, "-o", str(obj), str(source)], capture_output=True, cwd=tmp)
        usage = obj.with_suffix(".su")
        if done.returncode != 0 or not usage.is_file():
            return None
        frames = {}
        for line in usage.read_text().splitlines():
            # "edgevit_model.c:12:13:edgevit_forward\t32\tstatic"
            match = re.match(r".*:(\w+)\s+(\d+)\s", line + " ")
            if match:
                frames[match.group(1)] = int(match.group(2))

    def frame(name: str) -> int:
        return frames.get(name, 0)  # an inlined function has no frame of its own

    entry = max(frame("edgevit_classify_many") + frame("edgevit_classify_pixels"), frame("edgevit_classify"))
    kernel = max((size for name, size in frames.items() if re.match(r"edgevit_k\d+_", name)), default=0)
    return entry + frame("edgevit_run") + frame("edgevit_forward") + kernel
