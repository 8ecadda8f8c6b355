"""Measuring helpers shared by the benchmark and the quantization report: timings, peak memory, and
running a measurement in a fresh process so its compiles and memory peak are its own."""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable

import numpy as np


def peak_rss() -> int:
    """This process's peak resident memory in bytes.

    Linux keeps getrusage's ru_maxrss across fork and exec, so a child started by a big parent reports
    the parent's peak; /proc's VmHWM belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def latencies(call: Callable[[], object], calls: int, warmup: int) -> tuple[float, float]:
    """Median and 90th percentile of `calls` timed calls after `warmup` untimed ones, in ms."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3), float(np.percentile(times, 90) * 1e3)


def throughput(call: Callable[[], object], items: int, repeats: int) -> float:
    """Items per second of `call` (which handles `items` per call) over `repeats` calls after one warm-up
    (the warm-up may compile: not part of the figure)."""
    call()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    return items * repeats / (time.perf_counter() - start)


def in_fresh_process(fn: Callable, *args):
    """fn(*args) in a freshly spawned process: its imports, compiles and memory peak are its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
