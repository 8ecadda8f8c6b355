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
BATCH = 64
BUFFER_NUMBERS = 2**48
# the graph depends on these sources: a change to any of them must not reuse an old compiled graph
FINGERPRINTED = ("model.py", "runtime.py")


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


@dataclass
class Prediction:
    probs: np.ndarray  # (N, classes)
    attention: np.ndarray  # (depth, N, heads, tokens, tokens)


class Classifier:
    """A weights file, ready to classify 28x28 images (float, [0, 255], white ink on black)."""

    def __init__(self, weights_path: str | os.PathLike, cache_dir: Path | str | None = "default", device: str | None = None):
        from edgevit.weights import file_sha256, open_model_file

        self.path = Path(weights_path)
        self.header, self.config, self.scheme, (self.mean, self.std) = open_model_file(self.path)
        self.sha256 = file_sha256(self.path)
        self.cache_dir = default_cache_dir() if cache_dir == "default" else (Path(cache_dir) if cache_dir else None)
        if self.cache_dir is not None and not private_dir(self.cache_dir):
            self.cache_dir = None  # somebody else could plant code there: compile instead
        self.device = self._choose_device(device)
        self._model = None
        self._jits: dict[int, object] = {}
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

            from edgevit.weights import build_model

            # tinygrad numbers buffers with a per-process counter, and unpickling a graph reuses any live
            # buffer with the same number: a cached graph's buffers must come from a range no other
            # process will be using, or loading it would silently wire in the wrong weights
            UOp.unique_num = itertools.count(BUFFER_NUMBERS + secrets.randbelow(BUFFER_NUMBERS))
            self._model = build_model(self.header, self.config, self.scheme)
        return self._model

    def cache_key(self, batch: int) -> str:
        from importlib.metadata import version

        parts = [self.sha256, self.device, version("tinygrad"), code_fingerprint(), str(batch)]
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

        x = np.linspace(-1, 3, batch * self.config.image_size**2, dtype=np.float32)
        probs, _ = jit(Tensor(x.reshape(batch, 1, self.config.image_size, self.config.image_size)))
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

            model = self.model

            def forward(x):
                logits, attention = model.forward(x)
                return logits.softmax(-1).realize(), attention.realize()

            jit = TinyJit(forward)
        self._jits[batch] = jit
        return jit

    def _run(self, batch: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from tinygrad import Tensor

        jit = self._jit(batch)
        fresh = jit.captured is None
        if fresh:
            jit(Tensor(x))  # a new TinyJit runs eagerly first and captures its graph on the second call
        probs, attention = jit(Tensor(x))
        out = probs.numpy(), attention.numpy()  # copied out: the graph's output buffers are reused by every call
        if fresh:
            self._store(batch, jit)  # the captured graph is what the cache keeps (storing runs a probe call)
        return out

    # --- public ---------------------------------------------------------------------------------
    def predict(self, images: np.ndarray) -> Prediction:
        """(N, 28, 28) images on [0, 255] -> class probabilities and every layer's attention."""
        images = np.asarray(images, np.float32)
        size = self.config.image_size
        if images.ndim != 3 or images.shape[1:] != (size, size):
            raise EdgeViTError(f"expected images of shape (N, {size}, {size}), got {images.shape}")
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
