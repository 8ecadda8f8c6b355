r"""`edgevit-classify IMAGE...`: which digit is in each image, how sure, and where the model looked.

Images are files, directories (the images in them) or `-` (image bytes on stdin). Each is brought to
MNIST's convention by `edgevit.preprocess`, then classified by the compiled, cached graph of
`edgevit.runtime.Classifier`.

Each answer is a digit or `not a digit` (edgevit.answer: the model's class for non-digits, or no digit
likely enough); `--always-digit` forces the likeliest digit. Confidences are calibrated probabilities.

Plain output is one line per image, `path<TAB>digit confidence`, with control characters, backslashes
and undecodable bytes in a path escaped (`\t`, `\n`, `\\`, `\xff`), so that any file name is one
unambiguous field. JSON Lines carry the path as text (an undecodable byte becomes U+FFFD) and, for a
name that is not valid UTF-8, its exact bytes in base64 as `path_bytes`; they never contain NaN.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.answer import DIGITS, answer
from edgevit.attention import render
from edgevit.cli import run
from edgevit.device import measured
from edgevit.errors import EdgeViTError
from edgevit.explain import explain
from edgevit.preprocess import MAX_IMAGE_BYTES, preprocess
from edgevit.resources import shipped_weights
from edgevit.runtime import RUNTIMES, Classifier
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, time_forward
from edgevit.weights import atomic_write

WEIGHTS_ENV = "EDGEVIT_WEIGHTS"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
STDIN = "-"
NOT_A_DIGIT = "not a digit"
NAME_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for undecodable bytes 0x80-0xff
HIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")  # control, format (e.g. right-to-left override), line breaks


@dataclass
class Result:
    path: str
    digit: int | None = None  # None with no error: not a digit
    confidence: float | None = None  # the probability behind the answer
    probs: list[float] | None = None  # every class's: the digits, then the model's "not a digit" class if it has one
    reason: str | None = None  # why it is not a digit
    error: str | None = None
    image: object = None  # (28, 28) as the model saw it
    attention: object = None  # (depth, heads, T, T)


def expand_inputs(inputs: list[str]) -> list[tuple[str, Path | None]]:
    """Command-line inputs -> (display path, file or None for stdin); a directory yields its images."""
    out: list[tuple[str, Path | None]] = []
    for item in inputs:
        path = Path(item)
        if item == STDIN:
            out.append((STDIN, None))
        elif path.is_dir():
            images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            out += [(str(p), p) for p in images] or [(item, path)]  # an empty directory reports itself
        else:
            out.append((item, path))
    return out


def read_limited(stream, name: str) -> bytes:
    """At most MAX_IMAGE_BYTES from `stream` (stdin may be endless: /dev/zero)."""
    data = stream.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise EdgeViTError(f"{name}: over {MAX_IMAGE_BYTES // 2**20} MiB, the most an image may be")
    return data


def read_input(name: str, path: Path | None) -> bytes:
    try:
        if path is None:
            if sys.stdin is None:
                raise EdgeViTError(f"{name}: standard input is closed")
            return read_limited(sys.stdin.buffer, name)
        if path.is_dir():
            raise EdgeViTError(f"{name}: directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        with open(path, "rb") as f:
            return read_limited(f, name)
    except FileNotFoundError:
        raise EdgeViTError(f"{name}: no such file") from None
    except OSError as e:
        raise EdgeViTError(f"{name}: cannot read ({e.strerror})") from None


def classify(
    inputs: list[str],
    weights: str | os.PathLike,
    keep_attention: bool = False,
    device: str | None = None,
    runtime: str = "tinygrad",
    c_library: str | os.PathLike | None = None,
    beam: int | None = None,
    always_digit: bool = False,
) -> list[Result]:
    """Classify every input; a failing input becomes a Result with `error`, the others still run.
    `always_digit` answers the likeliest digit even where the model says "not a digit"."""
    # a bad weights file, backend or library fails the run before any image is read
    classifier = Classifier(weights, device=device, runtime=runtime, c_library=c_library, beam=beam)
    results, images = [], []
    for name, path in expand_inputs(inputs):
        try:
            images.append(preprocess(read_input(name, path), name))
            results.append(Result(name))
        except EdgeViTError as e:
            results.append(Result(name, error=str(e).removeprefix(f"{name}: ")))
    good = [r for r in results if r.error is None]
    if good:
        prediction = classifier.predict(np.stack(images))
        for i, r in enumerate(good):
            probs = prediction.probs[i]
            if not np.isfinite(probs).all():  # an answer of "0 nan%" is no answer
                r.error = "the model's output is not a number (its weights overflow on this image)"
                continue
            said = answer(probs, classifier.reject, always_digit)
            r.digit, r.confidence, r.reason, r.probs = said.digit, said.confidence, said.reason, [float(p) for p in probs]
            if keep_attention:
                r.image, r.attention = images[i], prediction.attention[:, i]
    return results


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


def default_weights() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or shipped_weights())


def format_line(r: Result, topk: int) -> str:
    """`path<TAB>answer confidence`, then the next likeliest digits up to `topk` fields in all."""
    said = f"{NOT_A_DIGIT if r.digit is None else r.digit} {100 * r.confidence:.1f}%"
    others = sorted((d for d in range(DIGITS) if d != r.digit), key=lambda d: -r.probs[d])[: topk - 1]
    return "\t".join([escape_name(r.path), said] + [f"{d} {100 * r.probs[d]:.1f}%" for d in others])


def attention_targets(out: Path, results: list[Result]) -> list[tuple[Result, Path]]:
    """One picture: OUT itself; several: OUT is a folder with one picture per image."""
    good = [r for r in results if r.error is None]
    if len(results) == 1:
        return [(r, out) for r in good]
    if out.exists() and not out.is_dir():
        raise EdgeViTError(f"--attention {out}: is a file; with several images it must be a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeViTError(f"--attention {out}: cannot create the folder ({e.strerror})") from None
    taken: set[str] = set()
    targets = []
    for i, r in enumerate(good):
        stem = "stdin" if r.path == STDIN else Path(r.path).stem
        name = stem if stem not in taken else f"{stem}-{i}"
        taken.add(name)
        targets.append((r, out / f"{name}.png"))
    return targets


def write_attention(out: Path, results: list[Result]) -> list[Path]:
    written = []
    for r, target in attention_targets(out, results):
        said = NOT_A_DIGIT if r.digit is None else f"digit {r.digit}"
        picture = render(r.image, r.attention, f"{r.path}: {said} ({100 * r.confidence:.1f}%)")
        atomic_write(target, lambda tmp, pic=picture: pic.save(tmp, "PNG"))
        written.append(target)
    return written


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgevit-classify", description="Classify images of handwritten or printed digits.")
    p.add_argument("images", nargs="*", help="image files, directories of images, or - for an image on stdin")
    p.add_argument("--weights", help="weights file (default: $EDGEVIT_WEIGHTS or the shipped weights)")
    p.add_argument("--device", help="tinygrad backend, e.g. CPU, CUDA, METAL, CL (default: the fastest here, measured once)")
    p.add_argument(
        "--list-devices",
        action="store_true",
        help="one line per backend tinygrad knows: usable here or why not, its batch-1 time, and which is chosen",
    )
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="tinygrad",
        help="tinygrad: the JIT graph on --device; c: the same graph exported to C, built once and cached (fastest on CPU)",
    )
    p.add_argument("--c-library", type=Path, metavar="LIB.so", help="with --runtime c: a library built by tools/export.py")
    p.add_argument(
        "--beam",
        type=int,
        metavar="N",
        help="BEAM-search kernel shapes when compiling (tinygrad: minutes once; c: default 2); the cache keeps them",
    )
    p.add_argument("--topk", type=int, default=1, metavar="K", help="show the answer and the next K-1 likeliest digits")
    p.add_argument(
        "--always-digit",
        action="store_true",
        help="answer the likeliest digit even for an image the model takes for no digit",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print JSON Lines: path, digit (null: not a digit, with a "reason"), confidence, probs',
    )
    p.add_argument("--attention", type=Path, metavar="OUT.png", help="write attention maps (a folder for several images)")
    p.add_argument(
        "--explain",
        action="store_true",
        help="after each answer, its attention as text: per layer, the class token's 4x4 grid and the strongest patch links",
    )
    args = p.parse_args(argv)
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
    weights = Path(args.weights) if args.weights else default_weights()
    if args.c_library is not None and args.runtime != "c":
        raise EdgeViTError("--c-library needs --runtime c")
    if (cache := Cache(default_cache_dir())).problem:
        print(f"edgevit-classify: warning: {cache.problem}", file=sys.stderr)
    results = classify(
        args.images,
        weights,
        keep_attention=args.attention is not None or args.explain,
        device=args.device,
        runtime=args.runtime,
        c_library=args.c_library,
        beam=args.beam,
        always_digit=args.always_digit,
    )
    for r in results:
        if args.json:
            fields = json_path(r.path)
            fields |= {"error": r.error} if r.error else {k: getattr(r, k) for k in ("digit", "confidence", "probs")}
            fields |= {"reason": r.reason} if r.reason else {}
            if args.explain and not r.error:
                fields["explain"] = explain(r.attention, grid=round((r.attention.shape[-1] - 1) ** 0.5))
            print(json.dumps(fields, allow_nan=False))
        elif r.error:
            print(f"edgevit-classify: error: {escape_name(r.path)}: {r.error}", file=sys.stderr)
        else:
            print(format_line(r, args.topk))
            if args.explain:
                print(explain(r.attention, grid=round((r.attention.shape[-1] - 1) ** 0.5)))
    if args.attention is not None and any(r.error is None for r in results):
        for path in write_attention(args.attention, results):
            print(f"attention map written to {escape_name(str(path))}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def main() -> None:
    run("edgevit-classify", cli)


if __name__ == "__main__":
    main()
