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
from edgevit.graph import probe_input
from edgevit.quant import schemes
from edgevit.weights import atomic_write, file_sha256, open_model_file, reject_of

SOURCES = ("edgevit_model.c", "edgevit_model.h", "main.c", "Makefile")
LIBRARY_BEAM = 2  # the C runtime's library is built from kernels searched this wide on this machine


@dataclass(frozen=True)
class Export:
    """What one export wrote, for the report and the C runtime."""

    files: dict[str, Path]
    weights_bytes: int  # const data: flash on a microcontroller
    ram_bytes: int  # every static mutable array
    stack_bytes: int | None  # the deepest entry-point call, measured by this machine's compiler
    kernels: int
    steps: int


def check_exportable(weights_path: Path, scheme: str) -> None:
    if not schemes.get(scheme).c_export:
        supported = f"{', '.join(schemes.C_EXPORTABLE[:-1])} and {schemes.C_EXPORTABLE[-1]}"
        raise EdgeViTError(
            f"{weights_path}: the C export supports {supported} weights, not {scheme} ({schemes.get(scheme).why_not_c})"
        )


def export(weights_path: str | os.PathLike, out_dir: str | os.PathLike, beam: int = 0, attention: bool = True) -> Export:
    """Write edgevit_model.c/.h, main.c and a Makefile for `weights_path` into `out_dir` (created).

    `beam` tunes the kernels for this machine (see `capture`); the C stays portable either way.
    `attention` False leaves the attention maps out (less RAM). Files are written atomically;
    nothing else in `out_dir` is touched.
    """
    weights_path, out_dir = Path(weights_path), Path(out_dir)
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    check_exportable(weights_path, scheme)
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgeViTError(f"{out_dir} exists and is not a directory")
    if beam < 0:
        raise EdgeViTError(f"--beam must be 0 (no search) or more, not {beam}")
    try:  # before the capture: a bad output fails in a second, not after minutes of search
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeViTError(f"{out_dir}: cannot create the output directory ({e.strerror})") from None
    graph = int8.use_dot_products(capture.capture(header, config, scheme, probe_input(config, 1), beam, attention), config)
    model = Model(config, mean, std, file_sha256(weights_path), weights_path.name, reject=reject_of(header, config))
    if not attention:  # the header says what leaving the maps out saved: their buffer and the scores kept for it
        with_maps = capture.capture(header, config, scheme, probe_input(config, 1), beam, attention=True)
        model = replace(model, ram_with_attention=with_maps.ram_bytes)
    c, h = render(graph, model)
    stack = _measure_stack(c, h)
    if stack is not None:
        compiler = build.find_compiler().split()[0]
        note = f"{stack} bytes at most, measured with `{compiler} -O2 -fstack-usage` for {platform.machine()}"
        _, h = render(graph, replace(model, stack_note=note + " (other compilers and targets differ)", stack_bytes=stack))
    contents = {"edgevit_model.c": c, "edgevit_model.h": h, "main.c": template("main.c"), "Makefile": template("Makefile")}
    files = {}
    for name, text in contents.items():
        files[name] = out_dir / name
        atomic_write(files[name], lambda tmp, text=text: tmp.write_text(text))
    return Export(files, graph.weights_bytes, graph.ram_bytes, stack, len(graph.kernels), len(graph.steps))


def _measure_stack(c: str, h: str) -> int | None:
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        (Path(tmp) / "edgevit_model.h").write_text(h)
        (Path(tmp) / "edgevit_model.c").write_text(c)
        return build.stack_bytes(Path(tmp) / "edgevit_model.c")


def build_library(weights_path: str | os.PathLike, library: str | os.PathLike, beam: int = LIBRARY_BEAM) -> Path:
    """Export `weights_path` with kernels tuned for this machine and compile it into the shared library
    `library` (atomically)."""
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        result = export(weights_path, tmp, beam=beam)
        atomic_write(library, lambda target: build.compile_library(result.files["edgevit_model.c"], target))
    return Path(library)


def build_batch_library(
    weights_path: str | os.PathLike, library: str | os.PathLike, batch: int, beam: int = LIBRARY_BEAM
) -> Path:
    """The C runtime's throughput library: the graph captured for `batch` images at once, its kernels
    tuned for this machine (`edgevit_classify_batch` in templates/edgevit_batch.c), compiled into
    `library` (atomically)."""
    weights_path = Path(weights_path)
    header, config, scheme, (mean, std) = open_model_file(weights_path)
    check_exportable(weights_path, scheme)
    graph = int8.use_dot_products(capture.capture(header, config, scheme, probe_input(config, batch), beam), config)
    model = Model(config, mean, std, file_sha256(weights_path), weights_path.name)
    with tempfile.TemporaryDirectory(prefix="edgevit-export-") as tmp:
        source = Path(tmp) / "edgevit_batch.c"
        source.write_text(render_batch(graph, model, batch))
        atomic_write(library, lambda target: build.compile_library(source, target))
    return Path(library)
