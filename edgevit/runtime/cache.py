"""The on-disk cache of compiled graphs and C libraries: where it is, what is trusted, how it is keyed.

Compiling a graph takes seconds; a device that classifies one image per process cannot pay that every
time. Captured TinyJits are pickled (the way openpilot ships tinygrad models) and C libraries built,
keyed by (weights sha256, backend, tinygrad version, code fingerprint, batch size, search width). A
pickle and a shared library are code, so the cache is only used in a directory that only this user
can write.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pickle
import platform
import stat
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from edgevit.weights import atomic_write

CACHE_ENV = "EDGEVIT_CACHE"  # a directory, or "0" to disable the cache
FORMAT = 1
PACKAGE = Path(__file__).resolve().parent.parent
# a compiled graph depends on these sources: a change to any of them must not reuse an old one
FINGERPRINTED = ("model.py", "graph.py", "internals.py", "quant/schemes.py", "export")


@functools.cache
def code_fingerprint() -> str:
    files = []
    for name in FINGERPRINTED:
        path = PACKAGE / name
        files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".pyc") if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]


def cpu_signature() -> str:
    """The CPU model and features native code was built for: a cache shared between machines must not mix them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = sorted({line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))})
    return platform.machine() + "-" + hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]


def default_cache_dir() -> Path | None:
    env = os.environ.get(CACHE_ENV)
    if env == "0":
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgevit"


def private_dir(path: Path) -> bool:
    """Create `path` (mode 0700) if needed; True only if it is ours and nobody else can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join((*parts, version("tinygrad"), code_fingerprint())).encode()).hexdigest()[:32]


class Cache:
    """A private cache directory, or no cache at all (`directory` None, or one others could write)."""

    def __init__(self, directory: Path | str | None):
        directory = Path(directory) if directory is not None else None
        # somebody else could plant code in a directory they can write: compile instead
        self.directory = directory if directory is not None and private_dir(directory) else None

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def path(self, name: str) -> Path | None:
        return None if self.directory is None else self.directory / name

    def load_graph(self, key: str, sha256: str, probe: Callable[[object], list[float]]):
        """The TinyJit stored under `key`, or None. It must carry the weights checksum and payload
        checksum it was stored with, and reproduce, bit for bit, its probe output."""
        path = self.path(f"{key}.jit")
        if path is None or not path.is_file():
            return None
        try:
            head, _, payload = path.read_bytes().partition(b"\n")
            meta = json.loads(head)
            if meta.get("format") != FORMAT or meta.get("weights_sha256") != sha256:
                return None
            if hashlib.sha256(payload).hexdigest() != meta.get("payload_sha256"):
                return None
            jit = pickle.loads(payload)
            return jit if probe(jit) == meta.get("probe") else None
        except Exception:  # a damaged or foreign cache entry is recompiled, never trusted
            return None

    def store_graph(self, key: str, jit, sha256: str, probe_output: list[float]) -> None:
        path = self.path(f"{key}.jit")
        if path is None:
            return
        payload = pickle.dumps(jit)
        meta = {
            "format": FORMAT,
            "weights_sha256": sha256,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "probe": probe_output,
        }
        with contextlib.suppress(OSError):  # a full or read-only disk costs a recompile next time, nothing more
            atomic_write(path, lambda tmp: tmp.write_bytes(json.dumps(meta).encode() + b"\n" + payload))

    def recall(self, name: str) -> str | None:
        """A short remembered value (the chosen backend), or None."""
        path = self.path(name)
        try:
            return path.read_text().strip() if path is not None and path.is_file() else None
        except OSError:
            return None

    def remember(self, name: str, value: str) -> None:
        if (path := self.path(name)) is not None:
            with contextlib.suppress(OSError):
                atomic_write(path, lambda tmp: tmp.write_text(value))
