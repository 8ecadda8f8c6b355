"""The C backend of the runtime: the model exported to C (edgevit.export), compiled into a shared
library for this machine, called through ctypes."""

from __future__ import annotations

import ctypes
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgevit import internals
from edgevit.errors import EdgeViTError
from edgevit.export import LIBRARY_BEAM, build_library
from edgevit.model import ViTConfig
from edgevit.runtime.cache import Cache, cache_key, cpu_signature

PARALLEL_MIN = 32  # batches at least this big are split over the cores


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load(path: Path, sha256: str):
    """`edgevit_classify_many` of the EdgeViT library at `path`, checked to come from the weights `sha256`."""
    try:
        lib = ctypes.CDLL(str(path.resolve()))
        model_id, many = lib.edgevit_model_id, lib.edgevit_classify_many
    except (OSError, AttributeError) as e:
        raise EdgeViTError(f"{path}: not a loadable EdgeViT C library ({e})") from None
    model_id.restype = ctypes.c_char_p
    if model_id().decode() != sha256:
        raise EdgeViTError(f"{path} was exported from different weights (sha256 {model_id().decode()[:12]}...)")
    many.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    many.restype = ctypes.c_int
    return many


class CModel:
    """A compiled EdgeViT library: (N, H, W) pixels -> probabilities and attention.

    The library keeps its activations in static memory, so one copy runs one image at a time. Big
    batches are split over `workers` threads, each calling its own copy of the library (dlopen of a
    copied file gives fresh statics; ctypes releases the GIL during the call): one core each.
    """

    def __init__(self, library: str | os.PathLike, sha256: str, config: ViTConfig, workers: int = 1):
        self.library, self.sha256, self.config, self.workers = Path(library), sha256, config, max(1, workers)
        self._calls = [_load(self.library, sha256)]

    def _copies(self) -> list:
        if len(self._calls) < self.workers:
            image = self.library.read_bytes()
            with tempfile.TemporaryDirectory(prefix="edgevit-lib-") as tmp:
                for i in range(len(self._calls), self.workers):
                    copy = Path(tmp) / f"worker{i}.so"
                    copy.write_bytes(image)
                    self._calls.append(_load(copy, self.sha256))  # mapped: the file may go
        return self._calls

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) pixels on [0, 255] -> probabilities (N, classes), attention (depth, N, heads, T, T)."""
        cfg = self.config
        x = np.ascontiguousarray(images, np.float32)
        probs = np.empty((len(x), cfg.num_classes), np.float32)
        attention = np.empty((len(x), cfg.depth, cfg.heads, cfg.tokens, cfg.tokens), np.float32)

        def run(call, lo: int, hi: int) -> None:
            if call(x[lo:].ctypes.data, hi - lo, probs[lo:].ctypes.data, attention[lo:].ctypes.data) != hi - lo:
                raise EdgeViTError(f"{self.library}: the library refused the batch")

        if self.workers == 1 or len(x) < PARALLEL_MIN:
            run(self._calls[0], 0, len(x))
        else:
            calls = self._copies()
            bounds = np.linspace(0, len(x), len(calls) + 1).astype(int)
            with ThreadPoolExecutor(len(calls)) as pool:
                list(pool.map(run, calls, bounds[:-1], bounds[1:]))
        return probs, attention.transpose(1, 0, 2, 3, 4)


class CLibrary:
    """The library for a weights file: one given, else the cached build, else a fresh build."""

    def __init__(self, weights_path: Path, sha256: str, cache: Cache, beam: int | None = None):
        self.weights_path, self.sha256, self.cache = weights_path, sha256, cache
        self.beam = LIBRARY_BEAM if beam is None else beam
        self.cache_hit = False

    def key(self) -> str:
        # the library is compiled with -march=native: the CPU is part of its identity
        return cache_key(self.sha256, "C", f"beam={self.beam}", cpu_signature())

    def path(self) -> Path:
        """The library's file, built into the cache (or a directory living as long as this object)."""
        internals.require("the C runtime")
        if self.cache.enabled:
            directory = self.cache.directory
        else:
            self._build_dir = tempfile.TemporaryDirectory(prefix="edgevit-c-")
            directory = Path(self._build_dir.name)
        library = directory / f"{self.key()}.so"
        if library.is_file():
            self.cache_hit = True
        else:
            build_library(self.weights_path, library, self.beam)
        return library
