"""Degraded digits for training and for the robustness report, through the same preprocessing a
user's file goes through.

- `degraded_bank(split, n, seed)`: training digits damaged by the `train` generators of
  edgevit.degrade (one kind, sometimes two, at a random severity; some left clean), each encoded as
  a file and read back by `edgevit.preprocess`, so the model learns what `edgevit-classify` will
  show it;
- `held_out_set(split, per_cell)`: test digits damaged by the `held_out` generators, every kind at
  every severity of edgevit.degrade.SEVERITIES; never trained or tuned on;
- `writers_set(split, per_group)`: digits from other writers and sources (edgevit.writers);
- `score(cells, probs, reject)`: per kind and severity (or group), how many were answered right, answered
  "not a digit" (an image preprocessing refuses, "no digit found", counts as that: the user got no
  digit) or answered wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from edgevit import writers
from edgevit.answer import NOT_A_DIGIT, Reject, answers
from edgevit.data import Split
from edgevit.degrade import KINDS, PRESENTATIONS, SEVERITIES, Damage, capture
from edgevit.errors import EdgeViTError
from edgevit.preprocess import preprocess

BANK_STREAM, HELD_OUT_STREAM = 41, 42  # first seed words: the two sets never share a random stream
CLEAN_SHARE = 0.25  # of the bank: clean digits, only preprocessed (as a user's plain file is)
SECOND_KIND = 0.3  # of the damaged ones: a second kind on top
MNIST_SHARE = 0.6  # of the bank: stored as benchmarks store digits (28x28, white on black); else on paper
MAX_SEVERITY = 1.1  # training severities run a little past the report's worst level
CHUNK = 500  # images a worker makes at a time


@dataclass(frozen=True)
class Cell:
    """The held-out images of one kind at one severity: those preprocessing accepted, and how many it refused."""

    kind: str
    severity: int
    images: np.ndarray  # (N, 28, 28) float32 on [0, 255], as preprocessing gives them
    labels: np.ndarray  # (N,)
    refused: int


@dataclass(frozen=True)
class Row:
    """How the digits of a cell (or of several) were answered, as shares of its images."""

    kind: str
    severity: int  # 0: every severity of the kind together, or a group of other writers
    images: int
    right: float
    not_a_digit: float
    wrong: float


def _bank_image(split: Split, seed: int, i: int) -> tuple[np.ndarray, int] | None:
    rng = np.random.default_rng([BANK_STREAM, seed, i])
    j = int(rng.integers(len(split)))
    damages = []
    if rng.random() >= CLEAN_SHARE:
        picked = rng.choice(len(KINDS), 1 + int(rng.random() < SECOND_KIND), replace=False)
        damages = [Damage(KINDS[k], float(rng.uniform(0, MAX_SEVERITY))) for k in picked]
    presentation = PRESENTATIONS[0] if rng.random() < MNIST_SHARE else PRESENTATIONS[1]
    try:
        return preprocess(capture(split.images[j], damages, "train", rng, presentation)), int(split.labels[j])
    except EdgeViTError:
        return None


def _bank_chunk(split: Split, seed: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int]:
    made = [_bank_image(split, seed, i) for i in range(start, stop)]
    kept = [m for m in made if m is not None]
    images = np.array([np.clip(np.rint(im), 0, 255) for im, _ in kept], np.uint8).reshape(-1, 28, 28)
    return images, np.array([label for _, label in kept], np.int64), len(made) - len(kept)


def degraded_bank(split: Split, n: int, seed: int = 0, workers: int = 1) -> tuple[np.ndarray, np.ndarray, int]:
    """`n` damaged training digits (uint8 (M, 28, 28), labels (M,)) and how many preprocessing
    refused (M + refused = n). A pure function of (split, n, seed), whatever `workers` is."""
    chunks = [(start, min(n, start + CHUNK)) for start in range(0, n, CHUNK)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_bank_chunk, *zip(*((split, seed, a, b) for a, b in chunks))))
    else:
        parts = [_bank_chunk(split, seed, a, b) for a, b in chunks]
    if not parts:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.int64), 0
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sum(p[2] for p in parts)


def _cell(split: Split, kind_index: int, severity: int, per_cell: int, seed: int) -> Cell:
    kind = KINDS[kind_index]
    rng = np.random.default_rng([HELD_OUT_STREAM, seed, kind_index, severity])
    picked = rng.choice(len(split), min(per_cell, len(split)), replace=False)
    images, labels = [], []
    for n, j in enumerate(picked):
        presentation = PRESENTATIONS[n % len(PRESENTATIONS)]
        data = capture(split.images[j], [Damage(kind, SEVERITIES[severity])], "held-out", rng, presentation)
        try:
            images.append(preprocess(data))
            labels.append(int(split.labels[j]))
        except EdgeViTError:
            pass
    stack = np.array(images, np.float32).reshape(-1, 28, 28)
    return Cell(kind.name, severity, stack, np.array(labels, np.int64), len(picked) - len(labels))


def held_out_set(split: Split, per_cell: int = 100, seed: int = 0, workers: int = 1) -> list[Cell]:
    """Every kind at every severity, `per_cell` test digits each (half as benchmarks store digits,
    half on paper), damaged by the held-out generators and preprocessed."""
    jobs = [(split, k, s, per_cell, seed) for k in range(len(KINDS)) for s in SEVERITIES]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            return list(pool.map(_cell, *zip(*jobs)))
    return [_cell(*job) for job in jobs]


def writers_set(split: Split, per_group: int = 300, seed: int = 0) -> list[Cell]:
    """Digits from other writers and sources (edgevit.writers), one cell a group (severity 0), preprocessed."""
    cells = []
    for group in writers.GROUPS:
        images, labels, refused = [], [], 0
        for label, data in writers.generate(group, per_group, seed, split):
            try:
                images.append(preprocess(data))
                labels.append(label)
            except EdgeViTError:
                refused += 1
        cells.append(Cell(group, 0, np.array(images, np.float32).reshape(-1, 28, 28), np.array(labels, np.int64), refused))
    return cells


def score(cells: list[Cell], probs: Callable[[np.ndarray], np.ndarray], reject: Reject) -> list[Row]:
    """One row a cell: how its digits were answered."""
    rows = []
    for cell in cells:
        said = answers(probs(cell.images), reject) if len(cell.images) else np.zeros(0, np.int64)
        right = int((said == cell.labels).sum())
        refused = int((said == NOT_A_DIGIT).sum()) + cell.refused
        rows.append(_row(cell.kind, cell.severity, len(cell.labels) + cell.refused, right, refused))
    return rows


def by_kind(rows: list[Row]) -> list[Row]:
    """One row a kind over its severities (severity 0, weighted by images), in the order the kinds first appear."""
    kinds = {r.kind: [x for x in rows if x.kind == r.kind] for r in rows}
    out = []
    for kind, mine in kinds.items():
        n = sum(r.images for r in mine)
        share = {f: sum(getattr(r, f) * r.images for r in mine) / max(n, 1) for f in ("right", "not_a_digit", "wrong")}
        out.append(Row(kind, 0, n, **share))
    return out


def _row(kind: str, severity: int, total: int, right: int, refused: int) -> Row:
    n = max(total, 1)
    return Row(kind, severity, total, right / n, refused / n, (total - right - refused) / n)


def mean_of(rows: list[Row], name: str = "mean") -> Row:
    """Each row counts once, whatever its number of images: the figure the targets are set on."""
    if not rows:
        return Row(name, 0, 0, 0.0, 0.0, 0.0)
    mean = {f: float(np.mean([getattr(r, f) for r in rows])) for f in ("right", "not_a_digit", "wrong")}
    return Row(name, 0, sum(r.images for r in rows), **mean)
