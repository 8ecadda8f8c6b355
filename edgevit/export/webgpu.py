"""The explorer's graph for WebGPU: the kernels the C export captures, compiled by tinygrad's WGSL renderer.

The graph is the one edgevit.wasm runs (the inspection graph, batch 1: probabilities, attention, and
every layer's query, key, value and scores), taken from the same capture; each kernel's AST is
compiled again by tinygrad for WebGPU, with the optimisations its WEBGPU backend would apply
(workgroups, local sizes). The page (edgevit/demo/site/webgpu.js) makes one GPU buffer per buffer
here, uploads the weights once and, per image, writes the input and the knock-out mask, dispatches
every step in order and reads the outputs back. Two files: a JSON manifest, and the weights' bytes
as stored (int8 stays int8: WGSL reads four to a u32).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgevit import internals
from edgevit.export import capture, check_exportable
from edgevit.export.plan import Buffer, Graph
from edgevit.graph import probe_input
from edgevit.weights import ModelFile

FORMAT = 1  # the manifest's layout: the page refuses another
ALIGN = 4  # bytes: WebGPU buffer sizes and writeBuffer offsets are multiples of 4
OUTPUTS = ("probs", "attention", "query", "key", "value", "scores")
INPUTS = ("input", "knockout")


@dataclass(frozen=True)
class WebGPUGraph:
    manifest: dict  # webgpu.json
    weights: bytes  # webgpu.bin: every weight buffer's bytes, each at its manifest offset


def _padded(nbytes: int) -> int:
    return max(ALIGN, -(-nbytes // ALIGN) * ALIGN)


def _buffers(graph: Graph) -> tuple[list[dict], bytes]:
    """One entry per buffer (scratch values too: a GPU buffer each, no arena), and the weights' bytes."""
    entries, blob = [], bytearray()
    for buf in graph.buffers:
        entry = {"name": buf.name, "role": buf.role, "dtype": np.dtype(buf.dtype).name, "count": buf.count}
        entry["bytes"] = _padded(buf.nbytes)
        if buf.role == "weight":
            entry["offset"] = len(blob)
            data = np.ascontiguousarray(buf.data, np.dtype(buf.dtype).newbyteorder("<")).tobytes()
            blob += data + bytes(entry["bytes"] - len(data))
        entries.append(entry)
    return entries, bytes(blob)


def webgpu_graph(model: ModelFile) -> WebGPUGraph:
    """`model`'s inspection graph as WGSL kernels, buffers and steps (see the module's doc)."""
    check_exportable(model)
    graph = capture.capture(model, probe_input(model.config, 1), inspect=True)
    index: dict[Buffer, int] = {buf: i for i, buf in enumerate(graph.buffers)}
    sources: dict[str, int] = {}  # WGSL -> its place in `kernels`: steps that run the same kernel share it
    kernels, steps = [], []
    for step in graph.steps:
        kernel = internals.wgsl_kernel(step.call)
        if kernel.source not in sources:
            sources[kernel.source] = len(kernels)
            kernels.append({"entry": kernel.name, "source": kernel.source})
        buffers = [index[step.arguments[p]] for p in kernel.bindings]
        step_entry = {"kernel": sources[kernel.source], "workgroups": kernel.workgroups, "buffers": buffers}
        steps.append({**step_entry, "layer": step.layer})
    entries, blob = _buffers(graph)
    scale, mean, std = (float(v) for v in np.float32([1 / 255, model.mean, model.std]))
    roles = {role: index[bufs[0]] for role in (*INPUTS, *OUTPUTS) if (bufs := graph.role(role))}
    manifest = {
        "format": FORMAT,
        "model_id": model.sha256,
        "normalize": {"scale": scale, "mean": mean, "std": std},  # float32 values: (pixel * scale - mean) / std
        "roles": roles,
        "buffers": entries,
        "kernels": kernels,
        "steps": steps,
        "weights_bytes": len(blob),
    }
    return WebGPUGraph(manifest, blob)
