"""Capture the inference graph on tinygrad's CPU backend with portable C kernels, and take it
apart into a `plan.Graph`: kernels de-duplicated and renamed, buffers named after the model's layers,
each step labelled with the layer it computes, scratch memory planned."""

from __future__ import annotations

import numpy as np
from tinygrad import Context, Tensor, TinyJit
from tinygrad.nn.state import get_state_dict

from edgevit import internals
from edgevit.device import select_device
from edgevit.errors import EdgeViTError
from edgevit.export.plan import PREFIX, Buffer, Graph, Step, arena_name, identifier, plan_memory
from edgevit.graph import INSPECTED, inference_graph, inspection_graph
from edgevit.quant.schemes import inference_layout
from edgevit.weights import ModelFile

# eager, capture, replay: the third call runs the captured kernels
CAPTURE_CALLS = 3


OUTPUTS = ("probs", "attention")
INSPECT_OUTPUTS = (*OUTPUTS, *INSPECTED)
INPUTS = ("input", "knockout")  # the image, then (the inspection graph's) the knocked-out tokens


def capture(model: ModelFile, probe: np.ndarray, beam: int = 0, attention: bool = True, inspect: bool = False) -> Graph:
    """Compile the inference graph with portable C kernels and take it apart.

    `probe` is any normalised (B, 1, H, W) input to run the graph with: the graph is for B images
    (the export's is for 1). `beam` > 0 lets tinygrad
    search each kernel's loop shapes by timing them on this machine (cached by tinygrad on disk).
    `attention` False captures the probabilities alone.
    """
    internals.require("the C export")
    select_device("CPU")
    vit = inference_layout(model.build())
    if inspect:
        jit, inputs = TinyJit(inspection_graph(vit, model.temperature)), (probe, np.zeros(model.config.tokens, np.float32))
    else:
        jit, inputs = TinyJit(inference_graph(vit, attention, model.temperature)), (probe,)
    with internals.portable_c_kernels() as asts, Context(BEAM=beam):
        for _ in range(CAPTURE_CALLS):
            outputs = jit(*(Tensor(x) for x in inputs))
    calls, output_args = internals.take_apart(jit, outputs, get_state_dict(vit), asts)
    return _layout(calls, output_args, INSPECT_OUTPUTS if inspect else OUTPUTS)


def _layout(calls: list[internals.KernelCall], output_args: list[internals.Argument], output_roles: tuple[str, ...]) -> Graph:
    """Kernels de-duplicated and renamed; every value a kernel writes a buffer of its own.

    tinygrad's planner already reuses one buffer for values that are never alive together (the
    residual stream, then a LayerNorm's output...). Here each write starts a new buffer, so every
    activation gets its own name and lifetime, and `plan_memory` packs them again.
    """
    roles = dict(zip(output_args, output_roles, strict=False))
    kernels: dict[str, str] = {}
    by_source: dict[str, str] = {}
    current: dict[internals.Argument, Buffer] = {}  # each argument's latest value
    buffers: list[Buffer] = []
    steps: list[Step] = []
    for index, call in enumerate(calls):
        if call.source not in by_source:
            # tinygrad names kernels by shape, so different kernels (two softmaxes) can share a name
            by_source[call.source] = new = f"{PREFIX}_k{len(kernels)}_{call.name}"
            # tinygrad loads each kernel's object file by its first byte, so only the export makes them static
            kernels[new] = call.source.replace(f"\nvoid {call.name}(", f"\nstatic void {new}(", 1)
        reads = {a for i, a in enumerate(call.arguments) if i not in call.writes}
        for position, arg in enumerate(call.arguments):
            fresh = arg not in current or (position in call.writes and arg.kind == "scratch" and arg not in reads)
            if fresh:
                current[arg] = _buffer(arg, roles.get(arg), len(buffers))
                current[arg].first = index
                buffers.append(current[arg])
            current[arg].last = index
        steps.append(Step(by_source[call.source], [current[a] for a in call.arguments], "", call))
    graph = Graph(kernels, steps, buffers)
    if [len(graph.role(r)) for r in ("input", "probs")] != [1, 1] or len(graph.role("attention")) > 1:
        raise EdgeViTError("the captured graph does not have one input and the expected outputs")
    _label_steps(graph.steps)
    plan_memory(graph)
    return graph


def _buffer(arg: internals.Argument, output_role: str | None, index: int) -> Buffer:
    if arg.kind == "input":
        role = INPUTS[int(arg.name.removeprefix("input"))]
        return Buffer(f"{PREFIX}_{role}", arg.dtype, arg.count, role)
    if arg.kind == "output":
        return Buffer(f"{PREFIX}_{output_role}", arg.dtype, arg.count, output_role)
    if arg.kind == "scratch":
        return Buffer(arena_name(arg.dtype), arg.dtype, arg.count, "scratch")
    label = arg.name or f"const{index}"
    return Buffer(f"{PREFIX}_{identifier(label)}", arg.dtype, arg.count, "weight", arg.data, label=label)


def _weights_layer(step: Step) -> str | None:
    """The layer whose weights a step reads (state-dict names minus their last part), or None.

    Scalars do not count: w8a8 fuses the quantization of the next layer's input (its one
    `input_scale`) into the step before it. Of several layers the one with the most weights wins, a
    shared prefix when they are siblings (embed.proj.weight_t + embed.cls_token -> embed).
    """
    sizes: dict[str, int] = {}
    for b in step.arguments:
        if b.role == "weight" and b.count > 1 and "." in b.label:
            layer = b.label.rsplit(".", 1)[0]
            sizes[layer] = sizes.get(layer, 0) + b.count
    if not sizes:
        return None
    parts = [layer.split(".") for layer in sizes]
    common = [p[0] for p in zip(*parts, strict=False) if len(set(p)) == 1]
    if len(common) == min(len(p) for p in parts) and common:
        return ".".join(common)
    return max(sizes, key=sizes.get)


# What the weightless steps before a weighted one compute, in order, when tinygrad fused them the
# usual way (checked by count: otherwise they are numbered). Names: (activation, comment).
PREPARED = {
    "layernorm": [("mean", "mean over the features"), ("variance", "variance over the features")],
    "attention": [
        ("scores", "scores QK^T/sqrt(d), every head"),
        ("max", "softmax: row maxima"),
        ("exp", "softmax: exp(scores - max)"),
        ("sum", "softmax: row sums"),
        ("weights", "softmax: the attention weights"),
        ("mixed", "attention weights x V: each token's new value"),
    ],
    "softmax": [("max", "softmax over the classes: maximum"), ("sum", "softmax over the classes: sum of exp")],
}


def _label_steps(steps: list[Step]) -> None:
    """Say what each step computes (the comment beside its call) and name the activation it writes.

    A step that reads a layer's weights computes that layer. The others (tinygrad fuses most
    weightless work into the steps around it) prepare the next weighted step: a LayerNorm's mean and
    variance, or the attention softmax and its weighted sum of the Values before the output
    projection; after the last weights comes the softmax over the classes.
    """
    layers = [_weights_layer(step) for step in steps]
    groups: dict[tuple[str, str], list[Step]] = {}
    taken: set[str] = set()
    for i, step in enumerate(steps):
        following = next((layer for layer in layers[i + 1 :] if layer), None)
        if layers[i]:
            step.layer = layers[i]
            _name(step.arguments[0], layers[i], taken)
        elif step.arguments[0].role == "probs":
            step.layer = "softmax over the classes"
        elif step.arguments[0].role == "attention":
            step.layer = "every layer's attention maps, out"
        elif quantized := _quantizes_input_of(step):
            step.layer = f"{quantized}: its input in int8"
            _name(step.arguments[0], f"{quantized}.input", taken)
        elif following is None:
            groups.setdefault(("head", "softmax"), []).append(step)
        elif following.endswith(("ln1", "ln2")) or following == "norm":
            groups.setdefault((following, "layernorm"), []).append(step)
        elif following.endswith("attn.proj"):
            groups.setdefault((following.removesuffix(".proj"), "attention"), []).append(step)
        else:
            groups.setdefault((following, "before"), []).append(step)
    for (layer, kind), members in groups.items():
        names = PREPARED.get(kind, [])
        if len(names) != len(members):
            names = [(f"t{n}", f"before {layer}") for n in range(len(members))]
        for step, (name, what) in zip(members, names, strict=True):
            step.layer = f"{layer}: {what}"
            _name(step.arguments[0], f"{layer}.{name}", taken)


def _quantizes_input_of(step: Step) -> str | None:
    """The w8a8 layer whose input a step does nothing but round to int8: it writes int8 from one
    activation and that layer's input scale. (Steps that also compute, like the attention's weighted
    sum of the Values, are named for what they compute.)"""
    scales = [b.label for b in step.arguments if b.role == "weight" and b.label.endswith(".input_scale")]
    if step.arguments[0].dtype != np.int8 or len(scales) != 1 or len(step.arguments) != 3:
        return None
    return scales[0].removesuffix(".input_scale")


def _name(buf: Buffer, label: str, taken: set[str]) -> None:
    """An activation is named after the step that writes it: blocks.0.attn.query -> blocks_0_attn_query."""
    if buf.role != "scratch" or buf.label:
        return
    name, n = identifier(label), 1
    while name in taken:  # a layer computed in two steps: blocks_0_mlp_fc1, blocks_0_mlp_fc1_2
        n += 1
        name = f"{identifier(label)}_{n}"
    taken.add(name)
    buf.label, buf.name = label, name
