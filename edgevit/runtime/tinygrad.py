"""The tinygrad backend: the JIT-compiled graph on any tinygrad backend (edgevit.runtime.jit).

Fewer than SMALL_BATCH images run one at a time through the batch-1 graph. More run, on the CPU, as
graphs of LANE_BATCH images, one graph a core, all cores at once: each core has a JitRunner of its
own (its own buffers, cached under its own key, sharing the model's weights), replayed serially on
one thread. Other backends (a GPU, OpenCL) run one graph of OTHER_BATCH at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgevit.cache import Cache
from edgevit.device import choose_device, usable_cores
from edgevit.graph import padded_batches
from edgevit.quant.schemes import inference_layout
from edgevit.replay.replay import CPUReplay
from edgevit.runtime.backend import Prediction
from edgevit.runtime.jit import JOB, JitRunner, time_forward
from edgevit.weights import ModelFile

SMALL_BATCH = 8
# Per image, measured (w8a8, BEAM=2, one core): 0.103 ms at 16 and 0.105 at 32, where one graph of 256
# spread over both cores took 0.111 ms for each core's images: its activations outgrow the caches
LANE_BATCH = 16
OTHER_BATCH = 64


class TinygradBackend:
    """`model` on tinygrad's `device` (None: the fastest here, measured once); `beam` > 0 searches
    kernels when compiling; `replay` False keeps tinygrad's own replay (for comparisons)."""

    def __init__(self, model: ModelFile, cache: Cache, device: str | None = None, beam: int | None = None, replay: bool = True):
        self.model, self.cache, self.beam, self._replay = model, cache, beam, replay
        self.device = choose_device(device, JOB, time_forward, cache)
        self.jit = self._runner(lambda: inference_layout(model.build()), lane=0)
        self._lanes: list[JitRunner] = []
        self._pool: ThreadPoolExecutor | None = None

    def _runner(self, build, lane: int) -> JitRunner:
        m = self.model
        return JitRunner(build, m.config, m.sha256, self.device, self.cache, self.beam, self._replay, m.temperature, lane)

    @property
    def cache_hits(self) -> list[int]:
        return self.jit.cache_hits + [batch for lane in self._lanes for batch in lane.cache_hits]

    def replay(self, batch: int, lane: int = 0) -> CPUReplay | None:
        """The direct replay running graphs of `batch` images: the main graph's (lane 0) or lane
        `lane`'s (1...), once that graph has run; None where tinygrad's own replay runs it."""
        runner = self.jit if lane == 0 else self._lanes[lane - 1]
        return runner.replay(batch)

    @property
    def lanes(self) -> int:
        """How many lanes `predict` has used so far."""
        return len(self._lanes)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (B, 1, H, W) -> (probabilities, attention) from one compiled graph of exactly B images."""
        return self.jit(np.ascontiguousarray(x, np.float32))

    def predict(self, images: np.ndarray) -> Prediction:
        if len(images) < SMALL_BATCH:
            size, run = 1, self._one_graph
        elif self.device == "CPU":
            size, run = LANE_BATCH, self._run_lanes
        else:  # no lanes (they need the CPU's direct replay): bigger graphs
            size, run = OTHER_BATCH, self._one_graph
        batches = list(padded_batches(images, size, self.model.mean, self.model.std))
        outputs = [(p[:n], a[:, :n]) for (p, a), (_, n) in zip(run([x for x, _ in batches]), batches, strict=True)]
        return Prediction(np.concatenate([p for p, _ in outputs]), np.concatenate([a for _, a in outputs], axis=1))

    def _one_graph(self, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.jit(x) for x in xs]

    def _lane(self, index: int) -> JitRunner:
        while len(self._lanes) <= index:  # one model: the lanes' graphs share its weights
            self._lanes.append(self._runner(lambda: self.jit.model, lane=len(self._lanes) + 1))
        return self._lanes[index]

    def _run_lanes(self, xs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every (LANE_BATCH, 1, H, W) input of `xs` through the lanes' graphs, lane i taking every
        lanes-th, all lanes at once. Without direct replays, one lane runs them all."""
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
