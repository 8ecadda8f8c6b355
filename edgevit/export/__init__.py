"""Export a weights file's compiled attention graph as one dependency-free C99 file.

tinygrad's CPU backend already writes every kernel as C. The exporter captures the graph the tinygrad
runtime runs (`edgevit.graph.inference_graph`, batch 1) with a renderer that emits portable C99
(`capture`), lays it out with a static memory plan (`plan`), and fills the C templates in templates/
(`render`): the kernels, the weights in their stored dtype (int8 stays int8) as const arrays, the
activations as named views into per-type arenas, and the entry points of edgevit_model.h. No heap,
no libc beyond math.h, so the same file builds for a laptop, a Raspberry Pi or a microcontroller.
`build` compiles it for this machine (the C runtime's library).
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from edgevit.errors import EdgeViTError
from edgevit.export import build, capture, int8
from edgevit.export.render import Model, render, render_batch, template
from edgevit.files import atomic_write
from edgevit.graph import probe_input
from edgevit.quant import schemes
from edgevit.weights import ModelFile, model_file

SOURCES = ("edgevit_model.c", "edgevit_model.h", "main.c", "Makefile")
LIBRARY_BEAM = 2  # the C runtime's library is built from kernels searched this wide on this machine
# written into every export's folder: an export may write into a folder only when it holds this
MARKER, MARKER_TEXT = ".edgevit-export", "written by edgevit export; a later export may overwrite this folder's files\n"


@dataclass(frozen=True)
class Export:
    """What one export wrote, for the report and the C runtime."""

    files: dict[str, Path]
    weights_bytes: int  # const data: flash on a microcontroller
    ram_bytes: int  # every static mutable array
    stack_bytes: int | None  # the deepest entry-point call, measured by this machine's compiler
    kernels: int
    steps: int


def check_exportable(model: ModelFile) -> None:
    if not schemes.get(model.scheme).c_export:
        supported = f"{', '.join(schemes.C_EXPORTABLE[:-1])} and {schemes.C_EXPORTABLE[-1]}"
        why = schemes.get(model.scheme).why_not_c
        raise EdgeViTError(f"{model.path}: the C export supports {supported} weights, not {model.scheme} ({why})")


def _model(model: ModelFile, **fields) -> Model:
    return Model(model.config, model.mean, model.std, model.sha256, model.path.name, **fields)


def export(
    weights: str | os.PathLike | ModelFile,
    out_dir: str | os.PathLike,
    beam: int = 0,
    attention: bool = True,
    inspect: bool = False,
) -> Export:
    """Write edgevit_model.c/.h, main.c and a Makefile for `weights` into `out_dir` (created).

    `beam` tunes the kernels for this machine (see `capture`); the C stays portable either way.
    `attention` False leaves the attention maps out (less RAM); `inspect` adds edgevit_inspect, the
    explorer's entry point (every layer's query, key, value and scores, and patches knocked out).
    Files are written atomically; nothing else in `out_dir` is touched.
    """
    model, out_dir = model_file(weights), Path(out_dir)
    check_exportable(model)
    check_target(out_dir)
    if beam < 0:
        raise EdgeViTError(f"--beam must be 0 (no search) or more, not {beam}")
    try:  # before the capture: a bad output fails in a second, not after minutes of search
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeViTError(f"{out_dir}: cannot create the output directory ({e.strerror})") from None
    captured = capture.capture(model, probe_input(model.config, 1), beam, attention, inspect)
    graph = int8.use_dot_products(captured, model.config)
    described = _model(model, reject=model.reject)
    c, h = render(graph, described)
    stack = _measure_stack(c, h)
    if stack is not None:
        compiler = build.find_compiler().split()[0]
        note = f"{stack} bytes at most, measured with `{compiler} -O2 -fstack-usage` for {platform.machine()}"
        _, h = render(graph, replace(described, stack_note=note + " (other compilers and targets differ)", stack_bytes=stack))
    contents = {"edgevit_model.c": c, "edgevit_model.h": h, "main.c": template("main.c"), "Makefile": template("Makefile")}
    atomic_write(out_dir / MARKER, lambda tmp: tmp.write_text(MARKER_TEXT))
    files = {}
    for name, text in contents.items():
        files[name] = out_dir / name
        atomic_write(files[name], lambda tmp, text=text: tmp.write_text(text))
    return Export(files, graph.weights_bytes, graph.ram_bytes, stack, len(graph.kernels), len(graph.steps))


def check_target(out_dir: Path) -> None:
    """Refuse, by name, an output folder that holds files an export did not write (its MARKER says
    which did): nothing of the user's is overwritten, and the root or a mount point is never used."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeViTError(f"{out_dir} exists and is not a directory")
    if out_dir.absolute().parent == out_dir.absolute() or out_dir.is_mount():
        raise EdgeViTError(f"{out_dir} is the root or a mount point: export into a folder inside it")
    try:
        foreign = out_dir.is_dir() and any(out_dir.iterdir()) and (out_dir / MARKER).read_text() != MARKER_TEXT
    except (OSError, UnicodeDecodeError):
        foreign = True
    if foreign:
        raise EdgeViTError(f"{out_dir} holds files that are not an EdgeViT export (no {MARKER}): not writing into it")


def _measure_stack(c: str, h: str) -> int | None:
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        (Path(tmp) / "edgevit_model.h").write_text(h)
        (Path(tmp) / "edgevit_model.c").write_text(c)
        return build.stack_bytes(Path(tmp) / "edgevit_model.c")


def build_library(model: ModelFile, library: str | os.PathLike, beam: int = LIBRARY_BEAM) -> Path:
    """Export `model` with kernels tuned for this machine and compile it into the shared library
    `library` (atomically)."""
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        result = export(model, tmp, beam=beam)
        atomic_write(library, lambda target: build.compile_library(result.files["edgevit_model.c"], target))
    return Path(library)


def build_batch_library(model: ModelFile, library: str | os.PathLike, batch: int, beam: int = LIBRARY_BEAM) -> Path:
    """The C runtime's throughput library: the graph captured for `batch` images at once, its kernels
    tuned for this machine (`edgevit_classify_batch` in templates/edgevit_batch.c), compiled into
    `library` (atomically)."""
    check_exportable(model)
    graph = int8.use_dot_products(capture.capture(model, probe_input(model.config, batch), beam), model.config)
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        source = Path(tmp) / "edgevit_batch.c"
        source.write_text(render_batch(graph, _model(model), batch))
        atomic_write(library, lambda target: build.compile_library(source, target))
    return Path(library)
