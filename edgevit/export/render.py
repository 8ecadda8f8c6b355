"""Write a `plan.Graph` as C: the templates in templates/ with the generated parts filled in.

Templates are real C, header and Makefile files with @NAME@ placeholders; everything that depends on
the model (weights, kernels, the memory plan, the calls) is generated here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import numpy as np

from edgevit.answer import Reject
from edgevit.errors import EdgeViTError
from edgevit.export.plan import IO_ROLES, Buffer, Graph, arena_name
from edgevit.internals import c_type
from edgevit.model import ViTConfig

TEMPLATES = resources.files("edgevit.export") / "templates"
# anything the portable renderer must never leave in the generated C
NON_PORTABLE = re.compile(r"__builtin|__attribute__|ext_vector_type|__fp16|_Float16|\blong\b|\bdouble\b")
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
VALUES_PER_LINE = 12


def template(name: str) -> str:
    return (TEMPLATES / name).read_text()


def fill(text: str, values: dict[str, object]) -> str:
    """Replace every @NAME@; a placeholder without a value is a bug, not an empty string."""

    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no value for template placeholder {match.group(0)}")
        return str(values[match.group(1)])

    return PLACEHOLDER.sub(value, text)


def c_literal(dtype: np.dtype, values: np.ndarray) -> list[str]:
    """C literals that read back bit for bit: 9 significant digits round-trip every float32."""
    if np.dtype(dtype) != np.float32:
        return [str(int(v)) for v in values]
    out = []
    for v in values.tolist():
        if v != v:
            out.append("NAN")
        elif v in (float("inf"), float("-inf")):
            out.append("INFINITY" if v > 0 else "-INFINITY")
        else:
            s = f"{v:.9g}"
            out.append((s if any(c in s for c in ".e") else s + ".0") + "f")
    return out


@dataclass(frozen=True)
class Model:
    """What the C file says about where it came from."""

    config: ViTConfig
    mean: float
    std: float
    model_id: str  # sha256 of the weights file
    source_name: str  # the weights file's name
    stack_note: str = "a few dozen bytes of locals in the entry points, plus the deepest kernel's"
    stack_bytes: int = 0
    reject: Reject = field(default_factory=Reject)  # when its answer is "not a digit"


def render(graph: Graph, model: Model) -> tuple[str, str]:
    """(edgevit_model.c, edgevit_model.h) for a captured graph."""
    cfg = model.config
    (inp,), (probs,) = graph.role("input"), graph.role("probs")
    attention = graph.role("attention")
    if inp.count != cfg.image_size**2 or probs.count != cfg.num_classes:
        raise EdgeViTError(f"graph input/output sizes {inp.count}/{probs.count} do not match the model config")
    kernels_c = "\n".join(graph.kernels.values())
    if leftover := NON_PORTABLE.search(kernels_c):
        raise EdgeViTError(f"tinygrad rendered non-portable C ({leftover.group(0)}); this tinygrad version is not supported")
    attention_size = cfg.depth * cfg.heads * cfg.tokens**2
    if attention:
        attention_note = f",\n *          {attention[0].nbytes} of them the attention maps"
    else:
        maps = 4 * cfg.depth * cfg.heads * cfg.tokens**2  # float32: what the maps alone would take
        attention_note = f"\n *          (exported without the attention maps: at least {maps} bytes less)"
    scratch = graph.role("scratch")
    reject = model.reject
    class_threshold = -1.0 if reject.class_threshold is None else reject.class_threshold  # -1: the likeliest class
    scale, mean, std, threshold, class_threshold = c_literal(
        np.dtype(np.float32), np.float32([1 / 255, model.mean, model.std, reject.threshold, class_threshold])
    )
    values = {
        **_graph_values(graph),
        "SOURCE_NAME": model.source_name,
        "MODEL_ID": model.model_id,
        "WEIGHTS_BYTES": graph.weights_bytes,
        "WEIGHTS_COUNT": len(graph.role("weight")),
        "RAM_BYTES": graph.ram_bytes,
        "ARENA_BYTES": graph.ram_bytes - graph.io_bytes,
        "SCRATCH_BYTES": sum(b.nbytes for b in scratch),
        "ATTENTION_NOTE": attention_note,
        "STACK_NOTE": model.stack_note,
        "STACK_BYTES": model.stack_bytes,
        "IMAGE_SIZE": cfg.image_size,
        "PIXELS": cfg.image_size**2,
        "PATCHES": cfg.num_patches,
        "PATCH_SIZE": cfg.patch_size,
        "DIM": cfg.dim,
        "NUM_CLASSES": cfg.num_classes,
        "DEPTH": cfg.depth,
        "HEADS": cfg.heads,
        "TOKENS": cfg.tokens,
        "HAS_ATTENTION": int(bool(attention)),
        "ATTENTION_SIZE": attention_size,
        "KERNELS": len(graph.kernels),
        "IO_BUFFERS": "\n".join(f"static float {b.name}[{b.count}];" for b in graph.buffers if b.role in IO_ROLES),
        "PIXEL_SCALE": scale,
        "MEAN": mean,
        "STD": std,
        "COPY_ATTENTION": _copy_attention(attention),
        **_inspect_values(graph, cfg),
        "REJECT_CLASS": -1 if model.reject.cls is None else model.reject.cls,
        "REJECT_THRESHOLD": threshold,
        "REJECT_CLASS_THRESHOLD": class_threshold,
    }
    return fill(template("edgevit_model.c"), values), fill(template("edgevit_model.h"), values)


def render_batch(graph: Graph, model: Model, batch: int) -> str:
    """edgevit_batch.c: a graph captured for `batch` images, for the C runtime's throughput library."""
    cfg = model.config
    (inp,), (probs,), attention = graph.role("input"), graph.role("probs"), graph.role("attention")
    layer_maps = cfg.heads * cfg.tokens**2
    if inp.count != batch * cfg.image_size**2 or probs.count != batch * cfg.num_classes:
        raise EdgeViTError(f"graph input/output sizes {inp.count}/{probs.count} do not match {batch} images of the model")
    if [a.count for a in attention] != [cfg.depth * batch * layer_maps]:
        raise EdgeViTError("the batch graph must have the attention maps")
    scale, mean, std = c_literal(np.dtype(np.float32), np.float32([1 / 255, model.mean, model.std]))
    values = {
        **_graph_values(graph),
        "BATCH": batch,
        "MODEL_ID": model.model_id,
        "SOURCE_NAME": model.source_name,
        "PIXELS": cfg.image_size**2,
        "NUM_CLASSES": cfg.num_classes,
        "DEPTH": cfg.depth,
        "LAYER_MAPS": layer_maps,
        "IO_BUFFERS": "\n".join(f"static float {b.name}[{b.count}];" for b in (inp, probs, *attention)),
        "PIXEL_SCALE": scale,
        "MEAN": mean,
        "STD": std,
        "ATTENTION": attention[0].name,
    }
    return fill(template("edgevit_batch.c"), values)


def _graph_values(graph: Graph) -> dict[str, object]:
    """What both templates fill from the graph itself: weights, arenas, kernels and the calls."""
    return {
        "WEIGHTS": "\n\n".join(_weight_array(b) for b in graph.role("weight")),
        "ARENAS": _arenas(graph),
        "SUPPORT_C": "".join(f"{template(name)}\n" for name in graph.support),
        "KERNELS_C": "\n".join(graph.kernels.values()),
        "STEPS": len(graph.steps),
        "ACTIVATIONS": _activations(graph),
        "CALLS": _calls(graph),
    }


def _weight_array(buf: Buffer) -> str:
    values = c_literal(buf.dtype, buf.data)
    lines = [", ".join(values[i : i + VALUES_PER_LINE]) for i in range(0, len(values), VALUES_PER_LINE)]
    body = ",\n  ".join(lines)
    return f"/* {buf.label} */\nstatic const {buf.c_type} {buf.name}[{buf.count}] = {{\n  {body}\n}};"


def _arenas(graph: Graph) -> str:
    lines = ["/* one arena per type; the activations below are named views into them */"]
    lines += [f"static {c_type(dt)} {arena_name(dt)}[{n}];" for dt, n in graph.arenas.items()]
    return "\n".join(lines)


def _activations(graph: Graph) -> str:
    """Named pointers into the arenas, in the order the forward pass first writes them."""
    lines = []
    for b in sorted(graph.role("scratch"), key=lambda b: b.first):
        lifetime = f"/* {b.count} values, live in steps {b.first}-{b.last} */"
        lines.append(f"  {b.c_type} *const {b.name} = {arena_name(b.dtype)} + {b.offset}; {lifetime}")
    return "\n".join(lines)


def _calls(graph: Graph) -> str:
    return "\n".join(f"  {s.kernel}({', '.join(b.name for b in s.arguments)}); /* {s.layer} */" for s in graph.steps)


def _inspect_values(graph: Graph, cfg: ViTConfig) -> dict[str, str]:
    """The explorer's entry point, edgevit_inspect, for a graph captured with its inspected outputs."""
    if not graph.role("knockout"):
        return {"INSPECT_C": "", "INSPECT_H": ""}
    head_dim = cfg.dim // cfg.heads
    qkv = cfg.depth * cfg.heads * cfg.tokens * head_dim
    if [len(graph.role(r)) for r in ("query", "key", "value", "scores")] != [1] * 4 or graph.role("query")[0].count != qkv:
        raise EdgeViTError("the inspected graph does not hand out one query, key, value and scores of every layer")
    values = {"HEAD_DIM": head_dim, "QKV_SIZE": qkv}
    return {"INSPECT_C": template("inspect.c"), "INSPECT_H": fill(template("inspect.h"), values)}


def _copy_attention(attention: list[Buffer]) -> str:
    if not attention:
        return "  (void)attention; /* exported without the attention maps */"
    return f"  if (attention != NULL)\n    for (i = 0; i < EDGEVIT_ATTENTION_SIZE; i++) attention[i] = {attention[0].name}[i];"
