"""Measuring helpers shared by the benchmark and the quantization report: timings, peak memory, and
running a measurement in a fresh process so its compiles and memory peak are its own."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import platform
import resource
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgevit.files import signals_deferred

CLOSE_TIMEOUT_S = 30  # a worker asked to stop that is still running after this is terminated
STOP_TIMEOUT_S = 2  # a terminated worker still running after this is killed
SETTLE_WINDOW_S = 0.01  # settle() samples the process's CPU time over windows this long
SETTLE_MAX_S = 1.0  # and gives up after this: a process with a busy thread of its own never settles
IDLE_CPU_FRACTION = 0.1  # of a window: below it, no thread of the process is spinning


INT8_FEATURES = ("amx_int8", "amx_tile", "avx512_vnni", "avx_vnni", "avx512_bf16", "asimddp", "i8mm")


@functools.cache
def _cpuinfo_fields() -> dict[str, str]:
    """/proc/cpuinfo's fields, the first value of each (the first CPU's), read once; empty without /proc."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for key, _, value in (ln.partition(":") for ln in lines):
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpuinfo(key: str) -> str:
    """The first value of `key` in /proc/cpuinfo ("" where there is none, or no /proc)."""
    return _cpuinfo_fields().get(key, "")


def cpu_flags() -> set[str]:
    """This CPU's instruction-set flags (x86 "flags", Arm "Features")."""
    return set((_cpuinfo("flags") or _cpuinfo("Features")).split())


def cpu_mhz() -> float | None:
    """The clock /proc/cpuinfo shows (x86; on a VM usually the nominal one), or None."""
    try:
        return float(_cpuinfo("cpu MHz"))
    except ValueError:
        return None


def cpu_description() -> str:
    """This machine's CPU, as a result should name it: its model and the instruction sets EdgeViT's
    int8 kernels can use (from /proc/cpuinfo; the platform's name elsewhere)."""
    model = _cpuinfo("model name") or _cpuinfo("CPU part")
    if not model:
        return platform.processor() or platform.machine()
    have = [f for f in INT8_FEATURES if f in cpu_flags()]
    return f"{model}, {os.cpu_count()} cores" + (f" ({', '.join(have)})" if have else " (no int8 dot-product instructions)")


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


def timed_calls(call: Callable[[], object], seconds: float, min_calls: int, warmup: int) -> list[float]:
    """Durations (s) of calls to `call`, made for at least `seconds` and `min_calls` calls, after
    `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return times


def rate(call: Callable[[], object], items: int, seconds: float) -> float:
    """Items per second of `call` (which handles `items` per call), calling it for at least `seconds`
    after one untimed call (the first call after other work pays for refilling the caches)."""
    call()
    calls, start = 0, time.perf_counter()
    while not calls or time.perf_counter() - start < seconds:
        call()
        calls += 1
    return items * calls / (time.perf_counter() - start)


def in_fresh_process(fn: Callable, *args):
    """fn(*args) in a freshly spawned process: its imports, compiles and memory peak are its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def settle() -> None:
    """Wait until this process's threads stop using the CPU (at most SETTLE_MAX_S).

    Thread pools spin after a call before they sleep (ONNX Runtime's for about 40 ms, measured): on a
    machine with few cores that spinning would be charged to whatever is timed next, in any process.
    """
    deadline = time.perf_counter() + SETTLE_MAX_S
    while time.perf_counter() < deadline:
        cpu = time.process_time()  # every thread of this process
        time.sleep(SETTLE_WINDOW_S)
        if time.process_time() - cpu < SETTLE_WINDOW_S * IDLE_CPU_FRACTION:
            return


class WorkerError(Exception):
    """A Worker's object failed (the message is its traceback) or its process died."""


def _serve(conn, factory: Callable, args: tuple) -> None:
    """The worker's side: build the object, then answer (method, args) requests until None."""
    # Ctrl-C reaches the whole process group: the parent handles it and closes its workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        obj = factory(*args)
        conn.send((True, None))
        while (request := conn.recv()) is not None:
            method, method_args = request
            conn.send((True, getattr(obj, method)(*method_args)))
    except EOFError:  # the parent is gone
        return
    except Exception:
        conn.send((False, traceback.format_exc()))


class Worker:
    """`factory(*args)` built in a freshly spawned process, its methods called from here over a pipe.

    Spawned, not forked, so its imports, compiles and memory peak are its own; long-lived, so a
    benchmark can come back to it round after round. One request at a time; an error ends it.
    """

    def __init__(self, factory: Callable, *args):
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs, factory, args), daemon=True)
        try:
            # a signal in the middle of the start would leave the child half its instructions (a traceback)
            with signals_deferred():
                self._process.start()
            theirs.close()  # only the child holds its end now, so its death reads as EOF here
            self._reply()  # built, or why not
        except WorkerError:
            self.close()  # no `with` block will: reap the process and close the pipe here
            raise
        except BaseException:  # Ctrl-C or SIGTERM while it starts or builds
            self.stop()
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def call(self, method: str, *args):
        """obj.method(*args), run in the worker."""
        self._conn.send((method, args))
        return self._reply()

    def _reply(self):
        try:
            ok, value = self._conn.recv()
        except EOFError:
            self._process.join()
            raise WorkerError(f"the worker process died (exit code {self._process.exitcode})") from None
        if not ok:
            raise WorkerError(value)
        return value

    def close(self) -> None:
        """Ask the worker to finish, and wait for it (CLOSE_TIMEOUT_S at most, then stop it)."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):  # it is on its way out already
                self._conn.send(None)
            self._process.join(CLOSE_TIMEOUT_S)
        self.stop()

    def stop(self) -> None:
        """End the worker now, whatever it is doing: after an error, Ctrl-C or SIGTERM, a busy worker
        (a kernel search takes minutes) must not hold its parent up or outlive it."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_TIMEOUT_S)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._conn.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:  # an error, Ctrl-C or SIGTERM: nothing more will be asked of it
            self.stop()
