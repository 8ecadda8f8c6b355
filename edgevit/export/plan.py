"""A captured graph as the C file will lay it out: named buffers, kernel steps, a static memory plan."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from edgevit.internals import KernelCall, c_type

PREFIX = "edgevit"
IO_ROLES = ("input", "knockout", "probs", "attention", "query", "key", "value", "scores")  # static arrays of their own
ROLES = ("weight", "scratch", *IO_ROLES)


@dataclass(eq=False)
class Buffer:
    name: str  # the C identifier
    dtype: np.dtype
    count: int  # elements
    role: str  # one of ROLES
    data: np.ndarray | None = None  # weights only
    label: str = ""  # weights: the state-dict name (blocks.0.attn.query.weight_t); scratch: the layer writing it
    offset: int = 0  # scratch only: element offset in its dtype's arena
    first: int = 0  # scratch only: first and last step that touch it
    last: int = 0

    @property
    def nbytes(self) -> int:
        return self.count * np.dtype(self.dtype).itemsize

    @property
    def c_type(self) -> str:
        return c_type(self.dtype)


@dataclass
class Step:
    kernel: str  # the C function it calls
    arguments: list[Buffer]
    layer: str  # what part of the model it computes, for the comment beside the call
    call: KernelCall | None = None  # the captured kernel (the WebGPU export renders it again)


@dataclass
class Graph:
    kernels: dict[str, str]  # C function name -> its source
    steps: list[Step]
    buffers: list[Buffer]
    arenas: dict[np.dtype, int] = field(default_factory=dict)  # scratch dtype -> elements
    support: list[str] = field(default_factory=list)  # hand-written C templates the kernels call

    def role(self, role: str) -> list[Buffer]:
        return [b for b in self.buffers if b.role == role]

    @property
    def weights_bytes(self) -> int:
        return sum(b.nbytes for b in self.role("weight"))

    @property
    def io_bytes(self) -> int:
        return sum(b.nbytes for b in self.buffers if b.role in IO_ROLES)

    @property
    def ram_bytes(self) -> int:
        """Every static mutable array: the input, the outputs and the scratch arenas."""
        return self.io_bytes + sum(n * np.dtype(dt).itemsize for dt, n in self.arenas.items())


def arena_name(dtype: np.dtype) -> str:
    return f"{PREFIX}_arena_{c_type(dtype).replace(' ', '_')}"


def identifier(text: str) -> str:
    """A C identifier from a layer name: blocks.0.attn.query -> blocks_0_attn_query."""
    return re.sub(r"\W", "_", text)


def plan_memory(graph: Graph) -> None:
    """Place each scratch buffer in its dtype's arena; buffers whose lifetimes overlap never overlap.

    Greedy by size, first fit: what tinygrad's planner does, but per dtype, so the C never reads one
    type through a pointer to another.
    """
    placed: dict[np.dtype, list[Buffer]] = {}
    for buf in sorted(graph.role("scratch"), key=lambda b: -b.count):
        others = [o for o in placed.setdefault(buf.dtype, []) if o.first <= buf.last and buf.first <= o.last]
        offset = 0
        for o in sorted(others, key=lambda o: o.offset):
            if offset + buf.count <= o.offset:
                break
            offset = max(offset, o.offset + o.count)
        buf.offset = offset
        placed[buf.dtype].append(buf)
    graph.arenas = {dt: max(b.offset + b.count for b in bufs) for dt, bufs in placed.items()}
