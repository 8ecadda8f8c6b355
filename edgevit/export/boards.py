"""The exported C on Arm devices, emulated: Cortex-M boards in qemu-system-arm, 64-bit Arm Linux in qemu-user.

`write_program` puts a bare-metal program beside an export (`tools/export.py --board mps2-an386`): the
board files in templates/boards/ (start-up code with the vector table, a linker script, semihosting
output, a Makefile) and the test images as a C header. `make -C DIR run` builds it with
arm-none-eabi-gcc and runs it in QEMU's model of the board; `run_board`, `board_size` and `board_stack`
do that from Python and parse what comes back. The Makefile holds every compiler and QEMU flag for the
boards; `classify_linux` holds those for Linux (this machine, or aarch64 under qemu-aarch64-static).

Counts are QEMU's: instructions executed, not cycles (QEMU models no timing), on an emulated core, not
a real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.errors import EdgeViTError
from edgevit.export import Export
from edgevit.export.render import fill, template
from edgevit.export.stack import StackBound, stack_bound
from edgevit.weights import atomic_write

KIB = 1024
MIB = 1024 * KIB
PIXELS = 28 * 28
PIXELS_PER_LINE = 28  # one image row per line of test_images.h
STACK_RESERVE = 8 * KIB  # the whole program needs 424-520 bytes (make stack): room for interrupts to come
# The board program besides the model's weights, buffers and the test images: the kernels' code, libm's
# exp2f, start-up and output, measured at 11.7-15.2 KB of flash and 260-264 bytes of RAM (arm-none-eabi-size,
# both boards, int8 and fp32); the fit check before building allows several times that. The linker
# checks the exact fit.
PROGRAM_FLASH = 64 * KIB
PROGRAM_RAM = 1 * KIB
QEMU_TIMEOUT_S = 120  # the program's own run; building comes on top
BUILD_TIMEOUT_S = 600  # arm-none-eabi-gcc on an fp32 export's 2 MB of C, on a slow machine
BOARD_FILES = ("Makefile", "cortex-m.ld", "board.h", "board_main.c", "startup_cortex_m.c", "insncount.c")
BUILD_DIR = "build"  # the Makefile's $(BUILD)
LINUX_HARNESS = "probs_main.c"
LINUX_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra")
INSNCOUNT = re.compile(r"^insncount: (\d+)$", re.MULTILINE)
RESULT = re.compile(r"^(\d+) (-?\d+)(?: (\d+\.\d+)((?: [0-9a-f]{8})*))?$")
SIZE_LINE = re.compile(r"^size ((?:\w+=\d+ ?)+)$", re.MULTILINE)


@dataclass(frozen=True)
class Board:
    name: str  # --board, and QEMU's machine (-M)
    cpu: str
    cpu_flags: str  # arm-none-eabi-gcc: core, FPU, float ABI, instruction set
    flash_origin: int
    flash_bytes: int
    ram_origin: int
    ram_bytes: int


# QEMU's hw/arm/mps2.c gives both the same memory: 4 MiB of SSRAM at 0 (code; it stands in for flash)
# and 4 MiB at 0x20000000 (data). QEMU's Cortex-M4 has the single-precision FPv4-SP; its Cortex-M7 the
# double-precision FPv5 (the model computes in single precision on both).
BOARDS = {
    "mps2-an386": Board(
        "mps2-an386",
        "Arm Cortex-M4F",
        "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb",
        0,
        4 * MIB,
        0x2000_0000,
        4 * MIB,
    ),
    "mps2-an500": Board(
        "mps2-an500",
        "Arm Cortex-M7",
        "-mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb",
        0,
        4 * MIB,
        0x2000_0000,
        4 * MIB,
    ),
}


@dataclass(frozen=True)
class Tool:
    command: str
    package: str  # Debian's


BOARD_TOOLS = (
    Tool("make", "make"),
    Tool("arm-none-eabi-gcc", "gcc-arm-none-eabi"),
    Tool("qemu-system-arm", "qemu-system-arm"),
)
PLUGIN_COMPILER = Tool("cc", "gcc")  # `make count` builds its QEMU plugin for this machine
NEWLIB = Tool("arm-none-eabi-gcc", "libnewlib-arm-none-eabi")  # libm and nano.specs for the boards


@dataclass(frozen=True)
class LinuxTarget:
    """A Linux machine to build the exported C for: this one, or another run under an emulator."""

    compiler: Tool
    emulator: tuple[str, ...] = ()  # the command line that runs a program built for it, empty for this machine
    emulator_package: str = ""


HOST = LinuxTarget(Tool("cc", "gcc"))
AARCH64_SYSROOT = "/usr/aarch64-linux-gnu"  # the cross libc, where qemu-user finds the dynamic loader
AARCH64 = LinuxTarget(
    Tool("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"), ("qemu-aarch64-static", "-L", AARCH64_SYSROOT), "qemu-user-static"
)


def get_board(name: str) -> Board:
    if name not in BOARDS:
        known = ", ".join(f"{b.name} ({b.cpu})" for b in BOARDS.values())
        raise EdgeViTError(f"unknown board {name!r}: the boards are {known}")
    return BOARDS[name]


def require(tools: tuple[Tool, ...]) -> None:
    """One line naming the package to install, for the first tool missing here."""
    for tool in tools:
        if shutil.which(tool.command) is None:
            raise EdgeViTError(f"{tool.command} not found: apt-get install {tool.package} (or make test-devices)")


def require_newlib() -> None:
    # gcc prints the bare name back when it has no such file in its library path
    found = subprocess.run([NEWLIB.command, "-print-file-name=nano.specs"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(found):
        raise EdgeViTError(f"arm-none-eabi-gcc has no C library: apt-get install {NEWLIB.package} (or make test-devices)")


def images_header(images: np.ndarray, labels: np.ndarray) -> str:
    """test_images.h: `edgevit_test_images[N][784]` (flash on the board), each image's label in a comment.

    `images` are (N, 28, 28) or (N, 784) whole numbers on [0, 255], white digit on black.
    """
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.ndim not in (2, 3) or len(images) == 0 or images[0].size != PIXELS:
        raise EdgeViTError(f"test images must be (N, 28, 28) or (N, 784) with N at least 1, not {images.shape}")
    if len(labels) != len(images):
        raise EdgeViTError(f"{len(images)} test images but {len(labels)} labels")
    if images.min() < 0 or images.max() > 255 or not np.array_equal(images, np.round(images)):
        raise EdgeViTError("test image pixels must be whole numbers on [0, 255]")
    pixels = images.reshape(len(images), PIXELS).astype(np.uint8)
    lines = [
        "/* Test images for EdgeViT's board program, written by edgevit.export.boards.images_header.",
        " * 28x28 pixels each, row-major, white digit on black (MNIST's layout); const, so in flash. */",
        "#ifndef EDGEVIT_TEST_IMAGES_H",
        "#define EDGEVIT_TEST_IMAGES_H",
        "",
        "#include <stdint.h>",
        "",
        f"#define EDGEVIT_TEST_IMAGES {len(pixels)}",
        "",
        f"static const uint8_t edgevit_test_images[EDGEVIT_TEST_IMAGES][{PIXELS}] = {{",
    ]
    for n, (image, label) in enumerate(zip(pixels, labels)):
        lines.append(f"  {{ /* {n}: label {int(label)} */")
        lines += [
            "    " + ",".join(f"{v:3d}" for v in image[i : i + PIXELS_PER_LINE]) + ","
            for i in range(0, PIXELS, PIXELS_PER_LINE)
        ]
        lines.append("  },")
    lines += ["};", "", "#endif", ""]
    return "\n".join(lines)


def check_fits(board: Board, weights_bytes: int, ram_bytes: int, images: int) -> None:
    """One line when the model, the test images and the program cannot fit the board's memory."""
    flash = weights_bytes + images * PIXELS + PROGRAM_FLASH
    ram = ram_bytes + STACK_RESERVE + PROGRAM_RAM
    for what, need, have in (("flash", flash, board.flash_bytes), ("RAM", ram, board.ram_bytes)):
        if need > have:
            raise EdgeViTError(
                f"the model does not fit {board.name} ({board.cpu}): about {need:,} bytes of {what} needed, "
                f"{have:,} there (weights {weights_bytes:,} B, buffers {ram_bytes:,} B, {images} test images)"
            )


def write_program(
    out_dir: str | os.PathLike, board: Board, model: Export, images: np.ndarray, labels: np.ndarray
) -> dict[str, Path]:
    """The bare-metal program for `board` beside the export `model` in `out_dir`, classifying `images`.

    Replaces the export's host Makefile with the board's (main.c stays, unused). Files are written
    atomically; returns them by name.
    """
    out_dir = Path(out_dir)
    check_fits(board, model.weights_bytes, model.ram_bytes, len(images))
    values = {
        "BOARD": board.name,
        "CPU": board.cpu,
        "CPU_FLAGS": board.cpu_flags,
        "PYTHON": sys.executable,  # `make stack` runs edgevit.export.stack
        "QEMU_TIMEOUT": QEMU_TIMEOUT_S,
        "FLASH_ORIGIN": f"0x{board.flash_origin:08x}",
        "FLASH_KIB": board.flash_bytes // KIB,
        "RAM_ORIGIN": f"0x{board.ram_origin:08x}",
        "RAM_KIB": board.ram_bytes // KIB,
        "STACK_SIZE": f"0x{STACK_RESERVE:x}",
    }
    contents = {name: fill(template(f"boards/{name}"), values) for name in BOARD_FILES}
    contents["test_images.h"] = images_header(images, labels)
    files = {}
    for name, text in contents.items():
        files[name] = out_dir / name
        atomic_write(files[name], lambda tmp, text=text: tmp.write_text(text))
    return files


@dataclass(frozen=True)
class BoardRun:
    """What the board program printed, parsed."""

    digits: np.ndarray  # (N,) what edgevit_classify returned for each image: 0-9, 10 not a digit, <0 an error
    probs: np.ndarray | None  # (N, classes) float32, bit for bit (NaN rows for errors); None unless exact
    sizes: dict[str, int]  # flash, ram, stack_reserved, stack_peak, model_weights, model_ram
    instructions: list[int]  # executed per classification, counted by QEMU; empty unless count
    output: str


def run_board(board_dir: str | os.PathLike, count: bool = False, exact: bool = True, timeout: int = QEMU_TIMEOUT_S) -> BoardRun:
    """`make run` (or `make count`, for instruction counts) in a directory `write_program` wrote.

    exact: build so that each line carries the probabilities' bits (the Makefile rebuilds when that
    changes); otherwise only the printed digits and sizes come back.
    """
    output = _make(board_dir, "count" if count else "run", timeout, PRINT_BITS=int(exact), QEMU_TIMEOUT=timeout)
    results = [m for line in output.splitlines() if (m := RESULT.match(line))]
    sizes = SIZE_LINE.search(output)
    if not results or sizes is None:
        raise EdgeViTError(f"the board program in {board_dir} printed no results: {output.strip()[-200:]!r}")
    probs = None
    if exact:
        rows = [np.array([int(h, 16) for h in m.group(4).split()], np.uint32).view(np.float32) for m in results]
        classes = max(len(row) for row in rows)
        probs = np.stack([row if len(row) else np.full(classes, np.nan, np.float32) for row in rows])
    return BoardRun(
        digits=np.array([int(m.group(2)) for m in results]),
        probs=probs,
        sizes={k: int(v) for k, v in (item.split("=") for item in sizes.group(1).split())},
        instructions=[int(n) for n in INSNCOUNT.findall(output)],
        output=output,
    )


def board_size(board_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes, from arm-none-eabi-size (`make size`) of the program as `make run` builds it.

    flash: code, constants (weights, test images) and .data's initial values; ram: .data and .bss
    (the stack reserve not included); stack_reserve; model_flash and model_ram: edgevit_model.o alone.
    """
    output = _make(board_dir, "size", BUILD_TIMEOUT_S, PRINT_BITS=0)
    sections = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\.[\w.]+)\s+(\d+)\s+\d+$", output, re.MULTILINE)}
    model = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s+\d+\s+[0-9a-f]+\s+\S*edgevit_model\.o$", output, re.MULTILINE)
    if model is None or ".text" not in sections:
        raise EdgeViTError(f"unexpected output from make size in {board_dir}: {output.strip()[-200:]!r}")
    flash_sections = (".text", ".ARM.extab", ".ARM.exidx", ".init_array", ".data")
    text, data, bss = (int(v) for v in model.groups())
    return {
        "flash": sum(sections.get(name, 0) for name in flash_sections),
        "ram": sections.get(".data", 0) + sections.get(".bss", 0),
        "stack_reserve": sections.get(".stack", 0),
        "model_flash": text + data,
        "model_ram": data + bss,
    }


def board_stack(board_dir: str | os.PathLike, root: str = "Reset_Handler") -> StackBound:
    """The worst-case stack of the program as `make run` builds it, from the compiler's call graph: the
    whole program's, or from `root` down (edgevit_classify: the model's share)."""
    _make(board_dir, "all", BUILD_TIMEOUT_S, PRINT_BITS=0)
    build = Path(board_dir) / BUILD_DIR
    return stack_bound(build / "edgevit.elf", sorted(build.glob("*.ci")), "arm-none-eabi-objdump", root)


def _make(board_dir: str | os.PathLike, target: str, timeout: int, **variables) -> str:
    """`make TARGET` in a board directory: its stdout and stderr, or one line saying what failed."""
    require(BOARD_TOOLS + ((PLUGIN_COMPILER,) if target == "count" else ()))
    require_newlib()
    command = ["make", "-s", "-C", str(board_dir), target, *(f"{k}={v}" for k, v in variables.items())]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout + BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise EdgeViTError(f"make {target} in {board_dir} took over {e.timeout:.0f} s") from None
    if done.returncode != 0:
        raise EdgeViTError(f"make {target} in {board_dir} failed (status {done.returncode}): {_last_words(done)}")
    return done.stdout + done.stderr


def _last_words(done: subprocess.CompletedProcess) -> str:
    """The line that says why: a compiler's or QEMU's, else the program's own last line (a fault report)."""
    errors = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("make")]
    lines = errors or done.stdout.splitlines() or ["no output"]
    return lines[-1].strip()


def classify_linux(
    model_dir: str | os.PathLike, images: np.ndarray, target: LinuxTarget = AARCH64, timeout: int = 1800
) -> tuple[np.ndarray, np.ndarray]:
    """Build the export in `model_dir` for `target` with a harness that prints every probability, run it
    on `images` ((N, 28, 28) uint8) in one process, and return what edgevit_classify returned (N,) and
    the probabilities (N, classes) float32, bit for bit as the program computed them.

    For AARCH64 that is aarch64-linux-gnu-gcc and qemu-aarch64-static; a real Raspberry Pi would run the
    same build natively.
    """
    require((target.compiler,))
    if target.emulator:
        require((Tool(target.emulator[0], target.emulator_package),))
    model_dir = Path(model_dir)
    pixels = np.asarray(images, np.uint8).reshape(-1, PIXELS)
    with tempfile.TemporaryDirectory(prefix="edgevit-linux-") as tmp:
        harness, program, raw = Path(tmp) / LINUX_HARNESS, Path(tmp) / "edgevit-probs", Path(tmp) / "images.raw"
        harness.write_text(template(f"boards/{LINUX_HARNESS}"))
        raw.write_bytes(pixels.tobytes())
        build = [target.compiler.command, *LINUX_CFLAGS, f"-I{model_dir}", "-o", str(program)]
        _run([*build, str(harness), str(model_dir / "edgevit_model.c"), "-lm"], timeout)
        out = _run([*target.emulator, str(program), str(raw)], timeout)
    rows = [line.split() for line in out.splitlines()]
    if len(rows) != len(pixels):
        raise EdgeViTError(f"{target.compiler.command} build: {len(rows)} result lines for {len(pixels)} images")
    # %.9g round-trips float32: parsed as float64, then narrowed, it gives back the exact bits
    probs = np.array([[float(v) for v in row[1:]] for row in rows], np.float64).astype(np.float32)
    return np.array([int(row[0]) for row in rows]), probs


def _run(command: list[str], timeout: int) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EdgeViTError(f"{Path(command[0]).name} took over {timeout} s") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeViTError(f"{Path(command[0]).name} failed (status {done.returncode}): {why}")
    return done.stdout
