"""Export EdgeViT weights (fp32, int8 or w8a8) as a dependency-free C99 library and example program.

    python tools/export.py weights/edgevit-mnist-int8.safetensors -o build/edgevit-c
    make -C build/edgevit-c && build/edgevit-c/edgevit digit.pgm

    python tools/export.py weights/edgevit-mnist-int8.safetensors -o build/m4 --board mps2-an386
    make -C build/m4 run          # bare metal on QEMU's Cortex-M4F board: "INDEX DIGIT PROBABILITY" per image

A thin command line over edgevit.export and edgevit.export.boards; files are written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgevit.cli import run
from edgevit.data import load_dataset
from edgevit.errors import EdgeViTError
from edgevit.export import export
from edgevit.export.boards import BOARDS, get_board, write_program
from edgevit.export.wasm import build_wasm

DEFAULT_TEST_IMAGES = 10


def test_images(count: int):
    """MNIST test images 0..count-1 and their labels."""
    test = load_dataset().test
    if not 1 <= count <= len(test.images):
        raise EdgeViTError(f"--test-images must be 1 to {len(test.images):,}, not {count}")
    return test.images[:count], test.labels[:count]


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
    p.add_argument(
        "--board",
        metavar="BOARD",
        help="also write a bare-metal program for a Cortex-M board QEMU emulates, run by `make -C OUTDIR run`: "
        + ", ".join(f"{b.name} ({b.cpu})" for b in BOARDS.values()),
    )
    p.add_argument(
        "--test-images",
        type=int,
        default=DEFAULT_TEST_IMAGES,
        metavar="N",
        help=f"with --board: MNIST test images 0..N-1 compiled into the program (default {DEFAULT_TEST_IMAGES})",
    )
    args = p.parse_args(argv)

    # a wrong board or image count fails before the export's minutes
    board = get_board(args.board) if args.board is not None else None
    if board is not None:
        images, labels = test_images(args.test_images)
    result = export(args.weights, args.out, beam=args.beam, attention=args.attention)
    if args.wasm:
        result.files["edgevit.wasm"] = build_wasm(result.files["edgevit_model.c"], args.out / "edgevit.wasm")
    if board is not None:
        result.files.update(write_program(args.out, board, result, images, labels))
    for path in result.files.values():
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(
        f"model: {result.kernels} kernels, {result.steps} kernel calls per image; "
        f"weights (flash) {result.weights_bytes:,} bytes, static RAM {result.ram_bytes:,} bytes, no heap"
        + (f", stack {result.stack_bytes:,} bytes (this machine's compiler)" if result.stack_bytes is not None else "")
    )
    if board is not None:
        print(f"build and run in QEMU ({board.cpu}): make -C {args.out} run", file=sys.stderr)
    else:
        print(f"build: make -C {args.out}    run: {args.out / 'edgevit'} digit.pgm", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run("export.py", main)
