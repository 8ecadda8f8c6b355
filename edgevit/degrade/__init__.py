"""Digits as real captures damage them: a clean MNIST digit in, the bytes of an image file out.

`capture(digit, damages, family, rng)` draws the digit the way a capture would hold it, as
benchmarks store digits (28x28, white ink on black) or on paper (dark ink on light paper, 2-4x
larger, as a scan or a photo), applies each damage (`edgevit.degrade.kinds`) in the order a capture
suffers them (pen and page, optics, light, sensor, encoder) and encodes a PNG. The image is then read
by `edgevit.preprocess` exactly as a user's file is, so training and the robustness report see what
`edgevit-classify` would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from edgevit.degrade.kinds import BY_NAME, INK, KINDS, Kind

FAMILIES = ("train", "held-out")
PRESENTATIONS = ("mnist", "paper")
SEVERITIES = {1: 0.2, 2: 0.55, 3: 0.9}  # the report's levels, as the generators' severity on [0, 1]
PAPER_SCALES = (2, 3, 4)  # capture pixels per MNIST pixel on paper

__all__ = ["FAMILIES", "KINDS", "PRESENTATIONS", "SEVERITIES", "Damage", "Kind", "capture", "kind"]


@dataclass(frozen=True)
class Damage:
    kind: Kind
    severity: float  # on [0, 1]


def kind(name: str) -> Kind:
    return BY_NAME[name]


def _ink(digit: np.ndarray, scale: int) -> np.ndarray:
    ink = digit.astype(np.float32) / 255.0
    if scale == 1:
        return ink
    size = digit.shape[0] * scale
    return np.clip(np.asarray(Image.fromarray(ink, "F").resize((size, size), Image.Resampling.BICUBIC)), 0, 1)


def _render(ink: np.ndarray, presentation: str, rng: np.random.Generator) -> np.ndarray:
    """Ink -> grey on [0, 1]: white on black as MNIST, or dark ink on paper."""
    if presentation == "mnist":
        return ink
    paper, pen = rng.uniform(0.7, 1.0), rng.uniform(0.0, 0.35)
    return paper - (paper - pen) * ink


def capture(
    digit: np.ndarray, damages: list[Damage], family: str, rng: np.random.Generator, presentation: str = "mnist"
) -> bytes:
    """A clean digit (28, 28) uint8, white on black -> the PNG file of its damaged capture."""
    if family not in FAMILIES or presentation not in PRESENTATIONS:
        raise ValueError(f"unknown family {family!r} or presentation {presentation!r}")
    scale = 1 if presentation == "mnist" else int(rng.choice(PAPER_SCALES))
    a = _ink(digit, scale)
    ordered = sorted(damages, key=lambda d: d.kind.stage)
    for d in (d for d in ordered if d.kind.stage == INK):
        a = np.clip(_op(d, family)(a, rng, d.severity, scale), 0, 1)
    a = _render(a, presentation, rng)
    for d in (d for d in ordered if d.kind.stage != INK):
        a = np.clip(_op(d, family)(a, rng, d.severity, scale), 0, 1)
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _op(damage: Damage, family: str):
    return damage.kind.train if family == "train" else damage.kind.held_out
