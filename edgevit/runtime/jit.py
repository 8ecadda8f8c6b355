"""The tinygrad backend of the runtime: one TinyJit-compiled inference graph per batch size, cached.

A graph is compiled (or loaded from the cache) the first time a batch size is needed. Where the
backend shares memory with the host (CPU), the input is written straight into a reused tensor and
the outputs read from the graph's own buffers, and the graph is replayed by `CPUReplay`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np
from tinygrad import Context, Tensor, TinyJit

from edgevit import internals
from edgevit.cache import Cache, cache_key
from edgevit.graph import inference_graph, probe_input
from edgevit.model import ViT, ViTConfig
from edgevit.quant.schemes import inference_layout
from edgevit.replay.replay import CPUReplay

JOB = "batch-1"  # what classification is timed by when choosing a backend
TIMED_CALLS = 20


class JitRunner:
    """Compiled graphs of one model on one tinygrad backend.

    `build_model` makes the model (only needed when a graph must be compiled); `sha256` names the
    weights in the cache; `beam` > 0 BEAM-searches kernels when compiling; `replay` False keeps
    tinygrad's own replay (for comparisons). `lane` > 0 is one of several runners whose graphs run at
    the same time on different cores: graphs of its own (cached apart), replayed on one thread each.
    """

    def __init__(
        self,
        build_model: Callable[[], ViT],
        config: ViTConfig,
        sha256: str,
        device: str,
        cache: Cache,
        beam: int | None = None,
        replay: bool = True,
        temperature: float = 1.0,
        lane: int = 0,
    ):
        self.config, self.sha256, self.device, self.beam, self.lane = config, sha256, device, beam, lane
        self.temperature = temperature
        # a pickled graph is safe to load only where its buffers can be renumbered (see `model`)
        self.cache = cache if internals.AVAILABLE else Cache(None)
        self._build_model, self._model = build_model, None
        self._replay_allowed = replay
        self._jits: dict[int, object] = {}
        self._inputs: dict[int, tuple[Tensor, np.ndarray | None]] = {}  # batch -> (input tensor, its host view)
        self._replays: dict[int, CPUReplay | None] = {}
        self.cache_hits: list[int] = []  # batch sizes whose graph came from the cache

    def key(self, batch: int) -> str:
        return cache_key(
            self.sha256, self.device, str(batch), f"beam={self.beam}", *([f"lane={self.lane}"] if self.lane else [])
        )

    def replay(self, batch: int) -> CPUReplay | None:
        """The direct replay in use for `batch`, if any (after the first call of that batch size)."""
        return self._replays.get(batch)

    @property
    def model(self) -> ViT:
        if self._model is None:
            internals.renumber_buffers()  # so that graphs compiled from it never alias another process's buffers
            self._model = self._build_model()
        return self._model

    def _probe(self, jit, batch: int) -> list[float]:
        probs, _ = jit(Tensor(probe_input(self.config, batch)))
        return probs.numpy()[0].tolist()

    def _jit(self, batch: int):
        if batch not in self._jits:
            jit = self.cache.load_graph(self.key(batch), self.sha256, lambda j: self._probe(j, batch))
            if jit is not None:
                self.cache_hits.append(batch)
            self._jits[batch] = jit if jit is not None else TinyJit(inference_graph(self.model, temperature=self.temperature))
        return self._jits[batch]

    def _input(self, batch: int, x: np.ndarray) -> Tensor:
        """The JIT's input for `x`: one reused tensor written in place where the backend shares host
        memory (measured: batch-1 7.3 -> 3.0 ms, as realizing a fresh Tensor(x) costs a schedule each
        call), else a fresh tensor."""
        if batch not in self._inputs:
            t = Tensor.empty(*x.shape).contiguous().realize()
            self._inputs[batch] = (t, internals.host_view(t))
        t, view = self._inputs[batch]
        if view is None:
            return Tensor(x)
        view[:] = x
        return t

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (B, 1, H, W) -> probabilities (B, classes), attention (depth, B, heads, T, T)."""
        batch = len(x)
        if (replay := self._replays.get(batch)) is not None:
            self._inputs[batch][1][:] = x
            return replay()
        jit = self._jit(batch)
        fresh = not internals.is_captured(jit)
        with Context(BEAM=self.beam) if fresh and self.beam is not None else contextlib.nullcontext():
            if fresh:
                jit(self._input(batch, x))  # a new TinyJit runs eagerly first and captures its graph on the second call
            outputs = jit(self._input(batch, x))
        # copied out: the graph's output buffers are reused by every call
        out = tuple(v.copy() if (v := internals.host_view(t)) is not None else t.numpy() for t in outputs)
        if fresh:
            self.cache.store_graph(self.key(batch), jit, self.sha256, self._probe(jit, batch))
        if self._replay_allowed and batch not in self._replays and self._inputs[batch][1] is not None:
            # the reused input still holds x: a replay must reproduce `out` from it exactly
            self._replays[batch] = CPUReplay.build(jit, self._inputs[batch][0], out, self.cache, parallel=not self.lane)
        return out


def time_forward(device: str, config: ViTConfig | None = None) -> float:
    """Median ms of a batch-1 forward of the default-size model on `device`, as the runtime runs it
    (direct replay where the backend allows): what choosing a backend for classification compares."""
    config = config or ViTConfig()
    internals.make_default(device)  # the model's tensors are created on the default backend
    runner = JitRunner(lambda: inference_layout(ViT(config)), config, "timing", device, Cache(None))
    x = probe_input(config, 1)
    for _ in range(3):  # eager, capture, first replay: compiling is not what is compared
        runner(x)
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        runner(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)
