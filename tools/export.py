"""Export EdgeViT weights (fp32, int8 or w8a8) as a dependency-free C99 library and example program.

    python tools/export.py weights/edgevit-mnist-int8.safetensors -o build/edgevit-c
    make -C build/edgevit-c && build/edgevit-c/edgevit digit.pgm

A thin command line over edgevit.export; files are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevit.cli import run
from edgevit.export import export
from edgevit.export.wasm import build_wasm


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="export.py", description="Export EdgeViT weights as C99 source.")
    p.add_argument("weights", type=Path, help="an EdgeViT weights file (fp32, int8 or w8a8)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="OUTDIR", help="directory for the C sources")
    p.add_argument(
        "--beam",
        type=int,
        default=0,
        metavar="N",
        help="search kernel shapes by timing them on this machine (e.g. 2; minutes once, then cached); "
        "tunes for this CPU, so leave it at 0 when the target is a different one",
    )
    p.add_argument(
        "--no-attention",
        dest="attention",
        action="store_false",
        help="leave the attention maps out: probabilities only, about 34 KB less RAM (the header says how much)",
    )
    p.add_argument(
        "--wasm",
        action="store_true",
        help="also compile the C to edgevit.wasm for the browser (clang --target=wasm32 and wasm-ld)",
    )
    args = p.parse_args(argv)

    result = export(args.weights, args.out, beam=args.beam, attention=args.attention)
    if args.wasm:
        result.files["edgevit.wasm"] = build_wasm(result.files["edgevit_model.c"], args.out / "edgevit.wasm")
    for path in result.files.values():
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(
        f"model: {result.kernels} kernels, {result.steps} kernel calls per image; "
        f"weights (flash) {result.weights_bytes:,} bytes, static RAM {result.ram_bytes:,} bytes, no heap"
        + (f", stack {result.stack_bytes:,} bytes (this machine's compiler)" if result.stack_bytes is not None else "")
    )
    print(f"build: make -C {args.out}    run: {args.out / 'edgevit'} digit.pgm", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run("export.py", main)
