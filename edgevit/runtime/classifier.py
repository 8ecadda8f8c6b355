"""`Classifier`: a weights file, ready to classify, on the tinygrad runtime or the C runtime."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.graph import padded_batches
from edgevit.model import ViT
from edgevit.quant.schemes import inference_layout
from edgevit.runtime.c import CLibrary, CModel, read_own_library, usable_cores
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, JitRunner, time_forward
from edgevit.weights import build_model, file_sha256, open_model_file, reject_of, temperature_of

RUNTIMES = ("tinygrad", "c")
SMALL_BATCH = 8  # fewer images than this run one by one through the batch-1 graph
BATCH = 64


@dataclass
class Prediction:
    probs: np.ndarray  # (N, classes)
    attention: np.ndarray  # (depth, N, heads, tokens, tokens)


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
        replay: bool = True,
    ):
        if runtime not in RUNTIMES:
            raise EdgeViTError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
        if runtime == "c" and device:
            raise EdgeViTError("--device chooses a tinygrad backend; the C runtime runs on this CPU")
        if beam is not None and beam < 0:
            raise EdgeViTError(f"--beam must be 0 (no search) or more, not {beam}")
        self.path = Path(weights_path)
        self.header, self.config, self.scheme, (self.mean, self.std) = open_model_file(self.path)
        self.sha256 = file_sha256(self.path)
        self.temperature = temperature_of(self.header)
        self.reject = reject_of(self.header, self.config)  # when an answer is "not a digit"
        self.cache = Cache(default_cache_dir() if cache_dir == "default" else cache_dir)
        self.runtime, self.beam = runtime, beam
        self._c_library = Path(c_library) if c_library is not None else None
        self._c_model: CModel | None = None
        if runtime == "c":
            self.device = "C"
            self.library = CLibrary(self.path, self.sha256, self.cache, beam)
        else:
            self.device = choose_device(device, JOB, time_forward, self.cache)
            self.jit = JitRunner(
                self._inference_model, self.config, self.sha256, self.device, self.cache, beam, replay, self.temperature
            )

    def _inference_model(self) -> ViT:
        return inference_layout(build_model(self.header, self.config, self.scheme))

    @property
    def cache_hits(self) -> list[int]:
        """Batch sizes whose compiled graph came from the cache (0: the C library)."""
        if self.runtime == "c":
            return [0] if self.library.cache_hit else []
        return self.jit.cache_hits

    def c_model(self) -> CModel:
        """The C runtime: `c_library`, else the cached build for these weights, else a fresh build."""
        if self._c_model is None:
            if self._c_library is not None:
                image, name = read_own_library(self._c_library), str(self._c_library)
            else:
                image, name = self.library.image(), "the cached C library"
            self._c_model = CModel(image, name, self.sha256, self.config, usable_cores())
        return self._c_model

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (B, 1, H, W) -> (probabilities, attention) from one compiled graph of exactly B
        images (tinygrad runtime): what `predict` runs per batch, without its batching."""
        if self.runtime != "tinygrad":
            raise EdgeViTError("forward() runs the tinygrad runtime's graphs; the C runtime has predict()")
        return self.jit(np.ascontiguousarray(x, np.float32))

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
            p, a = self.jit(x)
            probs.append(p[:n])
            maps.append(a[:, :n])
        if not probs:
            cfg = self.config
            empty = np.zeros((cfg.depth, 0, cfg.heads, cfg.tokens, cfg.tokens), np.float32)
            return Prediction(np.zeros((0, cfg.num_classes), np.float32), empty)
        return Prediction(np.concatenate(probs), np.concatenate(maps, axis=1))
