"""Swap a w8a8 graph's int8 matrix products for kernels built on the CPU's int8 dot-product instructions.

tinygrad writes an int8 x int8 -> int32 product as byte loads, sign extensions and 32-bit multiplies:
no compiler finds vpdpbusd (x86 AVX512-VNNI) or sdot (ARMv8.2) in it, because the four bytes such an
instruction takes for one output lie a row of the weight apart. `schemes.w8a8_linear` realizes each
product as a kernel of its own (int8 activations and an int8 (K, N) weight in, int32 out); here each
such step calls `edgevit_gemm_s8` (templates/int8_gemm.c) instead, with its weight re-arranged once,
at export, into the [K/4][N][4] order those instructions read, plus the weight's column sums that
x86's unsigned-by-signed form needs. The sums are exact in int32, so the outputs do not change.
"""

from __future__ import annotations

import ctypes

import numpy as np

from edgevit.export.plan import PREFIX, Buffer, Graph, Step, identifier
from edgevit.export.render import template
from edgevit.model import ViTConfig, linear_shapes

LANE = 4  # int8 inputs summed into one int32 lane by vpdpbusd and sdot
VECTOR = 16  # int32 lanes in one AVX-512 register: the output tile width
SUPPORT = "int8_gemm.c"  # the template that defines edgevit_gemm_s8


def pack(weight_t: np.ndarray) -> np.ndarray:
    """(K, N) int8 -> flat [ceil(K/4)][N][4]: packed[((k // 4) * N + n) * 4 + k % 4] = weight_t[k, n],
    zeros where k >= K."""
    k, n = weight_t.shape
    groups = -(-k // LANE)
    padded = np.zeros((groups * LANE, n), np.int8)
    padded[:k] = weight_t
    return np.ascontiguousarray(padded.reshape(groups, LANE, n).transpose(0, 2, 1)).ravel()


def use_dot_products(graph: Graph, config: ViTConfig) -> Graph:
    """Replace, in place, every step that is an int8 matrix product of a Linear with a call to
    `edgevit_gemm_s8`. Products whose shapes the kernel does not tile (the 11-class head) stay as
    tinygrad wrote them."""
    shapes = linear_shapes(config)
    packed: dict[int, tuple[Buffer, Buffer]] = {}  # id(weight_t) -> (packed weight, column sums)
    for step in graph.steps:
        layer = _int8_product(step)
        if layer is None or layer not in shapes:
            continue
        out, x, weight = step.arguments
        n, k = shapes[layer]
        rows = out.count // n
        if n % VECTOR or out.count != rows * n or x.count != rows * k or weight.count != k * n:
            continue
        if id(weight) not in packed:
            w = np.asarray(weight.data, np.int8).reshape(k, n)
            w_packed = pack(w)
            name = f"{PREFIX}_{identifier(layer)}"
            packed[id(weight)] = (
                Buffer(f"{name}_weight_packed", np.dtype(np.int8), w_packed.size, "weight", w_packed, f"{layer}.weight_packed"),
                Buffer(f"{name}_colsum", np.dtype(np.int32), n, "weight", w.sum(0, dtype=np.int32), f"{layer}.colsum"),
            )
        kernel = f"{PREFIX}_gemm_s8_{rows}x{k}x{n}"
        graph.kernels.setdefault(kernel, _function(kernel, k, n, rows))
        step.kernel = kernel
        step.arguments = [out, x, *packed[id(weight)]]
    if packed:
        used = {id(b) for step in graph.steps for b in step.arguments}
        graph.buffers = [b for b in graph.buffers if b.role != "weight" or id(b) in used]
        graph.buffers += [b for pair in packed.values() for b in pair]
        graph.kernels = {name: src for name, src in graph.kernels.items() if any(s.kernel == name for s in graph.steps)}
        graph.support.append(SUPPORT)
    return graph


def _int8_product(step: Step) -> str | None:
    """The Linear whose int8 product `step` computes (int32 out; int8 activations and its int8
    `weight_t` in, nothing else), or None."""
    if len(step.arguments) != 3:
        return None
    out, x, weight = step.arguments
    if (out.dtype, x.dtype, weight.dtype) != (np.int32, np.int8, np.int8):
        return None
    if out.role != "scratch" or x.role != "scratch" or weight.role != "weight" or weight.data is None:
        return None
    layer, _, suffix = weight.label.rpartition(".")
    return layer if suffix == "weight_t" else None


def kernel_name(k: int, n: int) -> str:
    """The runtime library's function for one (K, N): `(out, x, w, colsum, rows)`."""
    return f"{PREFIX}_gemm_s8_{k}x{n}"


def library_source(shapes: list[tuple[int, int]]) -> str:
    """C for a shared library with a `kernel_name(K, N)` function for each (K, N): the tinygrad
    runtime's replay calls these (`edgevit.replay.int8`) and splits their rows over the cores."""
    functions = [_function(kernel_name(k, n), k, n) for k, n in sorted(set(shapes))]
    return "#include <stddef.h>\n" + template(SUPPORT) + "\n" + "\n".join(functions)


def int8_path(library: ctypes.CDLL) -> str:
    """The instructions `library`'s int8 products run on in this process, e.g. "tdpbssd (AMX-INT8)"
    (products of fewer rows than the template's EDGEVIT_AMX_MIN_ROWS stay on vpdpbusd)."""
    path = library.edgevit_int8_path
    path.restype = ctypes.c_char_p
    return path().decode()


def _function(name: str, k: int, n: int, rows: int | None = None) -> str:
    """`edgevit_gemm_s8` at one shape: constant sizes let the compiler unroll the tiles. With `rows`
    the export's static kernel; without, an exported function that takes the rows last."""
    head = "static void" if rows is not None else "void"
    rows_arg = "" if rows is not None else ", int rows"
    return (
        f"{head} {name}(int *restrict out, const signed char *restrict x, const signed char *restrict w,\n"
        f"    const int *restrict colsum{rows_arg}) {{\n"
        f"  edgevit_gemm_s8(out, x, w, colsum, {rows if rows is not None else 'rows'}, {k}, {n});\n}}\n"
    )
