"""`edgevit-classify IMAGE...`: which digit is in each image, how sure, and where the model looked.

Images are files, directories (the images in them) or `-` (image bytes on stdin). Each is brought to
MNIST's convention by `edgevit.preprocess`, then classified by the compiled, cached graph of
`edgevit.runtime.Classifier`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.attention import render
from edgevit.cli import run
from edgevit.device import measured
from edgevit.errors import EdgeViTError
from edgevit.explain import explain
from edgevit.preprocess import preprocess
from edgevit.resources import shipped_weights
from edgevit.runtime import RUNTIMES, Classifier
from edgevit.runtime.cache import Cache, default_cache_dir
from edgevit.runtime.jit import JOB, time_forward
from edgevit.weights import atomic_write

WEIGHTS_ENV = "EDGEVIT_WEIGHTS"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
STDIN = "-"


@dataclass
class Result:
    path: str
    digit: int | None = None
    confidence: float | None = None
    probs: list[float] | None = None
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


def read_input(name: str, path: Path | None) -> bytes:
    if path is None:
        return sys.stdin.buffer.read()
    if path.is_dir():
        raise EdgeViTError(f"{name}: directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        return path.read_bytes()
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
) -> list[Result]:
    """Classify every input; a failing input becomes a Result with `error`, the others still run."""
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
            r.digit, r.confidence, r.probs = int(probs.argmax()), float(probs.max()), [float(p) for p in probs]
            if keep_attention:
                r.image, r.attention = images[i], prediction.attention[:, i]
    return results


def default_weights() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or shipped_weights())


def format_line(r: Result, topk: int) -> str:
    ranked = sorted(range(len(r.probs)), key=lambda d: -r.probs[d])[:topk]
    return f"{r.path}\t" + "\t".join(f"{d} {100 * r.probs[d]:.1f}%" for d in ranked)


def attention_targets(out: Path, results: list[Result]) -> list[tuple[Result, Path]]:
    """One picture: OUT itself; several: OUT is a folder with one picture per image."""
    good = [r for r in results if r.error is None]
    if len(results) == 1:
        return [(r, out) for r in good]
    out.mkdir(parents=True, exist_ok=True)
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
        picture = render(r.image, r.attention, f"{r.path}: digit {r.digit} ({100 * r.confidence:.1f}%)")
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
    p.add_argument("--topk", type=int, default=1, metavar="K", help="show the K most likely digits (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON Lines: path, digit, confidence, probs")
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
    results = classify(
        args.images,
        weights,
        keep_attention=args.attention is not None or args.explain,
        device=args.device,
        runtime=args.runtime,
        c_library=args.c_library,
        beam=args.beam,
    )
    for r in results:
        if args.json:
            fields = (
                {"path": r.path, "error": r.error}
                if r.error
                else {k: getattr(r, k) for k in ("path", "digit", "confidence", "probs")}
            )
            if args.explain and not r.error:
                fields["explain"] = explain(r.attention, grid=round((r.attention.shape[-1] - 1) ** 0.5))
            print(json.dumps(fields))
        elif r.error:
            print(f"edgevit-classify: error: {r.path}: {r.error}", file=sys.stderr)
        else:
            print(format_line(r, args.topk))
            if args.explain:
                print(explain(r.attention, grid=round((r.attention.shape[-1] - 1) ** 0.5)))
    if args.attention is not None and any(r.error is None for r in results):
        for path in write_attention(args.attention, results):
            print(f"attention map written to {path}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def main() -> None:
    run("edgevit-classify", cli)


if __name__ == "__main__":
    main()
