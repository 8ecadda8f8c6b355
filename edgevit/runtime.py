"""Running a model: TinyJit-compiled forward passes, compiled once and cached on disk.

Compiling the graph takes seconds; a device that classifies one image per process cannot pay that
every time. `Classifier` pickles each captured JIT (the way openpilot ships tinygrad models) under
the user's cache directory, keyed by (weights sha256, backend, tinygrad version, code fingerprint,
batch size). A pickle is code, so a cache entry is only loaded from a directory that only this user
can write, and only when its recorded weights checksum, its payload checksum and the output of a
fixed probe input all match.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import os
import pickle
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.data import normalize
from edgevit.errors import EdgeViTError

CACHE_ENV = "EDGEVIT_CACHE"  # a directory, or "0" to disable the cache
CACHE_FORMAT = 1
SMALL_BATCH = 8  # fewer images than this run one by one through the batch-1 graph
PARALLEL_MIN = 32  # the C runtime splits batches at least this big over the cores
BATCH = 64
BUFFER_NUMBERS = 2**48
# the graph depends on these sources: a change to any of them must not reuse an old compiled graph
FINGERPRINTED = ("model.py", "runtime.py", "export.py")
RUNTIMES = ("tinygrad", "c")


@functools.cache
def code_fingerprint() -> str:
    here = Path(__file__).resolve().parent
    return hashlib.sha256(b"".join((here / name).read_bytes() for name in FINGERPRINTED)).hexdigest()[:16]


def default_cache_dir() -> Path | None:
    env = os.environ.get(CACHE_ENV)
    if env == "0":
        return None
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgevit"


def cpu_signature() -> str:
    """The CPU model and features native code was built for: a cache shared between machines must not mix them."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = sorted({line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))})
    return platform.machine() + "-" + hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]


def private_dir(path: Path) -> bool:
    """Create `path` (mode 0700) if needed; True only if it is ours and nobody else can write it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def padded_batches(images: np.ndarray, batch: int, mean: float, std: float) -> Iterator[tuple[np.ndarray, int]]:
    """Normalised (batch, 1, H, W) arrays and how many of their images are real.

    A compiled graph has one fixed shape, so a short last batch is padded with zeros.
    """
    for i in range(0, len(images), batch):
        x = normalize(images[i : i + batch], mean, std)
        n = len(x)
        if n < batch:
            x = np.concatenate([x, np.zeros((batch - n, *x.shape[1:]), np.float32)])
        yield x, n


def probe_input(config, batch: int) -> np.ndarray:
    """A fixed normalised (batch, 1, H, W) input: what a graph computes for it identifies the graph."""
    size = config.image_size
    return np.linspace(-1, 3, batch * size * size, dtype=np.float32).reshape(batch, 1, size, size)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_view(t) -> np.ndarray | None:
    """A numpy array over a realized tensor's own memory, on backends whose memory the host shares
    (CPU); None elsewhere. Reading and writing it skips tinygrad's scheduler, which costs
    milliseconds per call next to a graph that runs in a few."""
    from tinygrad import Device
    from tinygrad.dtype import _to_np_dtype

    try:
        buf = t.uop.base.buffer
        device = Device[buf.device]
        device.synchronize()
        memory = device.allocator._as_buffer(buf.get_buf(buf.device))
    except (AttributeError, NotImplementedError):
        return None
    return np.frombuffer(memory, _to_np_dtype(buf.dtype), buf.size).reshape(t.shape)


class CPUReplay:
    """A captured graph on tinygrad's CPU backend, replayed as direct calls into its compiled kernels.

    tinygrad's own replay (`engine/realize.py` `exec_kernel`) resolves every argument's buffer, tracks
    stats and converts every address again on each call: about 30 us per kernel, and the batch-1 graph
    has 73 kernels. Every address in a captured graph is fixed (weights, planned scratch, our reused
    input and the outputs), so they are resolved once here and each call is one ctypes call per
    kernel launch. `build` returns None for anything it does not recognise (another backend, launch
    variables) and when a replay does not reproduce tinygrad's output bit for bit.
    """

    def __init__(self, launches: list, jit, outputs: tuple[np.ndarray, ...]):
        # views of the graph's output buffers, whose addresses are as fixed as the rest; the jit owns them
        self._launches, self._jit, self._outputs = launches, jit, outputs
        # a kernel tinygrad split over cores is one launch per core: they run at the same time here,
        # where tinygrad's own replay runs them one after another on one core
        threads = max(len(per_core) for _, per_core in launches)
        self._pool = None
        if threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(threads - 1)

    @classmethod
    def build(cls, jit, input_tensor, expected: tuple[np.ndarray, ...]) -> CPUReplay | None:
        import ctypes

        from tinygrad.engine.realize import get_runtime, resolve_params
        from tinygrad.uop.ops import Ops

        launches = []
        try:
            for call in jit.captured.linear.src:
                program = call.src[0]
                if program.op is not Ops.PROGRAM or any(v.expr != "core_id" for v in program.arg.vars):
                    return None
                resolved = resolve_params(call, (input_tensor.uop.base,))
                bufs = [resolved[i].buffer.ensure_allocated() for i in program.arg.globals]
                runtime = get_runtime(bufs[0].device, program)
                if type(runtime).__name__ != "CPUProgram" or runtime.lvp:
                    return None
                (threads, *_), _ = program.arg.launch_dims({})
                args = [b.get_buf(b.device).va_addr for b in bufs] + [0] * len(program.arg.vars)
                per_core = []
                for tid in range(threads):  # what CPUProgram.__call__ does for a kernel split over cores
                    if "core_id" in runtime.runtimevars:
                        args[runtime.runtimevars["core_id"]] = tid
                    per_core.append(tuple(ctypes.c_uint64(a) for a in args))
                launches.append((runtime.fxn, per_core))
        except (AttributeError, KeyError, TypeError, ValueError):
            return None
        outputs = tuple(host_view(t) for t in jit.captured.ret)
        if any(v is None for v in outputs):
            return None
        replay = cls(launches, jit, outputs)
        return replay if all(np.array_equal(a, b) for a, b in zip(replay(), expected, strict=True)) else None

    def __call__(self) -> tuple[np.ndarray, ...]:
        for fxn, per_core in self._launches:
            if len(per_core) == 1:
                fxn(*per_core[0])
                continue
            others = [self._pool.submit(fxn, *args) for args in per_core[1:]]  # ctypes releases the GIL
            fxn(*per_core[0])
            for done in others:
                done.result()
        return tuple(v.copy() for v in self._outputs)


def inference_graph(model):
    """The function every runtime compiles: normalised (B, 1, H, W) -> (probabilities, attention)."""
    from tinygrad import Tensor

    def forward(x):
        logits, attention = model.forward(x)
        probs = logits.softmax(-1)
        # one realize for both: realizing them one at a time would run the whole network twice
        Tensor.realize(probs, attention)
        return probs, attention

    return forward


@dataclass
class Prediction:
    probs: np.ndarray  # (N, classes)
    attention: np.ndarray  # (depth, N, heads, tokens, tokens)


def _load_c_library(path: Path, sha256: str):
    """`classify_many` of the EdgeViT library at `path`, checked to come from the weights `sha256`."""
    import ctypes

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
    """The model exported to C (edgevit.export), compiled into a shared library, called through ctypes.

    The library keeps its activations in static memory, so one copy runs one image at a time. Big
    batches are split over `workers` threads, each calling its own copy of the library (dlopen of a
    copied file gives fresh statics; ctypes releases the GIL during the call): one core each.
    """

    def __init__(self, library: str | os.PathLike, sha256: str, config, workers: int = 1):
        self.library, self.sha256, self.config, self.workers = Path(library), sha256, config, max(1, workers)
        self._calls = [_load_c_library(self.library, sha256)]

    def _copies(self) -> list:
        import tempfile

        if len(self._calls) < self.workers:
            image = self.library.read_bytes()
            with tempfile.TemporaryDirectory(prefix="edgevit-lib-") as tmp:
                for i in range(len(self._calls), self.workers):
                    copy = Path(tmp) / f"worker{i}.so"
                    copy.write_bytes(image)
                    self._calls.append(_load_c_library(copy, self.sha256))  # mapped: the file may go
        return self._calls

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, H, W) pixels on [0, 255] -> probabilities (N, classes), attention (depth, N, heads, T, T)."""
        cfg = self.config
        x = np.ascontiguousarray(images, np.float32)
        probs = np.empty((len(x), cfg.num_classes), np.float32)
        attention = np.empty((len(x), cfg.depth, cfg.heads, cfg.tokens, cfg.tokens), np.float32)

        def run(call, lo: int, hi: int) -> None:
            call(x[lo:].ctypes.data, hi - lo, probs[lo:].ctypes.data, attention[lo:].ctypes.data)

        if self.workers == 1 or len(x) < PARALLEL_MIN:
            run(self._calls[0], 0, len(x))
        else:
            from concurrent.futures import ThreadPoolExecutor

            calls = self._copies()
            bounds = np.linspace(0, len(x), len(calls) + 1).astype(int)
            with ThreadPoolExecutor(len(calls)) as pool:
                list(pool.map(run, calls, bounds[:-1], bounds[1:]))
        return probs, attention.transpose(1, 0, 2, 3, 4)


class Classifier:
    """A weights file, ready to classify 28x28 images (float, [0, 255], white ink on black).

    `runtime` "tinygrad" runs the JIT-compiled graph on a tinygrad backend; "c" runs the same graph
    exported to C (built for this machine on first use and cached, or `c_library` if given).
    `beam` > 0 BEAM-searches the kernels when a graph is compiled or exported (the C runtime's default
    is export.LIBRARY_BEAM); the cache keeps the result.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        cache_dir: Path | str | None = "default",
        device: str | None = None,
        runtime: str = "tinygrad",
        c_library: str | os.PathLike | None = None,
        beam: int | None = None,
    ):
        from edgevit.weights import file_sha256, open_model_file

        if runtime not in RUNTIMES:
            raise EdgeViTError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        if runtime == "c" and device:
            raise EdgeViTError("--device chooses a tinygrad backend; the C runtime runs on this CPU")
        self.path = Path(weights_path)
        self.header, self.config, self.scheme, (self.mean, self.std) = open_model_file(self.path)
        self.sha256 = file_sha256(self.path)
        self.cache_dir = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
        if self.cache_dir is not None and not private_dir(self.cache_dir):
            self.cache_dir = None  # somebody else could plant code there: compile instead
        if beam is not None and beam < 0:
            raise EdgeViTError(f"--beam must be 0 (no search) or more, not {beam}")
        self.runtime, self.c_library, self.beam = runtime, c_library, beam
        self.device = "C" if runtime == "c" else self._choose_device(device)
        self._c_model: CModel | None = None
        self._model = None
        self._jits: dict[int, object] = {}
        self._inputs: dict[int, tuple] = {}  # batch -> (input tensor, its host view or None)
        self._replays: dict[int, CPUReplay | None] = {}  # batch -> direct replay, where the backend allows
        self.cache_hits: list[int] = []  # batch sizes whose graph came from the cache

    def _choose_device(self, name: str | None) -> str:
        """The named backend, else the one found best on this machine before, else a fresh search.

        Searching imports and opens every backend tinygrad knows, which costs more than classifying
        an image; the cache directory remembers the answer.
        """
        from tinygrad.helpers import DEV

        from edgevit.device import select_device

        if name:
            return select_device(name)
        memo = self.cache_dir / "default-device" if self.cache_dir is not None else None
        if memo is not None and memo.is_file():
            remembered = memo.read_text().strip()
            if remembered.isalnum():
                DEV.value = remembered
                return remembered
        chosen = select_device()
        if memo is not None:
            with contextlib.suppress(OSError):
                memo.write_text(chosen)
        return chosen

    # --- the model and its compiled graphs ------------------------------------------------------
    @property
    def model(self):
        """The ViT with the file's weights loaded (only needed when a graph must be compiled)."""
        if self._model is None:
            from tinygrad.uop.ops import UOp

            from edgevit.model import inference_layout
            from edgevit.weights import build_model

            # tinygrad numbers buffers with a per-process counter, and unpickling a graph reuses any live
            # buffer with the same number: a cached graph's buffers must come from a range no other
            # process will be using, or loading it would silently wire in the wrong weights
            UOp.unique_num = itertools.count(BUFFER_NUMBERS + secrets.randbelow(BUFFER_NUMBERS))
            self._model = inference_layout(build_model(self.header, self.config, self.scheme))
        return self._model

    def cache_key(self, batch: int) -> str:
        from importlib.metadata import version

        parts = [self.sha256, self.device, version("tinygrad"), code_fingerprint(), str(batch), f"beam={self.beam}"]
        if self.runtime == "c":
            parts.append(cpu_signature())  # the library is compiled with -march=native
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def _cache_path(self, batch: int) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.cache_key(batch)}-b{batch}.jit"

    def _load_cached(self, batch: int):
        path = self._cache_path(batch)
        if path is None or not path.is_file():
            return None
        try:
            raw = path.read_bytes()
            head, _, payload = raw.partition(b"\n")
            meta = json.loads(head)
            if meta.get("format") != CACHE_FORMAT or meta.get("weights_sha256") != self.sha256:
                return None
            if hashlib.sha256(payload).hexdigest() != meta.get("payload_sha256"):
                return None
            jit = pickle.loads(payload)
            # the graph must reproduce, bit for bit, what it computed when it was stored
            if self._probe(jit, batch) != meta.get("probe"):
                return None
            return jit
        except Exception:  # a damaged or foreign cache entry is recompiled, never trusted
            return None

    def _probe(self, jit, batch: int) -> list[float]:
        from tinygrad import Tensor

        probs, _ = jit(Tensor(probe_input(self.config, batch)))
        return probs.numpy()[0].tolist()

    def _store(self, batch: int, jit) -> None:
        from edgevit.weights import atomic_write

        path = self._cache_path(batch)
        if path is None:
            return
        payload = pickle.dumps(jit)
        digest = hashlib.sha256(payload).hexdigest()
        meta = {
            "format": CACHE_FORMAT,
            "weights_sha256": self.sha256,
            "payload_sha256": digest,
            "probe": self._probe(jit, batch),
        }
        with contextlib.suppress(OSError):  # a full or read-only disk costs a recompile next time, nothing more
            atomic_write(path, lambda tmp: tmp.write_bytes(json.dumps(meta).encode() + b"\n" + payload))

    def _jit(self, batch: int):
        if batch in self._jits:
            return self._jits[batch]
        jit = self._load_cached(batch)
        if jit is not None:
            self.cache_hits.append(batch)
        else:
            from tinygrad import TinyJit

            jit = TinyJit(inference_graph(self.model))
        self._jits[batch] = jit
        return jit

    def _input(self, batch: int, x: np.ndarray):
        """The JIT's input for `x`: one reused tensor written in place where the backend shares host
        memory (measured: batch-1 7.3 -> 3.0 ms, as realizing a fresh Tensor(x) costs a schedule each
        call), else a fresh tensor."""
        from tinygrad import Tensor

        if batch not in self._inputs:
            t = Tensor.empty(*x.shape).contiguous().realize()
            self._inputs[batch] = (t, host_view(t))
        t, view = self._inputs[batch]
        if view is None:
            return Tensor(x)
        view[:] = x
        return t

    def _run(self, batch: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from tinygrad import Context

        if (replay := self._replays.get(batch)) is not None:
            self._inputs[batch][1][:] = x
            return replay()
        jit = self._jit(batch)
        fresh = jit.captured is None
        with Context(BEAM=self.beam) if fresh and self.beam is not None else contextlib.nullcontext():
            if fresh:
                jit(self._input(batch, x))  # a new TinyJit runs eagerly first and captures its graph on the second call
            outputs = jit(self._input(batch, x))
        # copied out: the graph's output buffers are reused by every call
        out = tuple(v.copy() if (v := host_view(t)) is not None else t.numpy() for t in outputs)
        if fresh:
            self._store(batch, jit)  # the captured graph is what the cache keeps (storing runs a probe call)
        if batch not in self._replays and self._inputs[batch][1] is not None:
            # the reused input still holds x: a replay must reproduce `out` from it exactly
            self._replays[batch] = CPUReplay.build(jit, self._inputs[batch][0], out)
        return out

    def c_model(self) -> CModel:
        """The C runtime: `c_library`, else the cached build for these weights, else a fresh build."""
        if self._c_model is None:
            library = Path(self.c_library) if self.c_library is not None else self._built_library()
            self._c_model = CModel(library, self.sha256, self.config, usable_cores())
        return self._c_model

    def _built_library(self) -> Path:
        """The library for these weights from the cache, else built there (or in a directory that
        lives as long as this classifier, when there is no cache)."""
        if self.cache_dir is None:
            from tempfile import TemporaryDirectory

            self._build_dir = TemporaryDirectory(prefix="edgevit-c-")
        directory = self.cache_dir if self.cache_dir is not None else Path(self._build_dir.name)
        library = directory / f"{self.cache_key(0)}.so"
        if library.is_file():
            self.cache_hits.append(0)  # 0 stands for the C library
        else:
            from edgevit.export import LIBRARY_BEAM, build_library

            build_library(self.path, library, LIBRARY_BEAM if self.beam is None else self.beam)
        return library

    # --- public ---------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        """(N, 28, 28) images on [0, 255] -> class probabilities and every layer's attention."""
        images = np.asarray(images, np.float32)
        size = self.config.image_size
        if images.ndim != 3 or images.shape[1:] != (size, size):
            raise EdgeViTError(f"expected images of shape (N, {size}, {size}), got {images.shape}")
        if self.runtime == "c":
            return Prediction(*self.c_model()(images))
        batch = 1 if len(images) < SMALL_BATCH else BATCH
        probs, maps = [], []
        for x, n in padded_batches(images, batch, self.mean, self.std):
            p, a = self._run(batch, x)
            probs.append(p[:n])
            maps.append(a[:, :n])
        if not probs:
            depth, heads, t = self.config.depth, self.config.heads, self.config.tokens
            return Prediction(np.zeros((0, self.config.num_classes), np.float32), np.zeros((depth, 0, heads, t, t), np.float32))
        return Prediction(np.concatenate(probs), np.concatenate(maps, axis=1))


class BatchedForward:
    """Logits of a model in memory (training, evaluation) through one JIT compiled for `batch_size`."""

    def __init__(self, model, mean: float, std: float, batch_size: int):
        from tinygrad import TinyJit

        self.model, self.mean, self.std, self.batch_size = model, mean, std, batch_size
        self._jit = TinyJit(lambda x: model(x).realize())

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 or float images (N, H, W) on [0, 255] -> float32 logits (N, classes)."""
        from tinygrad import Tensor

        out = [self._jit(Tensor(x)).numpy()[:n] for x, n in padded_batches(images, self.batch_size, self.mean, self.std)]
        return np.concatenate(out) if out else np.zeros((0, self.model.config.num_classes), np.float32)
