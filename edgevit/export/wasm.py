"""The exported C as a WebAssembly module for the browser: the same edgevit_model.c, one more target.

Plain clang and wasm-ld (Debian: `apt-get install clang-19 lld-19`, or `clang lld`), no Emscripten and
no libc: the exported C needs only math.h, and templates/wasm/math.h provides it (sqrtf and truncf are
WebAssembly instructions; exp2f is computed inline in C, within one float ulp of glibc's). The module
imports nothing and exports its memory, `edgevit_classify_pixels` and the addresses of static input
and output buffers (templates/wasm/edgevit_wasm.c), which JavaScript reads and writes in place.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from edgevit.errors import EdgeViTError
from edgevit.weights import atomic_write

SHIM = resources.files("edgevit.export") / "templates" / "wasm"
# Newer clang vectorises the int8 kernels' int8-to-float conversions with WASM SIMD; clang 14 (Debian
# 12's default) builds them from scalar lane moves. Measured in V8, int8 export, per image: 1.6 ms with
# clang 14, 0.74 ms with clang 19. So the newest versioned clang that has its own wasm-ld wins.
NEWEST_FIRST = range(30, 13, -1)
EXPORTS = (
    "edgevit_classify_pixels",
    "edgevit_answer",
    "edgevit_confidence_buffer",
    "edgevit_not_a_digit",
    "edgevit_pixels_buffer",
    "edgevit_probs_buffer",
    "edgevit_attention_buffer",
    "edgevit_num_classes",
    "edgevit_attention_size",
)
INSPECT_EXPORTS = (  # an export with edgevit_inspect (the explorer's): the numbers behind every weight
    "edgevit_inspect",
    "edgevit_knockout_buffer",
    "edgevit_query_buffer",
    "edgevit_key_buffer",
    "edgevit_value_buffer",
    "edgevit_scores_buffer",
    "edgevit_qkv_size",
)
CFLAGS = (
    "--target=wasm32",
    "-std=c99",
    "-O3",
    "-ffreestanding",  # no libc: math.h comes from the shim, stdint.h and stddef.h from clang itself
    "-nostdlib",
    "-Wall",
    "-Wextra",
)
SIMD_FLAGS = ("-msimd128",)  # 128-bit SIMD: every current browser has it (Chrome 91, Firefox 89, Safari 16.4)
LDFLAGS = (
    "-Wl,--no-entry",  # a library: JavaScript calls the exports, there is no main
    "-Wl,--strip-all",  # no names section: smaller, and JavaScript only needs the exports
)


def find_toolchain() -> tuple[str, str]:
    """(clang, wasm-ld): the newest clang-N with wasm-ld-N (Debian's versioned packages), else clang and wasm-ld."""
    for version in NEWEST_FIRST:
        compiler, linker = shutil.which(f"clang-{version}"), shutil.which(f"wasm-ld-{version}")
        if compiler and linker:
            return compiler, linker
    compiler, linker = shutil.which("clang"), shutil.which("wasm-ld")
    if compiler is None or linker is None:
        raise EdgeViTError("building WebAssembly needs clang and wasm-ld: apt-get install clang-19 lld-19 (or clang lld)")
    return compiler, linker


def build_wasm(model_c: str | Path, out_wasm: str | Path, simd: bool = True, inspect: bool = False) -> Path:
    """Compile an exported edgevit_model.c (its edgevit_model.h beside it) into `out_wasm`, atomically;
    `inspect`: the C was exported with edgevit_inspect, and the module exports it too."""
    model_c, out_wasm = Path(model_c), Path(out_wasm)
    compiler, linker = find_toolchain()
    out_wasm.parent.mkdir(parents=True, exist_ok=True)
    with resources.as_file(SHIM) as shim:

        def compile_to(target: Path) -> None:
            command = [
                compiler,
                f"-fuse-ld={linker}",  # the linker of the same LLVM version, not whatever wasm-ld is on PATH
                *CFLAGS,
                *(SIMD_FLAGS if simd else ()),
                *("-isystem", str(shim)),  # our math.h instead of a libc's
                *("-I", str(model_c.parent)),  # edgevit_model.h, for the glue file
                *LDFLAGS,
                *(f"-Wl,--export={name}" for name in (*EXPORTS, *(INSPECT_EXPORTS if inspect else ()))),
                *("-o", str(target)),
                str(model_c),
                str(shim / "edgevit_wasm.c"),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                errors = [line for line in done.stderr.splitlines() if "error:" in line] or ["no message"]
                raise EdgeViTError(f"building {out_wasm.name} failed ({Path(compiler).name}): {errors[0]}")
            target.chmod(0o644)  # data for a web server, not a program

        atomic_write(out_wasm, compile_to)
    return out_wasm
