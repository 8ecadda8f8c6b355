"""A captured graph on tinygrad's CPU backend, replayed as direct calls into its compiled kernels.

tinygrad's own replay (`engine/realize.py` `exec_kernel`) resolves every argument's buffer, tracks
stats and converts every address again on each call: about 30 us per kernel, and the batch-1 graph has
73 kernels. Every address in a captured graph is fixed (weights, planned scratch, the reused input and
the outputs), so `internals.cpu_launches` resolves them once and each call here is one ctypes call per
kernel launch. A kernel tinygrad split over cores runs on all of them at once here, where tinygrad's
replay runs the parts one after another. Runs of launches go to the compiled `launcher`: one C call
for the whole graph where nothing runs in parallel. `laned` spreads the launches themselves over the
cores (`runtime.schedule`), for graphs such as the training step whose kernels mostly run on one core.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tinygrad import Tensor

from edgevit import internals
from edgevit.cache import Cache
from edgevit.device import usable_cores
from edgevit.errors import EdgeViTError
from edgevit.replay import int8, launcher, schedule


class CPUReplay:
    """`launches` replayed, writing the graph's `outputs` (views of its output buffers).

    `parallel` runs the parts of a kernel tinygrad split over cores on all of them at once; without it
    they run one after another, so the whole graph is one launcher call on one thread (for replays
    that themselves run one per core). `cache` keeps the compiled launcher.
    """

    def __init__(
        self,
        launches: list[internals.Launch],
        outputs: tuple[np.ndarray, ...],
        cache: Cache | None = None,
        parallel: bool = True,
        lanes: launcher.Lanes | None = None,
    ):
        self.launches, self.outputs = launches, outputs
        self.int8: int8.Int8Products | None = None  # the swapped int8 products this replay runs, if any
        self._cache = cache = cache or Cache(None)
        # in order; a Launch is called from Python
        self._steps: list[launcher.Run | launcher.Lanes | internals.Launch] = []
        if lanes is not None:  # `laned`'s: the lanes run every launch
            self.threads, self._pool, self._steps = 1, None, [lanes]
            return
        self.threads = max((len(launch.per_core) for launch in launches), default=1) if parallel else 1
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None

        def in_c(launch: internals.Launch) -> bool:
            return launcher.launchable(launch) and (len(launch.per_core) == 1 or not parallel)

        try:
            for c, group in itertools.groupby(launches, in_c):
                group = list(group)
                self._steps += [launcher.Run(group, cache)] if c else group
        except EdgeViTError:  # no compiler that builds for this machine ($CC a cross compiler): Python calls them
            self._steps = list(launches)

    @classmethod
    def build(
        cls, jit, input_tensor: Tensor, expected: tuple[np.ndarray, ...], cache: Cache | None = None, parallel: bool = True
    ) -> CPUReplay | None:
        """The replay of a captured `jit` whose input is `input_tensor`, or None where there is none:
        another backend, launch variables, or a replay that does not reproduce `expected` (what
        tinygrad computed from the input now in `input_tensor`) bit for bit.

        Given a `cache`, the graph's int8 products (w8a8) run on the CPU's dot-product instructions
        (`runtime.int8`) where that replay too reproduces `expected` bit for bit.
        """
        launches, outputs = internals.cpu_launches(jit, (input_tensor,)), internals.jit_outputs(jit)
        if launches is None or outputs is None:
            return None
        try:
            swapped = int8.swap(launches, cache, usable_cores() if parallel else 1) if cache is not None else None
        except EdgeViTError:  # the int8 kernels cannot be built here: tinygrad's own products run
            swapped = None
        for candidate in ([swapped.launches] if swapped else []) + [launches]:
            replay = cls(candidate, outputs, cache, parallel)
            if all(np.array_equal(a, b) for a, b in zip(replay(), expected, strict=True)):
                replay.int8 = swapped if candidate is not launches else None  # keeps their buffers alive
                return replay
        return None

    def profile(self, repeats: int = 3) -> dict[str, tuple[float, int]]:
        """Where a run's time goes: kernel name -> (seconds per run, launches per run), each launch
        timed alone with its parts one after another (so the sum exceeds a parallel run's time).
        Running the launches changes what the graph writes, as a run does."""
        spent: dict[str, list] = {}
        for _ in range(repeats):
            for launch, seconds in zip(self.launches, self.launch_seconds(), strict=True):
                entry = spent.setdefault(launch.name, [0.0, 0])
                entry[0] += seconds / repeats
                entry[1] += 1
        return {name: (seconds, count // repeats) for name, (seconds, count) in spent.items()}

    def launch_seconds(self) -> list[float]:
        """Each launch's time, its parts one after another: one run, so it changes what the graph
        writes, as a run does."""
        seconds = []
        for launch in self.launches:
            start = time.perf_counter()
            for args in launch.per_core:
                launch.fxn(*args)
            seconds.append(time.perf_counter() - start)
        return seconds

    def laned(self, seconds: list[float]) -> CPUReplay | None:
        """This replay with its launches spread over the cores (`runtime.schedule`), using the launch
        times `seconds` to place them; None on one core or where the launcher cannot run them."""
        cores = usable_cores()
        if cores < 2:
            return None
        plan, waits = schedule.assign(self.launches, seconds, schedule.dependencies(self.launches), cores)
        try:
            lanes = launcher.Lanes(self.launches, plan, waits, self._cache)
        except (EdgeViTError, ValueError):  # no compiler for this machine; a launch with too many arguments
            return None
        return CPUReplay(self.launches, self.outputs, self._cache, lanes=lanes)

    @property
    def spread_over_cores(self) -> bool:
        """Whether the launches run spread over the cores (`laned`)."""
        return any(isinstance(step, launcher.Lanes) for step in self._steps)

    def __call__(self) -> tuple[np.ndarray, ...]:
        for step in self._steps:
            if isinstance(step, launcher.Run | launcher.Lanes):
                step()
                continue
            others = [self._pool.submit(step.fxn, *args) for args in step.per_core[1:]] if self._pool else []
            for args in step.per_core[: 1 if self._pool else None]:  # ctypes releases the GIL
                step.fxn(*args)
            for done in others:
                done.result()
        # copied out: the graph's output buffers are reused by every call
        return tuple(v.copy() for v in self.outputs)
