"""The C backend of the runtime: the model exported to C (edgevit.export), compiled into a shared
library for this machine, called through ctypes."""

from __future__ import annotations

import ctypes
import os
import stat
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgevit import internals
from edgevit.cache import Cache, cache_key, cpu_signature
from edgevit.device import usable_cores
from edgevit.errors import EdgeViTError
from edgevit.export import LIBRARY_BEAM, build_batch_library, build_library
from edgevit.export.int8 import int8_path
from edgevit.files import OTHERS_WRITE
from edgevit.model import ViTConfig
from edgevit.runtime.backend import Prediction
from edgevit.weights import ModelFile

PARALLEL_MIN = 32  # batches at least this big are split over the cores
# and run BATCH images per call of a graph captured for them. Per image, measured (w8a8, BEAM=2, one
# core): 0.104 ms through the batch-1 graph, 0.0865 ms at 8 or 16 images a call, 0.0875 at 32
BATCH = 16
MAX_LIBRARY_BYTES = 64 * 2**20  # the fp32 model's library is under 1 MiB


ENTRY_POINTS = {  # (pixels, count, probs, attention) and (pixels, probs, attention) for BATCH images
    "edgevit_classify_many": [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p],
    "edgevit_classify_batch": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p],
}


def _load(path: Path, name: str, sha256: str, entry: str = "edgevit_classify_many"):
    """The function `entry` of the library file at `path` (a private copy of `name`), checked to come
    from the weights `sha256`: `edgevit_classify_many`, or a batch library's `edgevit_classify_batch`.
    The function keeps its library as `.library`."""
    try:
        lib = ctypes.CDLL(str(path))
        model_id, fxn = lib.edgevit_model_id, getattr(lib, entry)
    except (OSError, AttributeError) as e:
        raise EdgeViTError(f"{name}: not a loadable EdgeViT C library ({e})") from None
    model_id.restype = ctypes.c_char_p
    if model_id().decode(errors="replace") != sha256:
        raise EdgeViTError(f"{name} was exported from different weights (sha256 {model_id().decode(errors='replace')[:12]}...)")
    fxn.argtypes = ENTRY_POINTS[entry]
    fxn.restype = ctypes.c_int
    fxn.library = lib
    return fxn


def read_own_library(path: str | os.PathLike) -> bytes:
    """The bytes of a library the user names (`--c-library`): loading runs its code, so it must be a
    regular file of this user's that nobody else can write, checked on the descriptor it is read from."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise EdgeViTError(f"{path}: not a regular file")
            if st.st_uid != os.getuid() or st.st_mode & OTHERS_WRITE:
                raise EdgeViTError(
                    f"{path}: not loading a library that another user owns or can write (mode {st.st_mode & 0o777:o})"
                )
            return f.read(MAX_LIBRARY_BYTES + 1)
    except OSError as e:
        raise EdgeViTError(f"{path}: cannot read ({e.strerror})") from None


class CModel:
    """A compiled EdgeViT library: (N, H, W) pixels -> probabilities and attention.

    `image` is the library's bytes, already checked by the caller (the cache verified its sha256; a
    user's own file its owner). Each copy is written to a fresh private temp directory and loaded from
    there, so what is loaded is exactly what was checked. The library keeps its activations in static
    memory, so one copy runs one image at a time. Big batches are split over `workers` threads, BATCH
    images at a time, each calling its own copy of the library (dlopen of another file gives fresh statics; ctypes releases
    the GIL during the call): one core each. Given `batch_image` (a callable: the batch library is
    built the first time a big batch comes), they run BATCH images per call through it.
    """

    def __init__(
        self,
        image: bytes,
        name: str,
        sha256: str,
        config: ViTConfig,
        workers: int = 1,
        batch_image: Callable[[], bytes] | None = None,
    ):
        self.library, self.sha256, self.config, self.workers = name, sha256, config, max(1, workers)
        self._images = {"edgevit_classify_many": _checked_size(image, name)}
        self._batch_image = batch_image  # builds the batch library; None: none, or its build failed
        self._calls: dict[str, list] = {"edgevit_classify_many": [], "edgevit_classify_batch": []}
        self._pool: ThreadPoolExecutor | None = None  # made by the first batch split over the workers
        self._copies("edgevit_classify_many", 1)

    @property
    def int8_path(self) -> str | None:
        """The instructions the int8 products of big batches run on in this process (templates/
        int8_gemm.c chooses at run time: AMX, VNNI, sdot or plain C), or None: weights without them."""
        lib = self._calls["edgevit_classify_many"][0].library
        return int8_path(lib) if hasattr(lib, "edgevit_int8_path") else None

    def _copies(self, entry: str, count: int) -> list:
        """`count` loaded copies of the library with `entry` (one a thread)."""
        calls = self._calls[entry]
        if len(calls) < count:
            if entry not in self._images:
                self._images[entry] = _checked_size(self._batch_image(), f"{self.library} (its batch library)")
            try:
                with tempfile.TemporaryDirectory(prefix="edgevit-lib-") as tmp:  # mode 0700, ours
                    for i in range(len(calls), count):
                        copy = Path(tmp) / f"worker{i}.so"
                        copy.write_bytes(self._images[entry])
                        calls.append(_load(copy, self.library, self.sha256, entry))  # mapped: the file may go
            except OSError as e:  # a full or read-only $TMPDIR
                raise EdgeViTError(f"cannot copy {self.library} to {tempfile.gettempdir()} ({e.strerror or e})") from None
        return calls

    def _batch_library_ready(self) -> bool:
        """Whether the batch library is loaded, one copy a worker: built on the first call that needs it.
        It only makes big batches faster, so a build that fails (no compiler for this machine, a kernel
        search tinygrad refuses) leaves them to the batch-1 library, and is not tried again."""
        if self._batch_image is not None and "edgevit_classify_batch" not in self._images:
            try:
                self._copies("edgevit_classify_batch", self.workers)
            except Exception:  # any failure here only costs speed
                self._batch_image = None
        return len(self._calls["edgevit_classify_batch"]) >= self.workers

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) pixels on [0, 255] -> probabilities (N, classes), attention (depth, N, heads, T, T)."""
        cfg = self.config
        x = np.ascontiguousarray(images, np.float32)
        probs = np.empty((len(x), cfg.num_classes), np.float32)
        attention = np.empty((len(x), cfg.depth, cfg.heads, cfg.tokens, cfg.tokens), np.float32)

        batched = len(x) >= PARALLEL_MIN and self._batch_library_ready()
        # BATCH images a task, each worker taking the next one free: a core slowed by something else
        # does less of the work instead of holding up the call
        tasks = iter(range(0, len(x), BATCH))

        def run(worker: int) -> None:
            for start in tasks:
                count = min(BATCH, len(x) - start)
                if batched and count == BATCH:
                    done = self._calls["edgevit_classify_batch"][worker](
                        x[start:].ctypes.data, probs[start:].ctypes.data, attention[start:].ctypes.data
                    )
                else:
                    many = self._calls["edgevit_classify_many"][worker]
                    done = many(x[start:].ctypes.data, count, probs[start:].ctypes.data, attention[start:].ctypes.data)
                if done != count:
                    raise EdgeViTError(f"{self.library}: the library refused the batch")

        if len(x) < PARALLEL_MIN:
            run(0)
        else:
            self._copies("edgevit_classify_many", self.workers)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="edgevit-c")
            list(self._pool.map(run, range(self.workers)))
        return probs, attention.transpose(1, 0, 2, 3, 4)


def _checked_size(image: bytes, name: str) -> bytes:
    if len(image) > MAX_LIBRARY_BYTES:
        raise EdgeViTError(f"{name}: over {MAX_LIBRARY_BYTES // 2**20} MiB: not an EdgeViT C library")
    return image


class CLibrary:
    """The library built for a weights file on this machine: cached, or built now. `batch` > 1: the
    batch library, a graph for that many images at once."""

    def __init__(self, model: ModelFile, cache: Cache, beam: int | None = None, batch: int = 1):
        self.model, self.cache, self.batch = model, cache, batch
        self.beam = LIBRARY_BEAM if beam is None else beam
        self.cache_hit = False

    def key(self) -> str:
        # the library is compiled with -march=native: the CPU is part of its identity
        return cache_key(
            self.model.sha256, "C", f"beam={self.beam}", cpu_signature(), *([f"batch={self.batch}"] if self.batch > 1 else [])
        )

    def image(self) -> bytes:
        """The library's bytes: the cached build (its sha256 checked before anything is loaded), else a
        fresh build, stored in the cache."""
        internals.require("the C runtime")
        name = f"{self.key()}.lib"
        entry = self.cache.load(name)
        if entry is not None and entry[0].get("weights_sha256") == self.model.sha256:
            self.cache_hit = True
            return entry[1]
        try:
            with tempfile.TemporaryDirectory(prefix="edgevit-c-") as tmp:
                target = Path(tmp) / "libedgevit.so"
                if self.batch > 1:
                    build_batch_library(self.model, target, self.batch, self.beam)
                else:
                    build_library(self.model, target, self.beam)
                image = target.read_bytes()
        except OSError as e:  # a full or read-only $TMPDIR
            raise EdgeViTError(f"cannot build the C library in {tempfile.gettempdir()} ({e.strerror or e})") from None
        self.cache.store(name, {"weights_sha256": self.model.sha256}, image)
        return image


class CBackend:
    """The C runtime: `c_library` (the user's own build), else the cached build for these weights,
    else a fresh one, made on the first prediction."""

    device = "C"

    def __init__(self, model: ModelFile, cache: Cache, beam: int | None = None, c_library: str | os.PathLike | None = None):
        self.model, self.c_library = model, Path(c_library) if c_library is not None else None
        self.library = CLibrary(model, cache, beam)
        self.batch_library = CLibrary(model, cache, beam, BATCH)
        self._model: CModel | None = None

    @property
    def cache_hits(self) -> list[int]:
        return [0] if self.library.cache_hit else []

    def compiled(self) -> CModel:
        if self._model is None:
            m = self.model
            if self.c_library is not None:  # the user's own build: no batch library
                image = read_own_library(self.c_library)
                self._model = CModel(image, str(self.c_library), m.sha256, m.config, usable_cores())
            else:
                image, batch = self.library.image(), self.batch_library.image
                self._model = CModel(image, "the cached C library", m.sha256, m.config, usable_cores(), batch)
        return self._model

    def predict(self, images: np.ndarray) -> Prediction:
        return Prediction(*self.compiled()(images))
