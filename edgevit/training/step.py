"""One compiled training step, run the fast way where the backend allows it.

tinygrad's TinyJit runs the step eagerly, captures it on its second call and replays the capture
after. On the CPU backend tinygrad's replay costs about 30 us of Python per kernel (the step has about
500) and runs the kernels it split over cores one part after another; the direct replay
(`runtime.replay.CPUReplay`) calls them with fixed arguments and runs the parts of a split kernel on
all cores at once: measured 491 -> 952 images/s on 2 cores.

A training step changes the state it reads (weights, optimizer moments, the random stream), so the
replay cannot be checked by running it twice on the same input, as inference's is. Instead, once: the
state is saved, tinygrad's replay runs the step, the state is put back, the direct replay runs the
same step, and both must give the same loss and leave the same state, bit for bit. Otherwise tinygrad's
replay is kept (after putting the state back and redoing its step). The direct replay first tries
its launches spread over the cores (`CPUReplay.laned`, placed by their times in one run of the step),
checked the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
from tinygrad import Context, Tensor, TinyJit, dtypes

from edgevit import internals
from edgevit.replay.replay import CPUReplay

CAPTURE_CALLS = 2  # a TinyJit runs eagerly, then captures: its first two calls compile


class CompiledStep:
    """fn(x, y, lr) -> (loss, correct), compiled once. `state()` lists every tensor the step updates;
    `direct` False keeps tinygrad's replay (for comparisons)."""

    def __init__(self, fn: Callable, state: Callable[[], list[Tensor]], beam: int = 0, direct: bool = True):
        self.jit, self.state, self.beam, self.direct = TinyJit(fn), state, beam, direct
        self.calls = 0
        self.replay: CPUReplay | None = None
        self._inputs: tuple[Tensor, ...] | None = None
        self._views: tuple[np.ndarray, ...] | None = None

    @property
    def compiling(self) -> bool:
        return self.calls < CAPTURE_CALLS

    def _staged(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[Tensor, ...]:
        """The step's inputs: the same tensors every call, written in place, where the backend shares
        memory with the host (the direct replay needs fixed addresses); else fresh tensors."""
        if self._inputs is None:
            shapes = ((x.shape, dtypes.float32), (y.shape, dtypes.int32), ((1,), dtypes.float32))
            self._inputs = tuple(Tensor.empty(*shape, dtype=dtype).contiguous().realize() for shape, dtype in shapes)
            views = tuple(internals.host_view(t) for t in self._inputs)
            self._views = views if all(v is not None for v in views) else None
        if self._views is None:
            return Tensor(x), Tensor(y), Tensor([lr], dtype=dtypes.float32)
        for view, value in zip(self._views, (x, y, lr), strict=True):
            view[...] = value
        return self._inputs

    def __call__(self, x: np.ndarray, y: np.ndarray, lr: float) -> tuple[float, int]:
        inputs = self._staged(x, y, lr)
        if self.replay is not None:
            loss, correct = self.replay()
        elif self.calls == CAPTURE_CALLS and self.direct and self._views is not None:
            loss, correct = self._switch_to_replay(inputs)
        else:
            with Context(BEAM=self.beam) if self.compiling and self.beam else contextlib.nullcontext():
                loss, correct = (t.numpy() for t in self.jit(*inputs))
        self.calls += 1
        return float(loss.item()), int(correct.item())

    def _switch_to_replay(self, inputs: tuple[Tensor, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Run this step with both replays from the same state; keep the direct one if they agree."""
        state = self.state()
        Tensor.realize(*state)  # a tensor not yet computed has no memory to save
        views = [internals.host_view(t) for t in state]
        launches, outputs = internals.cpu_launches(self.jit, inputs), internals.jit_outputs(self.jit)
        if launches is None or outputs is None or any(v is None for v in views):
            return tuple(t.numpy() for t in self.jit(*inputs))
        before = [v.copy() for v in views]
        expected = tuple(t.numpy() for t in self.jit(*inputs))
        after = [v.copy() for v in views]

        def restore(saved: list[np.ndarray]) -> None:
            for view, value in zip(views, saved, strict=True):
                view[...] = value

        restore(before)
        replay = CPUReplay(launches, outputs)
        seconds = replay.launch_seconds()  # a run of the step: the state is put back after it
        for candidate in (replay.laned(seconds), replay):
            if candidate is None:
                continue
            restore(before)
            got = candidate()
            same = all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
            if same and all(np.array_equal(v, a) for v, a in zip(views, after, strict=True)):
                self.replay = candidate
                return got
        restore(after)  # tinygrad's result stands
        return expected
