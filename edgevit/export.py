"""Export a weights file's compiled attention graph as one dependency-free C99 file.

tinygrad's CPU backend already writes every kernel as C. The exporter captures the graph the
tinygrad runtime runs (`runtime.inference_graph`, batch 1) with a renderer that emits portable C99
(scalar code, math.h, no compiler builtins, no threads), then lays out in one translation unit:
the kernels, the weights in their stored dtype (int8 stays int8) as const arrays, a static memory
plan for the activations, and the entry points declared in `edgevit_model.h`. No heap, no libc
beyond math.h, so the same file builds for a laptop, a Raspberry Pi or a microcontroller.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from tinygrad.dtype import AddrSpace, DType, dtypes
from tinygrad.renderer.cstyle import ClangRenderer
from tinygrad.uop.ops import Ops, PatternMatcher, UOp, UPat

from edgevit.errors import EdgeViTError

PREFIX = "edgevit"
SOURCES = ("edgevit_model.c", "edgevit_model.h", "main.c", "Makefile")
# the library is built for this machine from kernels BEAM-searched on it; BEAM times candidates as
# tinygrad compiles them (clang -O2 -march=native -fno-math-errno), so the library is built the same
# way. Measured per image (fp32): 313 us untuned, 162 us with BEAM=2 and -march=native, and about
# 3% less with -fno-math-errno (the model never reads errno).
LIBRARY_CFLAGS = ("-std=c99", "-O2", "-march=native", "-fno-math-errno", "-fPIC", "-shared")
LIBRARY_BEAM = 2
# anything the portable renderer must never leave in the generated C
NON_PORTABLE = re.compile(r"__builtin|__attribute__|ext_vector_type|__fp16|_Float16|\blong\b|\bdouble\b")
C_TYPES = {dtypes.float32: "float", dtypes.int32: "int", dtypes.int8: "signed char", dtypes.uint8: "unsigned char"}
SCHEMES = ("fp32", "int8", "w8a8")  # fp16: C99 has no portable half type; int4: packed nibbles


# tinygrad compiles each kernel alone, freestanding, without math.h: this prelude makes a kernel
# compile there; the export strips it and includes math.h once instead
KERNEL_PRELUDE = (
    '#define INFINITY __builtin_inff()\n#define NAN __builtin_nanf("")\n'
    "#define sqrtf __builtin_sqrtf\n#define truncf __builtin_truncf\n#define exp2f __builtin_exp2f\n"
)


def _render_bitcast(ctx, x: UOp) -> str | None:
    if x.addrspace in (AddrSpace.GLOBAL, AddrSpace.LOCAL):
        return None  # a pointer cast, which ClangRenderer already writes as plain C
    # C99 reinterprets bits through a union; a compound literal keeps it one expression
    source, target = _c_type(x.src[0].dtype), _c_type(x.dtype)
    return f"(((union {{ {source} from; {target} to; }}){{ .from = {ctx[x.src[0]]} }}).to)"


def _c_type(dtype: DType) -> str:
    if dtype not in C_TYPES:
        raise EdgeViTError(f"the graph uses {dtype.name}, which the C export does not support")
    return C_TYPES[dtype]


def _arena_name(dtype: DType) -> str:
    return f"{PREFIX}_scratch_{_c_type(dtype).replace(' ', '_')}"


class PortableC(ClangRenderer):
    """tinygrad's C renderer restricted to C99 any compiler takes: gcc, clang, MSVC-free embedded toolchains.

    Scalar loads instead of clang vector types (compilers vectorise plain loops themselves), math.h
    instead of __builtin_*, a union instead of __builtin_bit_cast, no thread index, and const on every
    buffer a kernel only reads, so the weights can stay in flash.
    """

    supports_float4 = False
    has_threads = False
    infinity, nan = "INFINITY", "NAN"
    code_for_op: ClassVar[dict] = {
        **ClangRenderer.code_for_op,
        Ops.SQRT: lambda x, dtype: f"sqrtf({x})",
        Ops.TRUNC: lambda x, dtype: f"truncf({x})",
        Ops.EXP2: lambda x, dtype: f"exp2f({x})",
    }
    string_rewrite = PatternMatcher([(UPat(Ops.BITCAST, name="x"), _render_bitcast)]) + ClangRenderer.string_rewrite

    def render_kernel(self, function_name, kernel, bufs, uops, prefix=None) -> str:
        return KERNEL_PRELUDE + super().render_kernel(function_name, kernel, bufs, uops, prefix)

    def _render_dtype(self, dtype, sz=1, addrspace=AddrSpace.ALU, mutable=True, override_ptr=False, shape=None):
        rendered = super()._render_dtype(dtype, sz, addrspace, mutable, override_ptr, shape)
        read_only_argument = addrspace == AddrSpace.GLOBAL and not mutable and not override_ptr
        return "const " + rendered if read_only_argument else rendered


# --- capturing the graph ------------------------------------------------------------------------
@dataclass
class Buffer:
    name: str
    dtype: DType
    count: int
    role: str  # "weight", "scratch", "input", "probs" or "attention"
    data: np.ndarray | None = None  # weights only
    offset: int = 0  # scratch only: element offset in its dtype's arena
    first: int = 0  # scratch only: first and last step that touch it
    last: int = 0

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


@dataclass
class Graph:
    kernels: dict[str, str]  # function name -> C source
    steps: list[tuple[str, list[Buffer]]]  # kernel calls in order, with their arguments
    buffers: list[Buffer]
    arenas: dict[DType, int] = field(default_factory=dict)  # scratch dtype -> elements

    def role(self, role: str) -> list[Buffer]:
        return [b for b in self.buffers if b.role == role]

    @property
    def weights_bytes(self) -> int:
        return sum(b.nbytes for b in self.role("weight"))

    @property
    def ram_bytes(self) -> int:
        """Every static mutable array: the input, the outputs and the scratch arenas."""
        io = sum(b.nbytes for b in self.buffers if b.role in ("input", "probs", "attention"))
        return io + sum(n * dt.itemsize for dt, n in self.arenas.items())


def capture(header, config, scheme: str, probe: np.ndarray, beam: int = 0) -> Graph:
    """Compile the batch-1 inference graph with `PortableC` on the CPU backend and take it apart.

    `probe` is any normalised (1, 1, H, W) input to run the graph with. `beam` > 0 lets tinygrad
    search each kernel's loop shapes by timing them on this machine (cached by tinygrad on disk).
    """
    from tinygrad import Context, Device, Tensor, TinyJit
    from tinygrad.nn.state import get_state_dict

    from edgevit.device import select_device
    from edgevit.model import inference_layout
    from edgevit.runtime import inference_graph
    from edgevit.weights import build_model

    select_device("CPU")
    device = Device["CPU"]
    model = inference_layout(build_model(header, config, scheme))
    original = device.renderers
    device.renderers = [PortableC]  # the device picks its renderer from this list on every compile
    try:
        jit = TinyJit(inference_graph(model))
        with Context(BEAM=beam):
            for _ in range(3):  # eager, capture, replay: the replay runs the captured kernels
                probs, attention = jit(Tensor(probe))
    finally:
        device.renderers = original
    names = {t.uop.base: name.replace(".", "_") for name, t in get_state_dict(model).items()}
    return _take_apart(jit.captured.linear, (probs.uop.base, attention.uop.base), names)


def _take_apart(linear: UOp, outputs: tuple[UOp, UOp], names: dict[UOp, str]) -> Graph:
    from tinygrad.engine.realize import get_call_arg_uops, get_call_outs_ins
    from tinygrad.uop.ops import buffers

    calls = []
    written: set[UOp] = set()
    for call in linear.src:
        program = call.src[0]
        if program.op is not Ops.PROGRAM:
            raise EdgeViTError(f"cannot export a graph step of type {program.op.name}")
        if program.arg.vars or program.arg.global_size != (1, 1, 1):
            name = program.arg.function_name
            raise EdgeViTError(f"kernel {name} needs launch variables; the C export runs each kernel once per image")
        args = get_call_arg_uops(call)
        written |= {args[i] for i in get_call_outs_ins(call)[0]}
        source = next(s.arg for s in program.src if s.op is Ops.SOURCE)
        calls.append((source, [args[i] for i in program.arg.globals]))

    kernels: dict[str, str] = {}
    by_source: dict[str, str] = {}
    known: dict[UOp, Buffer] = {}
    steps = []
    for step, (source, args) in enumerate(calls):
        if source not in by_source:
            # tinygrad names kernels by shape, so different kernels (two softmaxes) can share a name
            old = re.search(r"^void (\w+)\(", source, re.MULTILINE).group(1)
            by_source[source] = new = f"{PREFIX}_k{len(kernels)}_{old}"
            # tinygrad loads each kernel's object file by its first byte, so only the export makes them static
            kernels[new] = source.replace(f"\nvoid {old}(", f"\nstatic void {new}(", 1)
        bufs = []
        for u in args:
            if u not in known:
                known[u] = _classify(u, len(known), u in written, outputs, names, buffers)
                known[u].first = step
            known[u].last = step
            bufs.append(known[u])
        steps.append((by_source[source], bufs))
    graph = Graph(kernels, steps, list(known.values()))
    if len(graph.role("input")) != 1 or len(graph.role("probs")) != 1 or len(graph.role("attention")) != 1:
        raise EdgeViTError("the captured graph does not have one input and the two expected outputs")
    _plan_memory(graph)
    return graph


def _classify(u: UOp, index: int, written: bool, outputs: tuple[UOp, UOp], names: dict[UOp, str], buffers) -> Buffer:
    count = int(np.prod(u.shape))
    _c_type(u.dtype)  # refuses a dtype the C file could not declare
    if u.op is Ops.PARAM:
        return Buffer(f"{PREFIX}_input", u.dtype, count, "input")
    if u in outputs:
        role = ("probs", "attention")[outputs.index(u)]
        return Buffer(f"{PREFIX}_{role}", u.dtype, count, role)
    if written:
        return Buffer(_arena_name(u.dtype), u.dtype, count, "scratch")
    if u.op is not Ops.BUFFER or u not in buffers:
        raise EdgeViTError(f"cannot export a read-only {u.op.name} argument: only whole weight buffers are supported")
    data = buffers[u].numpy()[:count].copy()
    return Buffer(f"{PREFIX}_{names.get(u, f'const{index}')}", u.dtype, count, "weight", data)


def _plan_memory(graph: Graph) -> None:
    """Place each scratch buffer in its dtype's arena; buffers whose lifetimes overlap never overlap.

    Greedy by size, first fit: what tinygrad's planner does, but per dtype, so the C never reads one
    type through a pointer to another.
    """
    placed: dict[DType, list[Buffer]] = {}
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


# --- writing C ----------------------------------------------------------------------------------
def _literal(dtype: DType, values: np.ndarray) -> list[str]:
    if dtype != dtypes.float32:
        return [str(int(v)) for v in values]
    out = []
    for v in values.tolist():
        if v != v:
            out.append("NAN")
        elif v in (float("inf"), float("-inf")):
            out.append("INFINITY" if v > 0 else "-INFINITY")
        else:
            s = f"{v:.9g}"  # 9 significant digits round-trip every float32 exactly
            out.append((s if any(c in s for c in ".e") else s + ".0") + "f")
    return out


def _array(buf: Buffer, per_line: int = 12) -> str:
    values = _literal(buf.dtype, buf.data)
    lines = [", ".join(values[i : i + per_line]) for i in range(0, len(values), per_line)]
    body = ",\n  ".join(lines)
    return f"static const {_c_type(buf.dtype)} {buf.name}[{buf.count}] = {{\n  {body}\n}};"


def _argument(buf: Buffer) -> str:
    return f"{buf.name} + {buf.offset}" if buf.role == "scratch" else buf.name


@dataclass(frozen=True)
class Export:
    """What one export wrote, for the report and the C runtime."""

    files: dict[str, Path]
    weights_bytes: int  # const data: flash on a microcontroller
    ram_bytes: int  # every static mutable array
    kernels: int
    steps: int


def render(graph: Graph, config, mean: float, std: float, model_id: str, source_name: str) -> tuple[str, str]:
    """(edgevit_model.c, edgevit_model.h) for a captured graph."""
    size = config.image_size
    pixels = size * size
    (inp,), (probs,), (attention,) = graph.role("input"), graph.role("probs"), graph.role("attention")
    if inp.count != pixels or probs.count != config.num_classes:
        raise EdgeViTError(f"graph input/output sizes {inp.count}/{probs.count} do not match the model config")
    weights = graph.role("weight")
    weights_bytes, ram_bytes = graph.weights_bytes, graph.ram_bytes

    kernels_c = "\n".join(source.replace(KERNEL_PRELUDE, "") for source in graph.kernels.values())
    leftover = NON_PORTABLE.search(kernels_c)
    if leftover:
        raise EdgeViTError(f"tinygrad rendered non-portable C ({leftover.group(0)}); this tinygrad version is not supported")
    calls = "\n".join(f"  {name}({', '.join(_argument(b) for b in bufs)});" for name, bufs in graph.steps)
    shape = f"({config.depth}, {config.heads}, {config.tokens}, {config.tokens})"
    attention_doc = f"(layer, head, query token, key token) = {shape}"
    scale, mean_c, std_c = _literal(dtypes.float32, np.float32([1 / 255, mean, std]))

    h = f"""/* EdgeViT model exported from {source_name} (weights sha256 {model_id}).
 * Generated by `python tools/export.py`; regenerate rather than edit.
 *
 * Flash (const weights): {weights_bytes} bytes.  RAM (static buffers): {ram_bytes} bytes.  No heap.
 * The functions share static buffers: call them from one thread at a time.
 */
#ifndef EDGEVIT_MODEL_H
#define EDGEVIT_MODEL_H

#include <stdint.h>

#define EDGEVIT_IMAGE_SIZE {size}
#define EDGEVIT_PIXELS {pixels}
#define EDGEVIT_NUM_CLASSES {config.num_classes}
#define EDGEVIT_ATTENTION_SIZE {attention.count} /* floats: {attention_doc} */
#define EDGEVIT_WEIGHTS_BYTES {weights_bytes}
#define EDGEVIT_RAM_BYTES {ram_bytes}

/* A 28x28 MNIST-style image (white digit on black, row-major) -> the digit; probs gets all ten. */
int edgevit_classify(const uint8_t image[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES]);

/* The same from float pixels on [0, 255]; attention (EDGEVIT_ATTENTION_SIZE floats) may be NULL. */
int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention);

/* count images one after another: pixels (count, EDGEVIT_PIXELS), probs (count, EDGEVIT_NUM_CLASSES),
 * attention NULL or (count, EDGEVIT_ATTENTION_SIZE). Returns 0. */
int edgevit_classify_many(const float *pixels, int count, float *probs, float *attention);

/* The sha256 of the weights file this model was exported from. */
const char *edgevit_model_id(void);

#endif
"""
    weight_arrays = "\n\n".join(_array(b) for b in weights)
    arenas = "\n".join(f"static {_c_type(dt)} {_arena_name(dt)}[{n}];" for dt, n in graph.arenas.items())
    c = f"""/* EdgeViT model exported from {source_name} (weights sha256 {model_id}).
 * Generated by `python tools/export.py` from tinygrad's compiled graph; regenerate rather than edit.
 * C99; needs only math.h. Weights: {len(weights)} const arrays, {weights_bytes} bytes.
 * {len(graph.kernels)} kernels, {len(graph.steps)} calls per image.
 */
#include <math.h>
#include <stddef.h>

#include "edgevit_model.h"

/* the kernels reinterpret float bits as int: both must be 32 bits */
typedef char {PREFIX}_int_is_32_bits[sizeof(int) == 4 && sizeof(float) == 4 ? 1 : -1];

/* ---- weights ---- */
{weight_arrays}

/* ---- activations: one arena per type, buffers with disjoint lifetimes share space ---- */
{arenas}
static float {inp.name}[{inp.count}];
static float {probs.name}[{probs.count}];
static float {attention.name}[{attention.count}];

/* ---- kernels, as tinygrad generated them ---- */
{kernels_c}

static void {PREFIX}_forward(void) {{
{calls}
}}

int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention) {{
  int i, best = 0;
  /* the training normalisation, in the same float32 steps as edgevit.data.normalize */
  for (i = 0; i < EDGEVIT_PIXELS; i++) {inp.name}[i] = (pixels[i] * {scale} - {mean_c}) / {std_c};
  {PREFIX}_forward();
  for (i = 0; i < EDGEVIT_NUM_CLASSES; i++) {{
    probs[i] = {probs.name}[i];
    if (probs[i] > probs[best]) best = i;
  }}
  if (attention != NULL)
    for (i = 0; i < EDGEVIT_ATTENTION_SIZE; i++) attention[i] = {attention.name}[i];
  return best;
}}

int edgevit_classify(const uint8_t image[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES]) {{
  float pixels[EDGEVIT_PIXELS];
  int i;
  for (i = 0; i < EDGEVIT_PIXELS; i++) pixels[i] = (float)image[i];
  return edgevit_classify_pixels(pixels, probs, NULL);
}}

int edgevit_classify_many(const float *pixels, int count, float *probs, float *attention) {{
  int n;
  for (n = 0; n < count; n++)
    edgevit_classify_pixels(pixels + (size_t)n * EDGEVIT_PIXELS, probs + (size_t)n * EDGEVIT_NUM_CLASSES,
                            attention == NULL ? NULL : attention + (size_t)n * EDGEVIT_ATTENTION_SIZE);
  return 0;
}}

const char *edgevit_model_id(void) {{ return "{model_id}"; }}
"""
    return c, h


MAIN_C = r"""/* Example: classify 28x28 digits with the exported EdgeViT model.
 *
 *   ./edgevit digit.pgm [more.pgm ...]   prints "DIGIT PROBABILITY" (and the path when given several)
 *
 * Input: a binary PGM (P5, 8-bit) of 28x28 pixels, or a raw file of exactly 784 bytes, white digit on
 * black as in MNIST. Other images need EdgeViT's preprocessing first (edgevit-classify does it).
 */
#include <stdio.h>
#include <string.h>

#include "edgevit_model.h"

static int skip_space_and_comments(FILE *f) {
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') {
      while ((c = fgetc(f)) != EOF && c != '\n') {}
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      ungetc(c, f);
      return 1;
    }
  }
  return 0;
}

static int read_number(FILE *f, int *value) { return skip_space_and_comments(f) && fscanf(f, "%d", value) == 1; }

/* 0 on success, else prints why to stderr */
static int read_image(const char *path, uint8_t image[EDGEVIT_PIXELS]) {
  unsigned char magic[2];
  int width, height, maxval;
  long size;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    fprintf(stderr, "edgevit: error: cannot open %s\n", path);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  size = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (fread(magic, 1, 2, f) == 2 && magic[0] == 'P' && magic[1] == '5') {
    if (!read_number(f, &width) || !read_number(f, &height) || !read_number(f, &maxval) || maxval <= 0 || maxval > 255) {
      fprintf(stderr, "edgevit: error: %s: not an 8-bit binary PGM\n", path);
      fclose(f);
      return 1;
    }
    if (width != EDGEVIT_IMAGE_SIZE || height != EDGEVIT_IMAGE_SIZE) {
      fprintf(stderr, "edgevit: error: %s is %dx%d; expected %dx%d\n", path, width, height, EDGEVIT_IMAGE_SIZE,
              EDGEVIT_IMAGE_SIZE);
      fclose(f);
      return 1;
    }
    fgetc(f); /* the single whitespace before the pixels */
  } else if (size == EDGEVIT_PIXELS) {
    fseek(f, 0, SEEK_SET);
    maxval = 255;
  } else {
    fprintf(stderr, "edgevit: error: %s is neither a binary PGM nor %d raw bytes\n", path, EDGEVIT_PIXELS);
    fclose(f);
    return 1;
  }
  if (fread(image, 1, EDGEVIT_PIXELS, f) != EDGEVIT_PIXELS) {
    fprintf(stderr, "edgevit: error: %s is truncated\n", path);
    fclose(f);
    return 1;
  }
  fclose(f);
  if (maxval != 255) {
    int i;
    for (i = 0; i < EDGEVIT_PIXELS; i++) image[i] = (uint8_t)(image[i] > maxval ? 255 : image[i] * 255 / maxval);
  }
  return 0;
}

int main(int argc, char **argv) {
  uint8_t image[EDGEVIT_PIXELS];
  float probs[EDGEVIT_NUM_CLASSES];
  int i, failed = 0;
  if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
    fprintf(stderr, "usage: %s IMAGE.pgm [IMAGE.pgm ...]\n", argv[0]);
    return argc < 2 ? 2 : 0;
  }
  for (i = 1; i < argc; i++) {
    int digit;
    if (read_image(argv[i], image) != 0) {
      failed = 1;
      continue;
    }
    digit = edgevit_classify(image, probs);
    if (argc == 2) printf("%d %.4f\n", digit, probs[digit]);
    else printf("%d %.4f %s\n", digit, probs[digit], argv[i]);
  }
  return failed;
}
"""

MAKEFILE = """# Build the exported EdgeViT model. Nothing but a C99 compiler and libm is needed.
#   make                                   native build: ./edgevit digit.pgm
#   make libedgevit.so                     shared library (edgevit-classify --runtime c --c-library ...)
#   make CC=aarch64-linux-gnu-gcc          64-bit ARM (Raspberry Pi 3/4/5) from x86: apt-get install gcc-aarch64-linux-gnu
#   make CC=clang                          on x86, clang's int8 code is about 2x faster than gcc 12's
CFLAGS ?= -O2
CFLAGS += -std=c99 -Wall -Wextra
LDLIBS = -lm

edgevit: main.c edgevit_model.c edgevit_model.h
\t$(CC) $(CFLAGS) -o $@ main.c edgevit_model.c $(LDLIBS)

libedgevit.so: edgevit_model.c edgevit_model.h
\t$(CC) $(CFLAGS) -fPIC -shared -o $@ edgevit_model.c $(LDLIBS)

clean:
\trm -f edgevit libedgevit.so

.PHONY: clean
"""


def export(weights_path: str | os.PathLike, out_dir: str | os.PathLike, beam: int = 0) -> Export:
    """Write edgevit_model.c/.h, main.c and a Makefile for `weights_path` into `out_dir` (created).

    `beam` tunes the kernels for this machine (see `capture`); the C stays portable either way.
    Files are written atomically; nothing else in `out_dir` is touched.
    """
    from edgevit.runtime import probe_input
    from edgevit.weights import atomic_write, file_sha256, open_model_file

    weights_path, out_dir = Path(weights_path), Path(out_dir)
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    if scheme not in SCHEMES:
        supported = f"{', '.join(SCHEMES[:-1])} and {SCHEMES[-1]}"
        raise EdgeViTError(f"{weights_path}: the C export supports {supported} weights, not {scheme}")
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeViTError(f"{out_dir} exists and is not a directory")
    if beam < 0:
        raise EdgeViTError(f"--beam must be 0 (no search) or more, not {beam}")
    graph = capture(header, config, scheme, probe_input(config, 1), beam)
    c, h = render(graph, config, mean, std, file_sha256(weights_path), weights_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    contents = dict(zip(SOURCES, (c, h, MAIN_C, MAKEFILE), strict=True))
    files = {}
    for name, text in contents.items():
        files[name] = out_dir / name
        atomic_write(files[name], lambda tmp, text=text: tmp.write_text(text))
    return Export(files, graph.weights_bytes, graph.ram_bytes, len(graph.kernels), len(graph.steps))


# --- building it for this machine ---------------------------------------------------------------
def find_compiler() -> str:
    """$CC, else clang (tinygrad's CPU backend needs it anyway; its code was the faster here), cc or gcc."""
    for candidate in (os.environ.get("CC"), "clang", "cc", "gcc"):
        if candidate and shutil.which(candidate.split()[0]):
            return candidate
    raise EdgeViTError("the C runtime needs a C compiler: install gcc or clang, or set $CC")


def build_library(weights_path: str | os.PathLike, library: str | os.PathLike, beam: int = LIBRARY_BEAM) -> Path:
    """Export `weights_path` with kernels tuned for this machine and compile it into the shared library
    `library` (atomically)."""
    from edgevit.weights import atomic_write

    compiler = find_compiler().split()
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        result = export(weights_path, tmp, beam=beam)

        def compile_to(target: Path) -> None:
            cmd = [*compiler, *LIBRARY_CFLAGS, "-o", str(target), str(result.files["edgevit_model.c"]), "-lm"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise EdgeViTError(f"compiling the exported model failed ({' '.join(cmd[:2])} ...): {last}")

        atomic_write(library, compile_to)
    return Path(library)
