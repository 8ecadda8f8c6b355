r"""`edgevit classify IMAGE...` (also `edgevit-classify`): which digit is in each image, how sure, and
where the model looked. A thin command line over edgevit.classify.

Plain output is one line per image, `path<TAB>digit confidence`, with control characters, backslashes
and undecodable bytes in a path escaped (`\t`, `\n`, `\\`, `\xff`), so that any file name is one
unambiguous field. JSON Lines carry the path as text (an undecodable byte becomes U+FFFD) and, for a
name that is not valid UTF-8, its exact bytes in base64 as `path_bytes`; they never contain NaN.
Results are printed as they are ready.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import unicodedata
from pathlib import Path

from edgevit.answer import DIGITS
from edgevit.attention import render
from edgevit.cache import Cache, default_cache_dir
from edgevit.classify import STDIN, Result, classify, default_weights
from edgevit.cli import UsageError, run
from edgevit.data import normalize
from edgevit.device import measured
from edgevit.errors import EdgeViTError
from edgevit.explain import explain, explain_scores
from edgevit.files import atomic_write
from edgevit.qkv import attention_parts
from edgevit.runtime import RUNTIMES, Classifier
from edgevit.runtime.jit import JOB, time_forward
from edgevit.weights import ModelFile

PROG = "edgevit-classify"
NOT_A_DIGIT = "not a digit"
NAME_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for undecodable bytes 0x80-0xff
HIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")  # control, format (e.g. right-to-left override), line breaks


def escape_name(name: str) -> str:
    """`name` as one unambiguous field of a line: backslashes, control and format characters escaped,
    and an undecodable byte (surrogate-escaped by Python) written as \\xNN."""
    out = []
    for ch in name:
        if ch in NAME_ESCAPES:
            out.append(NAME_ESCAPES[ch])
        elif ord(ch) in SURROGATE_ESCAPES:
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif unicodedata.category(ch) in HIDDEN_CATEGORIES:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def json_path(name: str) -> dict[str, str]:
    """The path as JSON text; a name that is not valid UTF-8 also gets its exact bytes (base64)."""
    raw = os.fsencode(name)
    text = raw.decode("utf-8", "replace")
    return {"path": text} if text == name else {"path": text, "path_bytes": base64.b64encode(raw).decode()}


def format_line(r: Result, topk: int) -> str:
    """`path<TAB>answer confidence`, then the next likeliest digits up to `topk` fields in all."""
    said = f"{NOT_A_DIGIT if r.digit is None else r.digit} {100 * r.confidence:.1f}%"
    others = sorted((d for d in range(DIGITS) if d != r.digit), key=lambda d: -r.probs[d])[: topk - 1]
    return "\t".join([escape_name(r.path), said] + [f"{d} {100 * r.probs[d]:.1f}%" for d in others])


class AttentionMaps:
    """Where `--attention OUT` puts each map: OUT itself for one image given by name; else OUT is a
    folder with one picture per image, named after it (a second a.png becomes a-2.png, and so on:
    no map is written over another)."""

    def __init__(self, out: Path, single: bool):
        self.out, self.single, self.taken = out, single, set()
        if not single:
            if out.exists() and not out.is_dir():
                raise EdgeViTError(f"--attention {out}: is a file; with several images it must be a folder")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EdgeViTError(f"--attention {out}: cannot create the folder ({e.strerror})") from None

    def target(self, r: Result) -> Path:
        if self.single:
            return self.out
        stem = "stdin" if r.path == STDIN else Path(r.path).stem
        name, n = stem, 1
        while name in self.taken:
            n += 1
            name = f"{stem}-{n}"
        self.taken.add(name)
        return self.out / f"{name}.png"

    def write(self, r: Result) -> Path:
        said = NOT_A_DIGIT if r.digit is None else f"digit {r.digit}"
        picture = render(r.image, r.attention, f"{r.path}: {said} ({100 * r.confidence:.1f}%)")
        target = self.target(r)
        atomic_write(target, lambda tmp: picture.save(tmp, "PNG"))
        return target


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Classify images of handwritten or printed digits.")
    p.add_argument("images", nargs="*", help="image files, directories of images, or - for an image on stdin")
    p.add_argument("--weights", help="weights file (default: $EDGEVIT_WEIGHTS or the shipped weights)")
    p.add_argument("--device", help="tinygrad backend, e.g. CPU, CUDA, METAL, CL (default: the fastest here, measured once)")
    p.add_argument("--list-devices", action="store_true", help="one line per backend tinygrad knows: usable or why not, time")
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="tinygrad",
        help="tinygrad: the JIT graph on --device; c: the same graph exported to C, built once and cached (fastest on CPU)",
    )
    p.add_argument("--c-library", type=Path, metavar="LIB.so", help="with --runtime c: a library built by tools/export.py")
    p.add_argument("--beam", type=int, metavar="N", help="BEAM-search kernel shapes when compiling (cached; c: default 2)")
    p.add_argument("--topk", type=int, default=1, metavar="K", help="show the answer and the next K-1 likeliest digits")
    p.add_argument("--always-digit", action="store_true", help="answer the likeliest digit even for an image of no digit")
    p.add_argument("--json", action="store_true", help='JSON Lines: path, digit (null: not a digit, with a "reason"), ...')
    p.add_argument("--attention", type=Path, metavar="OUT.png", help="write attention maps (a folder for several images)")
    p.add_argument(
        "--explain",
        action="store_true",
        help="after each answer, its attention as text: per layer, a 4x4 grid, the strongest links and the scores behind them",
    )
    p.add_argument("--patch", metavar="rRcC", help="with --explain: the scores behind this patch's strongest links")
    return p


class Explainer:
    """`--explain`: the attention as text, and the scores behind its strongest links, from the model's
    own forward pass on the same image (edgevit.qkv)."""

    def __init__(self, model: ModelFile, patch: int | None):
        self.model, self.patch, self.vit = model, patch, None

    def __call__(self, r: Result) -> str:
        self.vit = self.vit or self.model.build()
        grid = self.model.config.grid
        _, parts = attention_parts(self.vit, normalize(r.image[None], self.model.mean, self.model.std))
        return explain(r.attention, grid=grid) + "\n" + explain_scores(parts, grid, self.patch)


def patch_index(name: str, grid: int) -> int:
    """'rRcC' -> the patch's row-major index."""
    match = re.fullmatch(r"r(\d+)c(\d+)", name)
    if match is None or not (int(match[1]) < grid and int(match[2]) < grid):
        raise UsageError(f"--patch {name!r} is not a patch: rRcC with R and C from 0 to {grid - 1}")
    return int(match[1]) * grid + int(match[2])


def show(r: Result, args: argparse.Namespace, explainer: Explainer | None) -> None:
    """One result, as a line (or a JSON object) on stdout, or an error line on stderr."""
    if args.json:
        fields = json_path(r.path)
        fields |= {"error": r.error} if r.error else {k: getattr(r, k) for k in ("digit", "confidence", "probs")}
        fields |= {"reason": r.reason} if r.reason else {}
        if explainer is not None and not r.error:
            fields["explain"] = explainer(r)
        print(json.dumps(fields, allow_nan=False), flush=True)
    elif r.error:
        print(f"{args.prog}: error: {escape_name(r.path)}: {r.error}", file=sys.stderr)
    else:
        print(format_line(r, args.topk), flush=True)
        if explainer is not None:
            print(explainer(r))


def cli(argv: list[str] | None = None, prog: str = PROG) -> int:
    p = parser(prog)
    args = p.parse_args(argv)
    args.prog = prog
    if args.list_devices:
        for backend in measured(JOB, time_forward, Cache(default_cache_dir())):
            print(backend.describe(JOB))
        return 0
    if not args.images:
        p.error("give at least one image (or --list-devices)")
    if args.topk < 1:
        raise EdgeViTError("--topk must be at least 1")
    if args.images.count(STDIN) > 1:
        raise EdgeViTError("stdin (-) can be read only once")
    if args.c_library is not None and args.runtime != "c":
        raise EdgeViTError("--c-library needs --runtime c")
    if (cache := Cache(default_cache_dir())).problem:
        print(f"{prog}: warning: {cache.problem}", file=sys.stderr)
    # a bad weights file, backend or library fails the run before any image is read
    weights = Path(args.weights) if args.weights else default_weights()
    classifier = Classifier(weights, device=args.device, runtime=args.runtime, c_library=args.c_library, beam=args.beam)
    if args.patch is not None and not args.explain:
        raise UsageError("--patch needs --explain")
    grid = classifier.config.grid
    explainer = Explainer(classifier.model, patch_index(args.patch, grid) if args.patch else None) if args.explain else None
    single = len(args.images) == 1 and not Path(args.images[0]).is_dir()
    maps = AttentionMaps(args.attention, single) if args.attention is not None else None
    failed = False
    for r in classify(args.images, classifier, keep_attention=maps is not None or args.explain, always_digit=args.always_digit):
        show(r, args, explainer)
        failed |= r.error is not None
        if maps is not None and r.error is None:
            print(f"attention map written to {escape_name(str(maps.write(r)))}", file=sys.stderr)
    return 1 if failed else 0


def main() -> None:
    run(PROG, cli)


if __name__ == "__main__":
    main()
