"""Digits from other writers and sources than MNIST's, as image files: what the robustness report
scores beyond damaged MNIST digits.

Groups (GROUPS), each a generator `(rng, i, test) -> (label, file bytes)`:
- strokes: digits drawn from skeletons of several ways of writing each (a 1 with or without a flag
  and a base, an open or closed 4, a 7 with a bar, a 9 with a straight or curved tail), jittered,
  slanted, squeezed and written with pens of many widths; none of it comes from MNIST;
- uci: MNIST test digits the way the UCI optical digits were made: 32x32 bitmaps counted in 4x4
  blocks into 8x8 images of 17 grey levels, then enlarged onto paper;
- printed: digits 0-9 in the held-out fonts (Liberation, URW base35; the training banks use others),
  at random sizes and positions on white or grey paper, some JPEG-compressed;
- canvas: MNIST test digits redrawn as thick anti-aliased pen strokes on a transparent 280x280
  canvas (a web drawing pad's export), dark or light ink;
- scans: MNIST test digits printed dark on paper and scanned at low resolution: uneven lighting,
  paper grain, blur, slight rotation, JPEG.
`generate(group, n, seed, test)` yields (label, bytes).
"""

from __future__ import annotations

import glob
import io
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edgevit.data import Split

FONT_GLOBS = ("/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.otf")
NOT_DIGITS = ("symbol", "emoji", "dingbat", "math", "d050000l")  # fonts whose "digits" are pictures
HELD_OUT_FONTS = ("liberation", "urw-base35")  # never used for the training banks (tools/positives.py)
MNIST_OFFSET = 5000  # canvas, scans and uci redraw test digits from here on, apart from the damaged set's first picks


def fonts(family: str = "") -> list[str]:
    """The machine's fonts (those whose path contains `family`, if given)."""
    found = sorted({p for g in FONT_GLOBS for p in glob.glob(g, recursive=True)})
    return [p for p in found if family.lower() in p.lower() and not any(s in p.lower() for s in NOT_DIGITS)]


def _encode(img: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


# --- strokes: skeletons in a unit box (x right, y down), several styles a digit ---------------------
def _arc(cx: float, cy: float, rx: float, ry: float, t0: float, t1: float, n: int = 24) -> list[tuple[float, float]]:
    t = np.deg2rad(np.linspace(t0, t1, n))
    return list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t)))


SKELETONS: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[_arc(0.5, 0.5, 0.32, 0.45, -90, 270)], [_arc(0.5, 0.5, 0.28, 0.45, -60, 310)]],
    1: [
        [[(0.5, 0.05), (0.5, 0.95)]],
        [[(0.28, 0.25), (0.52, 0.05), (0.5, 0.95)]],
        [[(0.28, 0.25), (0.52, 0.05), (0.5, 0.95)], [(0.3, 0.95), (0.72, 0.95)]],
    ],
    2: [
        [[*_arc(0.5, 0.3, 0.3, 0.25, 160, 400), (0.15, 0.95), (0.85, 0.95)]],
        [[*_arc(0.5, 0.3, 0.3, 0.25, 180, 380), (0.2, 0.9), *_arc(0.35, 0.88, 0.15, 0.07, 180, 360), (0.88, 0.92)]],
    ],
    3: [
        [_arc(0.5, 0.28, 0.28, 0.23, 200, 450) + _arc(0.5, 0.73, 0.32, 0.23, -90, 160)],
        [[(0.2, 0.05), (0.8, 0.05), (0.45, 0.42), *_arc(0.5, 0.7, 0.32, 0.26, -100, 160)]],
    ],
    4: [
        [[(0.6, 0.05), (0.15, 0.65), (0.88, 0.65)], [(0.66, 0.3), (0.66, 0.95)]],
        [[(0.22, 0.05), (0.15, 0.6), (0.88, 0.6)], [(0.7, 0.05), (0.7, 0.95)]],
    ],
    5: [
        [[(0.8, 0.05), (0.3, 0.05), (0.25, 0.45)], _arc(0.5, 0.68, 0.32, 0.27, -120, 160)],
        [[(0.25, 0.05), (0.25, 0.45), *_arc(0.5, 0.68, 0.32, 0.27, -120, 160)], [(0.25, 0.05), (0.82, 0.05)]],
    ],
    6: [
        [[(0.75, 0.05), (0.45, 0.2), (0.25, 0.5), *_arc(0.5, 0.7, 0.27, 0.25, 180, 540)]],
        [[*_arc(0.75, 0.55, 0.55, 0.5, -110, -180, 12), *_arc(0.5, 0.72, 0.3, 0.23, 180, 520)]],
    ],
    7: [
        [[(0.15, 0.05), (0.85, 0.05), (0.4, 0.95)]],
        [[(0.15, 0.05), (0.85, 0.05), (0.45, 0.95)], [(0.35, 0.5), (0.8, 0.5)]],
        [[(0.15, 0.15), (0.2, 0.05), (0.85, 0.05), (0.6, 0.5), (0.5, 0.95)]],
    ],
    8: [
        [_arc(0.5, 0.27, 0.25, 0.22, 90, 450), _arc(0.5, 0.72, 0.3, 0.23, -90, 270)],
        [[*_arc(0.5, 0.27, 0.25, 0.22, 30, 330), (0.3, 0.6), *_arc(0.5, 0.75, 0.25, 0.2, 180, 360), (0.3, 0.45)]],
    ],
    9: [
        [_arc(0.5, 0.3, 0.3, 0.25, 0, 360), [(0.8, 0.3), (0.75, 0.95)]],
        [_arc(0.48, 0.28, 0.3, 0.24, 0, 360), [(0.78, 0.3), (0.75, 0.7), (0.5, 0.95)]],
    ],
}


def strokes(rng: np.random.Generator, i: int, test: Split) -> tuple[int, bytes]:
    label = i % 10
    style = SKELETONS[label][int(rng.integers(len(SKELETONS[label])))]
    size = int(rng.integers(48, 200))
    slant, squeeze, turn = rng.uniform(-0.35, 0.2), rng.uniform(0.55, 1.05), np.deg2rad(rng.uniform(-8, 8))
    width = max(1, round(size * rng.uniform(0.04, 0.14)))
    w, h = int(size * rng.uniform(0.9, 1.6)), int(size * rng.uniform(1.2, 1.6))
    ox, oy = rng.uniform(0.1, 0.5) * w, rng.uniform(0.05, 0.25) * h
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for stroke in style:
        pts = np.array(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        x, y = (pts[:, 0] - 0.5) * squeeze + slant * (0.5 - pts[:, 1]), pts[:, 1] - 0.5
        x, y = x * np.cos(turn) - y * np.sin(turn), x * np.sin(turn) + y * np.cos(turn)
        draw.line(
            [(ox + size * squeeze / 2 + size * a, oy + size / 2 + size * b) for a, b in zip(x, y)],
            fill=255,
            width=width,
            joint="curve",
        )
    ink = np.asarray(img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), np.float32) / 255
    paper, pen = rng.uniform(180, 255), rng.uniform(0, 80)
    return label, _encode(Image.fromarray(np.clip(paper - (paper - pen) * ink, 0, 255).astype(np.uint8)))


def uci(rng: np.random.Generator, i: int, test: Split) -> tuple[int, bytes]:
    j = MNIST_OFFSET + i
    bitmap = np.asarray(Image.fromarray(test.images[j]).resize((32, 32), Image.Resampling.BILINEAR)) > 127
    counts = bitmap.reshape(8, 4, 8, 4).sum((1, 3)).astype(np.float32)  # 0..16 per block
    k = int(rng.integers(6, 32))  # pixels per block on the page
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    ink = np.asarray(Image.fromarray(counts / 16).resize((8 * k, 8 * k), resample), np.float32)
    paper, pen = rng.uniform(190, 255), rng.uniform(0, 60)
    page = np.pad(paper - (paper - pen) * ink, int(rng.integers(0, 2 * k + 1)), constant_values=paper)
    return int(test.labels[j]), _encode(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)))


def printed(rng: np.random.Generator, i: int, test: Split) -> tuple[int, bytes]:
    label = i % 10
    paths = [p for family in HELD_OUT_FONTS for p in fonts(family)]
    if not paths:
        raise FileNotFoundError(f"no {' or '.join(HELD_OUT_FONTS)} fonts under /usr/share/fonts")
    size = int(rng.integers(24, 160))
    font = ImageFont.truetype(paths[(i // 10) % len(paths)], size)
    w, h = int(size * rng.uniform(1.2, 3.0)), int(size * rng.uniform(1.4, 2.5))
    img = Image.new("L", (w, h), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), str(label), font=font)
    x = rng.uniform(0, max(1, w - (box[2] - box[0]))) - box[0]
    y = rng.uniform(0, max(1, h - (box[3] - box[1]))) - box[1]
    draw.text((x, y), str(label), fill=int(rng.integers(0, 60)), font=font)
    if rng.random() < 0.5:
        return label, _encode(img.convert("RGB"), "JPEG", int(rng.integers(50, 95)))
    return label, _encode(img)


def canvas(rng: np.random.Generator, i: int, test: Split) -> tuple[int, bytes]:
    j = MNIST_OFFSET + 1000 + i
    big = Image.fromarray(test.images[j]).resize((280, 280), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(4))
    alpha = np.clip((np.asarray(big, np.float32) - 60) * 3, 0, 255).astype(np.uint8)  # a firm pen edge
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (0, 0, 0) if rng.random() < 0.7 else (255, 255, 255), alpha
    return int(test.labels[j]), _encode(Image.fromarray(rgba, "RGBA"))


def scans(rng: np.random.Generator, i: int, test: Split) -> tuple[int, bytes]:
    j = MNIST_OFFSET + 2000 + i
    height = int(rng.integers(14, 40))  # pixels the digit's 28x28 cell gets in the scan
    cell = Image.fromarray(255 - test.images[j]).rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, fillcolor=255)
    cell = cell.resize((height, height), Image.Resampling.BILINEAR)
    w, h = height + int(rng.integers(4, 30)), height + int(rng.integers(4, 30))
    page = np.full((h, w), 255.0, np.float32)
    x0, y0 = int(rng.integers(0, w - height + 1)), int(rng.integers(0, h - height + 1))
    page[y0 : y0 + height, x0 : x0 + height] = np.asarray(cell, np.float32)
    ink_level, paper_level = rng.uniform(0, 90), rng.uniform(170, 245)
    page = paper_level - (255 - page) / 255 * (paper_level - ink_level)
    ys, xs = np.mgrid[0:h, 0:w]
    page *= 1 + rng.uniform(-0.15, 0.15) * (xs / w - 0.5) + rng.uniform(-0.15, 0.15) * (ys / h - 0.5)  # lighting
    page += rng.normal(0, rng.uniform(2, 10), page.shape)  # paper grain and sensor noise
    img = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
    return int(test.labels[j]), _encode(img, "JPEG", int(rng.integers(30, 85)))


GROUPS: dict[str, Callable[[np.random.Generator, int, Split], tuple[int, bytes]]] = {
    "strokes": strokes,
    "uci": uci,
    "printed": printed,
    "canvas": canvas,
    "scans": scans,
}
MAX_PER_GROUP = 1000  # canvas, scans and uci each redraw their own thousand test digits


def generate(group: str, n: int, seed: int, test: Split) -> Iterator[tuple[int, bytes]]:
    """`n` images of `group` (at most MAX_PER_GROUP): (label, file bytes), a pure function of the arguments."""
    make = GROUPS[group]
    for i in range(min(n, MAX_PER_GROUP)):
        yield make(np.random.default_rng([seed, list(GROUPS).index(group), i]), i, test)
