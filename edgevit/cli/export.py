"""Export EdgeViT weights (fp32, int8 or w8a8) as a dependency-free C99 library and example program.

    edgevit export weights/edgevit-mnist-int8.safetensors -o build/edgevit-c
    make -C build/edgevit-c && build/edgevit-c/edgevit digit.pgm

    edgevit export weights/edgevit-mnist-int8.safetensors -o build/m4 --board mps2-an386
    make -C build/m4 run          # bare metal on QEMU's Cortex-M4F board: "INDEX DIGIT PROBABILITY" per image

(also `python tools/export.py`). A thin command line over edgevit.export and edgevit.export.boards;
files are written atomically, into a new or empty folder or one an earlier export wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from edgevit.cli import run
from edgevit.data import load_dataset
from edgevit.degrade import KINDS, SEVERITIES
from edgevit.errors import EdgeViTError
from edgevit.export import export
from edgevit.export.boards import BOARDS, get_board, write_program
from edgevit.export.wasm import build_wasm
from edgevit.robustness import held_out_set

PROG = "python tools/export.py"
DEFAULT_TEST_IMAGES = 10
MAX_TEST_IMAGES = 10_000  # MNIST's test split


def test_images(count: int, damaged: bool = False):
    """MNIST test images 0..count-1 and their labels; `damaged`: the first `count` of the held-out
    damaged test digits (edgevit.robustness), every kind and severity in turn."""
    test = load_dataset().test
    if not 1 <= count <= MAX_TEST_IMAGES:
        raise EdgeViTError(f"--test-images must be 1 to {MAX_TEST_IMAGES:,}, not {count}")
    if not damaged:
        return test.images[:count], test.labels[:count]
    cells = held_out_set(test, per_cell=-(-count // (len(KINDS) * len(SEVERITIES))))
    images = np.stack([c.images[i] for i in range(max(len(c.images) for c in cells)) for c in cells if i < len(c.images)])
    labels = np.array([c.labels[i] for i in range(max(len(c.labels) for c in cells)) for c in cells if i < len(c.labels)])
    return np.clip(np.rint(images[:count]), 0, 255).astype(np.uint8), labels[:count]


def cli(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = argparse.ArgumentParser(prog=prog, description="Export EdgeViT weights as C99 source.")
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
        help="leave the attention maps out: probabilities only, less RAM (the header says at least how much)",
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
    p.add_argument(
        "--damaged-test-images",
        action="store_true",
        help="with --board: the first N held-out damaged test digits instead (noise, blur, lines...: edgevit.robustness)",
    )
    args = p.parse_args(argv)

    # a wrong board or image count fails before the export's minutes
    board = get_board(args.board) if args.board is not None else None
    if board is not None:
        images, labels = test_images(args.test_images, args.damaged_test_images)
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


def main() -> None:
    run("export.py", cli)


if __name__ == "__main__":
    main()
