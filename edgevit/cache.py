"""The on-disk cache of compiled graphs and C libraries: where it is, what is trusted, how it is keyed.

Compiling a graph takes seconds; a device that classifies one image per process cannot pay that every
time. Captured TinyJits are pickled (the way openpilot ships tinygrad models) and C libraries built,
keyed by (weights sha256, backend, tinygrad version, code fingerprint, batch size, search width).

A pickle and a shared library are code, and what protects loading them is where they are: a directory
that only this user can write (`edgevit.files.PrivateDir`: checked on its open descriptor, mode 0700,
ours; every entry opened through that descriptor without following links and checked to be ours and
writable by nobody else). The checksum and the probe stored in an entry catch damage (a torn or
truncated file, a disk error) and stale code; they are no defence against a planted entry, which is
why nobody else may write the directory at all. A C library is also checked against the sha256 it was
stored with before it is loaded, so a truncated one is rebuilt rather than crashing the process.

The cache is capped (`MAX_BYTES`): after a store, the least recently used entries go until it fits.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import pickle
import platform
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from edgevit import internals
from edgevit.device import MEMO
from edgevit.files import CACHE_ENV, TEMP_SUFFIX, PrivateDir, default_cache_dir, process_alive

__all__ = ["CACHE_ENV", "Cache", "cache_key", "code_fingerprint", "cpu_signature", "default_cache_dir"]

FORMAT = 2  # entries are a JSON header line, then the payload
PACKAGE = Path(__file__).resolve().parent
# a compiled graph depends on these sources: a change to any of them must not reuse an old one
FINGERPRINTED = ("model.py", "graph.py", "internals.py", "quant/schemes.py", "export")
MAX_BYTES = 512 * 2**20  # the whole cache; least recently used entries are evicted beyond it
MAX_ENTRY_BYTES = 256 * 2**20  # a bigger entry is not read (no graph or library of this model comes near)
MAX_MEMO_BYTES = 2**16
# what eviction neither counts nor removes: the backend memo (tiny) and tinygrad's compile cache (capped on its own)
KEPT = (MEMO, *internals.COMPILE_CACHE_FILES)


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


def cache_key(*parts: str) -> str:
    return hashlib.sha256("\0".join((*parts, version("tinygrad"), code_fingerprint())).encode()).hexdigest()[:32]


class Cache:
    """A private cache directory, or no cache at all (`directory` None, or one that is not exactly
    private to this user). `max_bytes` caps its size."""

    def __init__(self, directory: Path | str | None, max_bytes: int = MAX_BYTES):
        # whoever makes a cache is about to compile: tinygrad's own cache must be safe first
        internals.ensure_private_compile_cache()
        # somebody else could plant code in a directory they can write: compile instead
        self.private = PrivateDir.open(directory) if directory is not None else None
        self.max_bytes = max_bytes
        # why a cache that was asked for is off, for the command line to say (the library never prints)
        self.problem = None
        if directory is not None and self.private is None:
            self.problem = f"cache directory {directory} not used: {PrivateDir.refusal(directory)}"

    @property
    def enabled(self) -> bool:
        return self.private is not None

    @property
    def directory(self) -> Path | None:
        return None if self.private is None else self.private.path

    def path(self, name: str) -> Path | None:
        """Where a directory entry (the demo's built site) lives; files go through `load`/`store`."""
        return None if self.private is None else self.private.path / name

    def load(self, name: str) -> tuple[dict, bytes] | None:
        """Entry `name`'s header and payload, when it is a trusted, undamaged entry of this format."""
        if self.private is None or (raw := self.private.read(name, MAX_ENTRY_BYTES)) is None:
            return None
        head, _, payload = raw.partition(b"\n")
        try:
            meta = json.loads(head)
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None
        if hashlib.sha256(payload).hexdigest() != meta.get("payload_sha256"):
            return None  # torn, truncated or damaged on disk
        self.private.touch(name)
        return meta, payload

    def store(self, name: str, meta: dict, payload: bytes) -> None:
        """Write entry `name` (mode 0600), then evict the least recently used entries beyond the cap.
        A full or read-only disk costs a recompile next time, nothing more."""
        if self.private is None:
            return
        header = {"format": FORMAT, "payload_sha256": hashlib.sha256(payload).hexdigest()} | meta
        with contextlib.suppress(OSError):
            self.private.write(name, json.dumps(header).encode() + b"\n" + payload)
        self.evict(keep=name)

    def evict(self, keep: str | None = None) -> list[str]:
        """Remove least recently used entries until the cache fits its cap (never `keep`, the memo or
        tinygrad's compile cache), and temp files of writes that were cut off. Returns what went."""
        if self.private is None:
            return []
        entries = sorted((e for e in self.private.usage() if e[0] not in KEPT), key=lambda e: e[2])
        total, removed = sum(size for _, size, _ in entries), []
        for name, size, _ in entries:
            abandoned = name.startswith(".") and name.endswith(TEMP_SUFFIX)
            if not abandoned and (total <= self.max_bytes or name == keep):
                continue
            if abandoned and not self._abandoned(name):
                continue
            self.private.remove(name)
            total -= size
            removed.append(name)
        return removed

    @staticmethod
    def _abandoned(name: str) -> bool:
        """A temp file whose writer (the pid in its name) is gone: it will never be renamed into place."""
        pid = name.removesuffix(TEMP_SUFFIX).rsplit(".", 1)[-1]
        return not pid.isdigit() or not process_alive(int(pid))

    def load_graph(self, key: str, sha256: str, probe: Callable[[object], list[float]]):
        """The TinyJit stored under `key`, or None. It must come from these weights and reproduce, bit
        for bit, its probe output (a graph from other code or a damaged one is recompiled)."""
        entry = self.load(f"{key}.jit")
        if entry is None or entry[0].get("weights_sha256") != sha256:
            return None
        meta, payload = entry
        try:
            jit = pickle.loads(payload)  # trusted by where it is: see the module docstring
            return jit if probe(jit) == meta.get("probe") else None
        except Exception:  # an entry from an older tinygrad or EdgeViT is recompiled, never trusted
            return None

    def store_graph(self, key: str, jit, sha256: str, probe_output: list[float]) -> None:
        if self.private is not None:
            self.store(f"{key}.jit", {"weights_sha256": sha256, "probe": probe_output}, pickle.dumps(jit))

    def recall(self, name: str) -> str | None:
        """A short remembered value (the chosen backend), or None."""
        raw = self.private.read(name, MAX_MEMO_BYTES) if self.private is not None else None
        try:
            return raw.decode().strip() if raw is not None else None
        except UnicodeDecodeError:
            return None

    def remember(self, name: str, value: str) -> None:
        if self.private is not None:
            with contextlib.suppress(OSError):
                self.private.write(name, value.encode())
