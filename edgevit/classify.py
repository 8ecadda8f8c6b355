"""Which digit is in each image: inputs (files, directories of images, stdin) in, one `Result` each
out, streamed, `CHUNK` images at a time (the `edgevit classify` / `edgevit-classify` command is
edgevit.cli.classify).

Each input is read once through one descriptor (only regular files: a FIFO or device is refused by
name), brought to MNIST's convention by `edgevit.preprocess` and classified by a
`edgevit.runtime.Classifier`. Each answer is a digit or "not a digit" (edgevit.answer); a failing
input is a Result with `error`, and every other input is still answered.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgevit.answer import answer
from edgevit.errors import EdgeViTError
from edgevit.files import read_regular
from edgevit.preprocess import MAX_IMAGE_BYTES, preprocess
from edgevit.resources import shipped_weights
from edgevit.runtime import Classifier

WEIGHTS_ENV = "EDGEVIT_WEIGHTS"
CHUNK = 256  # images preprocessed and classified at a time
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
STDIN = "-"


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


def expand_inputs(inputs: list[str]) -> Iterator[tuple[str, Path | None, str | None]]:
    """Command-line inputs -> (display path, file or None for stdin, or an error); a directory yields
    its images, sorted; one that cannot be listed, or holds none, is one error of its own."""
    for item in inputs:
        path = Path(item)
        if item == STDIN:
            yield STDIN, None, None
        elif path.is_dir():
            try:
                images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as e:
                yield item, path, f"cannot list the directory ({e.strerror})"
                continue
            if not images:
                yield item, path, f"directory has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            yield from ((str(p), p, None) for p in images)
        else:
            yield item, path, None


def read_input(name: str, path: Path | None) -> bytes:
    """An input's bytes, at most MAX_IMAGE_BYTES (stdin may be endless: /dev/zero)."""
    if path is not None:
        return read_regular(path, MAX_IMAGE_BYTES, "image")
    if sys.stdin is None:
        raise EdgeViTError(f"{name}: standard input is closed")
    data = sys.stdin.buffer.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise EdgeViTError(f"{name}: over {MAX_IMAGE_BYTES // 2**20} MiB, the most an image may be")
    return data


def classify(
    inputs: list[str],
    classifier: Classifier,
    keep_attention: bool = False,
    always_digit: bool = False,
    chunk: int = CHUNK,
) -> Iterator[Result]:
    """Classify every input, in order, `chunk` images at a time: results stream out as they are
    ready and memory stays flat however many images there are. A failing input becomes a Result with
    `error`; the others still run. `always_digit` answers the likeliest digit even where the model
    says "not a digit"."""
    pending: list[tuple[Result, np.ndarray | None]] = []
    for name, path, problem in expand_inputs(inputs):
        try:
            if problem:
                raise EdgeViTError(problem)
            pending.append((Result(name), preprocess(read_input(name, path), name)))
        except EdgeViTError as e:
            message = str(e).removeprefix(f"{name}: ").removeprefix(f"{path}: ")
            pending.append((Result(name, error=message), None))
        if sum(image is not None for _, image in pending) >= chunk:
            yield from _answer(pending, classifier, keep_attention, always_digit)
            pending = []
    yield from _answer(pending, classifier, keep_attention, always_digit)


def _answer(pending: list, classifier: Classifier, keep_attention: bool, always_digit: bool) -> Iterator[Result]:
    images = [image for _, image in pending if image is not None]
    prediction = classifier.predict(np.stack(images)) if images else None
    i = 0
    for r, image in pending:
        if image is not None:
            probs = prediction.probs[i]
            if not np.isfinite(probs).all():  # an answer of "0 nan%" is no answer
                r.error = "the model's output is not a number (its weights overflow on this image)"
            else:
                said = answer(probs, classifier.reject, always_digit)
                r.digit, r.confidence, r.reason, r.probs = said.digit, said.confidence, said.reason, [float(p) for p in probs]
                if keep_attention:
                    r.image, r.attention = image, prediction.attention[:, i]
            i += 1
        yield r


def default_weights() -> Path:
    return Path(os.environ.get(WEIGHTS_ENV) or shipped_weights())
