"""`Classifier`: a weights file, ready to classify, on the tinygrad runtime or the C runtime."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.device import choose_device
from edgevit.errors import EdgeViTError
from edgevit.graph import padded_batches
from edgevit.model import ViT
from edgevit.quant.schemes import inference_layout
from edgevit.runtime.c import BATCH as C_BATCH
from edgevit.runtime.c import CLibrary, CModel, read_own_library, usable_cores
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, JitRunner, time_forward
from edgevit.weights import build_model, file_sha256, open_model_file, reject_of, temperature_of

RUNTIMES = ("tinygrad", "c")
SMALL_BATCH = 8  # fewer images than this run one by one through the batch-1 graph
# more run in graphs of LANE_BATCH images, one graph a core, all cores at once. Per image, measured
# (w8a8, BEAM=2, one core): 0.103 ms at 16 and 0.105 at 32, where one graph of 256 spread over both
# cores took 0.111 ms for each core's images: its activations outgrow the caches
LANE_BATCH = 16
OTHER_BATCH = 64  # on other backends (a GPU, OpenCL) one graph of 64 at a time, as before the lanes


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
        self.runtime, self.beam, self._replay = runtime, beam, replay
        self._c_library = Path(c_library) if c_library is not None else None
        self._c_model: CModel | None = None
        self._lanes: list[JitRunner] = []  # predict's graphs of LANE_BATCH images, one a core
        self._pool: ThreadPoolExecutor | None = None
        if runtime == "c":
            self.device = "C"
            self.library = CLibrary(self.path, self.sha256, self.cache, beam)
            self.batch_library = CLibrary(self.path, self.sha256, self.cache, beam, C_BATCH)
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
        return self.jit.cache_hits + [batch for lane in self._lanes for batch in lane.cache_hits]

    @property
    def lanes(self) -> list[JitRunner]:
        """`predict`'s graphs of LANE_BATCH images, one a core (made by the first predict that needs them)."""
        return list(self._lanes)

    def c_model(self) -> CModel:
        """The C runtime: `c_library`, else the cached build for these weights, else a fresh build."""
        if self._c_model is None:
            if self._c_library is not None:  # the user's own build: no batch library
                self._c_model = CModel(
                    read_own_library(self._c_library), str(self._c_library), self.sha256, self.config, usable_cores()
                )
            else:
                image, batch_image = self.library.image(), self.batch_library.image
                self._c_model = CModel(image, "the cached C library", self.sha256, self.config, usable_cores(), batch_image)
        return self._c_model

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (B, 1, H, W) -> (probabilities, attention) from one compiled graph of exactly B
        images (tinygrad runtime), without `predict`'s batching."""
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
        cfg = self.config
        if len(images) < SMALL_BATCH:
            size, run = 1, self._one_graph
        elif self.device == "CPU":
            size, run = LANE_BATCH, self._run_lanes
        else:  # another backend: no lanes (they need the CPU's direct replay), bigger graphs
            size, run = OTHER_BATCH, self._one_graph
        batches = list(padded_batches(images, size, self.mean, self.std))
        outputs = [(p[:n], a[:, :n]) for (p, a), (_, n) in zip(run([x for x, _ in batches]), batches, strict=True)]
        if not outputs:
            empty = np.zeros((cfg.depth, 0, cfg.heads, cfg.tokens, cfg.tokens), np.float32)
            return Prediction(np.zeros((0, cfg.num_classes), np.float32), empty)
        return Prediction(np.concatenate([p for p, _ in outputs]), np.concatenate([a for _, a in outputs], axis=1))

    def _one_graph(self, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.jit(x) for x in xs]

    def _lane(self, index: int) -> JitRunner:
        while len(self._lanes) <= index:
            self._lanes.append(
                JitRunner(
                    lambda: self.jit.model,  # one model: the lanes' graphs share its weights
                    self.config,
                    self.sha256,
                    self.device,
                    self.cache,
                    self.beam,
                    self._replay,
                    self.temperature,
                    lane=len(self._lanes) + 1,
                )
            )
        return self._lanes[index]

    def _run_lanes(self, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every (LANE_BATCH, 1, H, W) input of `xs` through the lanes' graphs, lane i taking every
        lanes-th, all lanes at once. Without direct replays (another backend) one lane runs them all."""
        lanes = min(len(xs), usable_cores())
        out: list = [None] * len(xs)
        for i in range(lanes):  # a lane's first call compiles or loads its graph: not thread-safe
            if self._lane(i).replay(LANE_BATCH) is None:
                out[i] = self._lane(i)(xs[i])
                if self._lane(i).replay(LANE_BATCH) is None:
                    return [self._lane(i)(x) if o is None else o for x, o in zip(xs, out, strict=True)]

        def run(i: int) -> None:
            for j in range(i, len(xs), lanes):
                out[j] = out[j] if out[j] is not None else self._lane(i)(xs[j])

        if lanes > 1:
            self._pool = self._pool or ThreadPoolExecutor(usable_cores())
            for done in [self._pool.submit(run, i) for i in range(lanes)]:
                done.result()
        else:
            run(0)
        return out
