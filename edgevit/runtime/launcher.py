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

import numpy as np

from edgevit.internals import Launch
from edgevit.runtime import native
from edgevit.runtime.cache import Cache

MAX_ARGS = 48  # a launch with more arguments than this stays a Python call
ENTRY = "edgevit_launch"


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
        ]
    )


def launchable(launch: Launch) -> bool:
    return all(len(args) <= MAX_ARGS for args in launch.per_core)


class Run:
    """Launches (every part of a split one, one after another) called in order by one C call."""

    def __init__(self, launches: list[Launch], cache: Cache):
        rows = []
        for launch in launches:
            if not launchable(launch):
                raise ValueError(f"{launch.name} takes more than {MAX_ARGS} arguments")
            address = ctypes.cast(launch.fxn, ctypes.c_void_p).value
            for args in launch.per_core:
                rows += [len(args), address, *(a.value for a in args)]
        self.count = sum(len(launch.per_core) for launch in launches)
        self._table = np.array(rows, np.uint64)
        self._entry = getattr(native.library("launcher", source(), cache), ENTRY)
        self._entry.argtypes, self._entry.restype = [ctypes.c_void_p, ctypes.c_int], None
        self._args = (self._table.ctypes.data, self.count)

    def __call__(self) -> None:
        self._entry(*self._args)
