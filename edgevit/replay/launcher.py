"""A run of kernel launches as one C call: the replay's loop over the kernels, compiled.

Calling a compiled kernel from Python costs a few microseconds of ctypes work, while the w8a8 graph's
kernels run for about 10 us each at batch 16 (112 launches a call): measured, the Python loop was 45% of
that replay's time. The launcher is a C loop over a table of rows (argument count, function address,
arguments) built once per replay, so a run costs one ctypes call, and that call releases the GIL for
all of it: replays of separate graphs run in parallel threads (`Classifier.predict` does, one graph a
core).

Every argument travels as a 64-bit integer, as tinygrad's own `CPUProgram` passes them (`c_uint64`):
the x86-64 System V and Linux AArch64 calling conventions put pointer and int arguments in the same
registers and 8-byte stack slots, and a kernel reads an int from the low half. A machine where the
launcher cannot be built (no compiler for it) keeps the Python loop.
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgevit.cache import Cache
from edgevit.internals import Launch
from edgevit.replay import native

MAX_ARGS = 48  # a launch with more arguments than this stays a Python call
ENTRY = "edgevit_launch"
LANE_ENTRY = "edgevit_launch_lane"


def source() -> str:
    """C99 for `ENTRY`: one function-pointer type per argument count, and a switch over them."""
    types = [f"typedef void (*kernel{n})({', '.join(['uint64_t'] * n) or 'void'});" for n in range(MAX_ARGS + 1)]
    cases = [
        f"    case {n}: ((kernel{n})(uintptr_t)row[1])({', '.join(f'a[{i}]' for i in range(n))}); break;"
        for n in range(MAX_ARGS + 1)
    ]
    return "\n".join(
        [
            "/* Runs `count` kernel launches: each row of `table` is (argument count, function, arguments...). */",
            "#include <stdint.h>",
            *types,
            f"void {ENTRY}(const uint64_t *table, int count) {{",
            "  const uint64_t *row = table;",
            "  for (int i = 0; i < count; i++) {",
            "    const uint64_t *a = row + 2;",
            "    switch (row[0]) {",
            *cases,
            "    }",
            "    row += 2 + row[0];",
            "  }",
            "}",
            "",
            "/* One lane of launches that several threads run at once: each row of `table` is (argument count,",
            " * function, launch, number of waits, the launches to wait for..., arguments...). A launch is",
            " * finished when done[launch] reaches parts[launch] (a split kernel has a part in several lanes). */",
            f"void {LANE_ENTRY}(const uint64_t *table, int count, int *done, const int *parts) {{",
            "  const uint64_t *row = table;",
            "  for (int i = 0; i < count; i++) {",
            "    for (uint64_t w = 0; w < row[3]; w++)",
            "      while (__atomic_load_n(&done[row[4 + w]], __ATOMIC_ACQUIRE) < parts[row[4 + w]]) {}",
            "    const uint64_t *a = row + 4 + row[3];",
            "    switch (row[0]) {",
            *cases,
            "    }",
            "    __atomic_fetch_add(&done[row[2]], 1, __ATOMIC_RELEASE);",
            "    row += 4 + row[3] + row[0];",
            "  }",
            "}",
            "",
        ]
    )


def launchable(launch: Launch) -> bool:
    return all(len(args) <= MAX_ARGS for args in launch.per_core)


def _call(launch: Launch, args: tuple) -> list[int]:
    """The (argument count, function address) of one row, then its arguments."""
    return [len(args), ctypes.cast(launch.fxn, ctypes.c_void_p).value, *(a.value for a in args)]


class Run:
    """Launches (every part of a split one, one after another) called in order by one C call."""

    def __init__(self, launches: list[Launch], cache: Cache):
        rows = []
        for launch in launches:
            if not launchable(launch):
                raise ValueError(f"{launch.name} takes more than {MAX_ARGS} arguments")
            for args in launch.per_core:
                rows += _call(launch, args)
        self.count = sum(len(launch.per_core) for launch in launches)
        self._table = np.array(rows, np.uint64)
        self._entry = getattr(native.library("launcher", source(), cache), ENTRY)
        self._entry.argtypes, self._entry.restype = [ctypes.c_void_p, ctypes.c_int], None
        self._args = (self._table.ctypes.data, self.count)

    def __call__(self) -> None:
        self._entry(*self._args)


class Lanes:
    """Launches spread over threads that run at the same time, one lane each, as `plan` says: lane ->
    (launch, part) in the launches' order. `waits[(launch, part)]` are the launches in other lanes
    that must be finished first; the lane spins on them (the threads are the cores' only work)."""

    def __init__(self, launches: list[Launch], plan: list[list[tuple[int, int]]], waits: dict, cache: Cache):
        if any(not launchable(launch) for launch in launches):
            raise ValueError(f"a launch takes more than {MAX_ARGS} arguments")
        entry = getattr(native.library("launcher", source(), cache), LANE_ENTRY)
        entry.argtypes, entry.restype = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p], None
        self._done = np.zeros(len(launches), np.int32)
        self._parts = np.array([len(launch.per_core) for launch in launches], np.int32)
        self._tables, self._calls = [], []
        for lane in plan:
            rows = []
            for i, part in lane:
                count, address, *args = _call(launches[i], launches[i].per_core[part])
                wait = waits.get((i, part), [])
                rows += [count, address, i, len(wait), *wait, *args]
            table = np.array(rows, np.uint64)
            self._tables.append(table)  # kept alive: the C calls read them
            self._calls.append((table.ctypes.data, len(lane), self._done.ctypes.data, self._parts.ctypes.data))
        self._entry = entry
        self._pool = ThreadPoolExecutor(len(plan) - 1) if len(plan) > 1 else None

    def __call__(self) -> None:
        self._done[:] = 0
        others = [self._pool.submit(self._entry, *call) for call in self._calls[1:]] if self._pool else []
        self._entry(*self._calls[0])  # ctypes releases the GIL: the lanes run at once
        for done in others:
            done.result()
