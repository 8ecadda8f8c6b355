"""Worst-case stack depth of a bare-metal program, from the compiler's own numbers.

gcc -fcallgraph-info=su writes, per object file, every function's frame size (the number -fstack-usage
reports) and every call it makes, after inlining. Functions from precompiled libraries (libm's exp2f,
libgcc) have no such record: their frames and calls are read from the linked program's disassembly
(push, vpush, sub sp, bl and tail-call b). The bound is the largest sum of frames along a call chain
from the root: it holds when nothing recurses, no frame is dynamic and no call is indirect (a chain
with such a function is reported as not statically bounded). Exception frames come on top; the board
program enables no interrupt.

    python -m edgevit.export.stack build/edgevit.elf build/*.ci     (what `make stack` runs)
"""

from __future__ import annotations

import argparse
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgevit.errors import EdgeViTError

NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')
FRAME = re.compile(r"\\n(\d+) bytes \(([a-z,]+)\)")
FUNCTION = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")
INSTRUCTION = re.compile(r"^\s*[0-9a-f]+:\s+(\S+)\s*(.*)$")
BRANCH_TARGET = re.compile(r"<([^>+]+)(\+0x[0-9a-f]+)?>")
REGISTER_RANGE = re.compile(r"([rds])(\d+)-[rds](\d+)")
BOUNDED = "static"  # gcc's qualifier for a frame of fixed size
COMPILED, DISASSEMBLED = "gcc -fcallgraph-info", "disassembly"

Frames = dict[str, tuple[int, str]]  # function -> (frame bytes, qualifier)
Calls = dict[str, set[str]]  # caller -> callees


@dataclass(frozen=True)
class Frame:
    function: str
    bytes: int
    qualifier: str  # "static", "dynamic", "indirect calls" or "unknown"
    source: str  # COMPILED or DISASSEMBLED


@dataclass(frozen=True)
class StackBound:
    root: str
    bytes: int
    chain: tuple[Frame, ...]  # from the root to the deepest callee

    @property
    def bounded(self) -> bool:
        return all(frame.qualifier == BOUNDED for frame in self.chain)


def read_callgraph(texts: list[str]) -> tuple[Frames, Calls]:
    """Frames and calls from the text of gcc's .ci files (VCG graphs)."""
    frames: Frames = {}
    calls: Calls = {}
    for text in texts:
        for title, label in NODE.findall(text):
            if m := FRAME.search(label):  # declared-only functions (other files, libraries) have no frame
                frames[title] = (int(m.group(1)), m.group(2))
        for source, target in EDGE.findall(text):
            calls.setdefault(source, set()).add(target)
    return frames, calls


def push_bytes(operands: str) -> int:
    """Bytes a push, vpush or stmdb of this register list stores (d registers are 8 bytes)."""
    total = 0
    for item in operands[operands.index("{") + 1 : operands.index("}")].split(","):
        item = item.strip()
        m = REGISTER_RANGE.fullmatch(item)
        total += (int(m.group(3)) - int(m.group(2)) + 1 if m else 1) * (8 if item.startswith("d") else 4)
    return total


def read_disassembly(listing: str) -> tuple[Frames, Calls]:
    """Frames and calls of every function in `objdump -d --no-show-raw-insn` output of a Thumb program."""
    frames: Frames = {}
    calls: Calls = {}
    current = None
    for line in listing.splitlines():
        if (m := FUNCTION.match(line)) is not None:
            current = m.group(1)
            frames[current], calls[current] = (0, BOUNDED), set()
            continue
        if current is None or (m := INSTRUCTION.match(line)) is None:
            continue
        op, operands = m.group(1).split(".")[0], m.group(2)
        size, qualifier = frames[current]
        if op in ("push", "vpush") or (op == "stmdb" and operands.startswith("sp!")):
            size += push_bytes(operands)
        elif op in ("sub", "subw") and operands.startswith("sp, "):
            if imm := re.search(r"#(\d+)", operands):
                size += int(imm.group(1))
            else:
                qualifier = "dynamic"
        elif op in ("bl", "blx", "b") and (target := BRANCH_TARGET.search(operands)) is not None:
            # a b to the start of another function is a tail call; a b inside this one is a jump
            if op != "b" or (target.group(1) != current and target.group(2) is None):
                calls[current].add(target.group(1))
        elif op == "blx":
            qualifier = "indirect calls"
        frames[current] = (size, qualifier)
    return frames, calls


def worst_chain(root: str, compiled: tuple[Frames, Calls], disassembled: tuple[Frames, Calls]) -> StackBound:
    """The deepest chain of frames from `root`; the compiler's numbers win over the disassembly's."""
    frames = {**disassembled[0], **compiled[0]}
    calls = {**disassembled[1], **compiled[1]}
    # .ci titles of static functions carry their file ("edgevit_model.c:edgevit_run"); calls name them bare
    by_name = {title.split(":", 1)[-1]: title for title in compiled[0]}

    def resolve(function: str) -> str:
        return function if function in frames else by_name.get(function, function)

    in_progress: set[str] = set()

    @cache
    def deepest(name: str) -> tuple[int, tuple[str, ...]]:
        if name in in_progress:
            raise EdgeViTError(f"the call chain through {name.split(':', 1)[-1]} recurses: the stack has no static bound")
        in_progress.add(name)
        below = max((deepest(resolve(callee)) for callee in sorted(calls.get(name, ()))), default=(0, ()))
        in_progress.discard(name)
        return frames.get(name, (0, "unknown"))[0] + below[0], (name, *below[1])

    total, names = deepest(resolve(root))
    chain = tuple(
        Frame(name.split(":", 1)[-1], *frames.get(name, (0, "unknown")), COMPILED if name in compiled[0] else DISASSEMBLED)
        for name in names
    )
    return StackBound(root, total, chain)


def stack_bound(elf: Path, callgraphs: list[Path], objdump: str, root: str = "Reset_Handler") -> StackBound:
    """The worst-case stack of the linked program `elf` from `root`, given the .ci files of its own code."""
    done = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(elf)], capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgeViTError(f"{objdump} -d {elf} failed: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
    compiled = read_callgraph([path.read_text() for path in callgraphs])
    return worst_chain(root, compiled, read_disassembly(done.stdout))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgevit.export.stack", description=__doc__.splitlines()[0])
    p.add_argument("elf", type=Path)
    p.add_argument("callgraphs", type=Path, nargs="+", help=".ci files from gcc -fcallgraph-info=su")
    p.add_argument("--root", default="Reset_Handler")
    p.add_argument("--objdump", default="arm-none-eabi-objdump")
    args = p.parse_args(argv)
    bound = stack_bound(args.elf, args.callgraphs, args.objdump, args.root)
    print(f"worst-case stack from {bound.root}: {bound.bytes} bytes")
    for frame in bound.chain:
        print(f"  {frame.bytes:6d}  {frame.function}  ({frame.qualifier}; {frame.source})")
    if not bound.bounded:
        raise EdgeViTError("not statically bounded: " + ", ".join(f.function for f in bound.chain if f.qualifier != BOUNDED))
    return 0


if __name__ == "__main__":
    from edgevit.cli import run

    run("stack", main)
