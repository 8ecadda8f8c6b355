"""`Classifier`: a weights file, ready to classify, on one of the runtime's backends."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgevit.answer import Reject
from edgevit.cache import Cache, default_cache_dir
from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.runtime.backend import Backend, Prediction
from edgevit.runtime.c import CBackend
from edgevit.runtime.tinygrad import TinygradBackend
from edgevit.weights import ModelFile, model_file

RUNTIMES = ("tinygrad", "c")


class Classifier:
    """A weights file (a path or an opened ModelFile), ready to classify 28x28 images (float,
    [0, 255], white ink on black).

    `runtime` "tinygrad" runs the JIT-compiled graph on a tinygrad backend (`device`; default: the
    fastest here, measured once); "c" runs the same graph exported to C (built for this machine on
    first use and cached, or `c_library` if given). `beam` > 0 BEAM-searches the kernels when a graph
    is compiled or exported; the cache (`cache_dir`, None: none) keeps the result.
    """

    def __init__(
        self,
        weights: str | os.PathLike | ModelFile,
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
        self.model = model_file(weights)
        self.runtime = runtime
        cache = Cache(default_cache_dir() if cache_dir == "default" else cache_dir)
        self.backend: Backend = (
            CBackend(self.model, cache, beam, c_library)
            if runtime == "c"
            else TinygradBackend(self.model, cache, device, beam, replay)
        )

    @property
    def config(self) -> ViTConfig:
        return self.model.config

    @property
    def reject(self) -> Reject:
        """When an answer is "not a digit" (edgevit.answer)."""
        return self.model.reject

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def cache_hits(self) -> list[int]:
        """Batch sizes whose compiled graph came from the cache (0: the C library)."""
        return self.backend.cache_hits

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (B, 1, H, W) -> (probabilities, attention) from one compiled graph of exactly B
        images (tinygrad runtime), without `predict`'s batching."""
        if not isinstance(self.backend, TinygradBackend):
            raise EdgeViTError("forward() runs the tinygrad runtime's graphs; the C runtime has predict()")
        return self.backend.forward(x)

    def predict(self, images: np.ndarray) -> Prediction:
        """(N, 28, 28) images on [0, 255] -> class probabilities and every layer's attention."""
        images = np.asarray(images, np.float32)
        cfg = self.config
        if images.ndim != 3 or images.shape[1:] != (cfg.image_size, cfg.image_size):
            raise EdgeViTError(f"expected images of shape (N, {cfg.image_size}, {cfg.image_size}), got {images.shape}")
        if not len(images):
            empty = np.zeros((cfg.depth, 0, cfg.heads, cfg.tokens, cfg.tokens), np.float32)
            return Prediction(np.zeros((0, cfg.num_classes), np.float32), empty)
        return self.backend.predict(images)
