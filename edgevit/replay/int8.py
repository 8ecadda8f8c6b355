"""The tinygrad runtime's int8 products on the CPU's int8 dot-product instructions (w8a8 weights).

tinygrad's own kernel for an int8 x int8 -> int32 product gathers bytes and multiplies in 32 bits
(`edgevit.export.int8` says why no compiler finds vpdpbusd or sdot in it). The direct replay
(`runtime.replay`) calls each compiled kernel itself, so here every launch that is such a product (an
`r_` kernel: int32 out; int8 activations some kernel wrote; an int8 (K, N) weight nothing writes) calls
the C export's `edgevit_gemm_s8` instead, built once for this CPU and kept in the private cache, with
the weight packed once in the order it reads: on AMX tiles where the CPU and Linux allow, else
vpdpbusd or sdot (templates/int8_gemm.c chooses at run time). Rows are split over the cores. The
replay that uses them is kept only where it reproduces tinygrad's outputs bit for bit (the sums are
exact in int32).
"""

from __future__ import annotations

import ctypes
import itertools
import math
from dataclasses import dataclass

import numpy as np

from edgevit.cache import Cache
from edgevit.export import int8
from edgevit.internals import HostBuffer, Launch
from edgevit.replay import native

MIN_ROWS_PER_CORE = 64  # fewer rows than this run on one core: a thread hand-off costs more


@dataclass(frozen=True)
class Product:
    """One launch that computes out (M, N) int32 = x (M, K) int8 @ w (K, N) int8."""

    index: int  # in the launch list
    m: int
    k: int
    n: int
    out: HostBuffer
    x: HostBuffer
    w: HostBuffer


def find_products(launches: list[Launch]) -> list[Product]:
    """The launches that are int8 matrix products the kernel tiles (N a multiple of its 16 lanes)."""
    found = []
    for index, launch in enumerate(launches):
        if not launch.name.startswith("r_") or len(launch.buffers) != 3:
            continue
        out, x, w = launch.buffers
        if (out.dtype, x.dtype, w.dtype) != (np.int32, np.int8, np.int8) or not (out.written and x.written) or w.written:
            continue
        n = math.isqrt(out.count * w.count // x.count)  # M*N * K*N / (M*K) = N^2
        if n == 0 or n % int8.VECTOR or out.count % n or w.count % n:
            continue
        m, k = out.count // n, w.count // n
        if m * n == out.count and m * k == x.count and k * n == w.count:
            found.append(Product(index, m, k, n, out, x, w))
    return found


def _host_array(buf: HostBuffer) -> np.ndarray:
    """A copy of a buffer the graph never writes (a weight)."""
    raw = (ctypes.c_char * (buf.count * buf.dtype.itemsize)).from_address(buf.address)
    return np.frombuffer(bytes(raw), buf.dtype)


class Int8Products:
    """The replacement launches for a graph's int8 products, and what they point into (kept alive)."""

    def __init__(self, launches: list[Launch], products: list[Product], library: ctypes.CDLL, cores: int):
        self._keep: list[np.ndarray] = []
        self.launches = list(launches)
        self.path = int8.int8_path(library)
        for p in products:
            w = _host_array(p.w).reshape(p.k, p.n)
            packed, colsum = int8.pack(w), w.sum(0, dtype=np.int32)
            self._keep += [packed, colsum]
            name = int8.kernel_name(p.k, p.n)
            fxn = getattr(library, name)
            parts = cores if p.m >= MIN_ROWS_PER_CORE * cores else 1
            bounds = np.linspace(0, p.m, parts + 1).astype(int)
            per_core = [
                (
                    ctypes.c_uint64(p.out.address + lo * p.n * 4),
                    ctypes.c_uint64(p.x.address + lo * p.k),
                    ctypes.c_uint64(packed.ctypes.data),
                    ctypes.c_uint64(colsum.ctypes.data),
                    ctypes.c_int(hi - lo),
                )
                for lo, hi in itertools.pairwise(bounds)
            ]
            self.launches[p.index] = self.launches[p.index]._replace(fxn=fxn, per_core=per_core, name=name)


def library(shapes: list[tuple[int, int]], cache: Cache) -> ctypes.CDLL:
    """The kernels for `shapes` ((K, N) pairs), compiled for this CPU."""
    return native.library("int8-gemm", int8.library_source(shapes), cache)


def swap(launches: list[Launch], cache: Cache, cores: int) -> Int8Products | None:
    """Replacement launches for every int8 product in `launches`, or None where there is none."""
    products = find_products(launches)
    if not products:
        return None
    return Int8Products(launches, products, library([(p.k, p.n) for p in products], cache), cores)
