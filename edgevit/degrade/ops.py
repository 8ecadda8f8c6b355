"""Image operations the degradations are made of: kernels, convolution, morphology, drawn strokes.

Arrays are float32 (H, W) on [0, 1]; every function is pure and works at any resolution, so a
degradation written for a 28x28 digit also applies to a 112x112 capture of it (sizes are given in
MNIST pixels and multiplied by `scale`, the capture's pixels per MNIST pixel).
"""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def convolve(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """`a` filtered by `kernel` (normalised to sum 1), edges padded by reflection."""
    kernel = kernel / kernel.sum()
    kh, kw = kernel.shape
    padded = np.pad(a, ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2)), mode="reflect")
    out = np.zeros_like(a, dtype=np.float32)
    for (dy, dx), w in np.ndenumerate(kernel):
        if w:
            out += w * padded[dy : dy + a.shape[0], dx : dx + a.shape[1]]
    return out


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, int(np.ceil(2.5 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float32)
    g = np.exp(-(x**2) / (2 * max(sigma, 1e-3) ** 2))
    return np.outer(g, g)


def disk_kernel(radius: float) -> np.ndarray:
    """A defocused lens's point spread: a uniform disc (anti-aliased at its rim)."""
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    return np.clip(radius + 0.5 - np.hypot(x, y), 0, 1)


def path_kernel(points: np.ndarray, width: float = 1.0) -> np.ndarray:
    """A motion blur's kernel: the path (K, 2) the camera moved along, drawn as a thin line."""
    lo = np.floor(points.min(0)) - 2
    size = np.ceil(points.max(0) - lo).astype(int) + 3
    img = Image.new("F", (int(size[0]), int(size[1])), 0.0)
    ImageDraw.Draw(img).line([tuple(p - lo) for p in points], fill=1.0, width=max(1, round(width)))
    k = np.asarray(img, np.float32)
    return k if k.sum() else np.ones((1, 1), np.float32)


def max_filter(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a, "F").filter(ImageFilter.MaxFilter(size)), np.float32)


def min_filter(a: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a, "F").filter(ImageFilter.MinFilter(size)), np.float32)


def odd(x: float) -> int:
    """The nearest odd filter size of at least 3."""
    return max(3, 2 * round((x - 1) / 2) + 1)


def resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(a, "F").resize((shape[1], shape[0]), Image.Resampling.BILINEAR), np.float32)


def draw(shape: tuple[int, int], strokes: list[tuple[list[tuple[float, float]], float]], dots: float = 0.0) -> np.ndarray:
    """A mask (H, W) of pen strokes, each (points, width in pixels); `dots` > 0 draws each stroke as
    dots that far apart instead of a continuous line."""
    img = Image.new("L", (shape[1] * 4, shape[0] * 4), 0)  # drawn at 4x and reduced: anti-aliased
    d = ImageDraw.Draw(img)
    for points, width in strokes:
        pts = [(4 * x, 4 * y) for x, y in points]
        w = max(1, round(4 * width))
        if dots:
            for p in _along(pts, 4 * dots):
                d.ellipse([p[0] - w / 2, p[1] - w / 2, p[0] + w / 2, p[1] + w / 2], fill=255)
        else:
            d.line(pts, fill=255, width=w, joint="curve")
            for x, y in (pts[0], pts[-1]):
                d.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=255)
    small = img.resize((shape[1], shape[0]), Image.Resampling.BOX)
    return np.asarray(small, np.float32) / 255.0


def _along(points: list[tuple[float, float]], spacing: float) -> list[tuple[float, float]]:
    """Points every `spacing` along a polyline."""
    out = []
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        n = max(1, int(np.hypot(x1 - x0, y1 - y0) / spacing))
        out += [(x0 + (x1 - x0) * t / n, y0 + (y1 - y0) * t / n) for t in range(n)]
    return [*out, points[-1]]


def blobs(shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A mask of irregular filled blobs (ink drops): each a jittered polygon around its centre."""
    img = Image.new("L", (shape[1] * 4, shape[0] * 4), 0)
    d = ImageDraw.Draw(img)
    for (cx, cy), r in zip(centres, radii):
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        rr = 4 * r * rng.uniform(0.6, 1.2, 9)
        d.polygon([(4 * cx + q * np.cos(t), 4 * cy + q * np.sin(t)) for t, q in zip(angles, rr)], fill=255)
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BOX), np.float32) / 255.0


def fractal(shape: tuple[int, int], rng: np.random.Generator, octaves: int, decay: float) -> np.ndarray:
    """Smooth random clouds on [0, 1]: octaves of upsampled random grids, each finer one weaker."""
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        cells = 2 ** (o + 1)
        out += amp * resize(rng.random((cells + 1, cells + 1)).astype(np.float32), shape)
        total, amp = total + amp, amp * decay
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def ink_box(ink: np.ndarray, level: float = 0.3) -> tuple[int, int, int, int]:
    """The bounding box (y0, x0, y1, x1) of the strokes of an ink map."""
    ys, xs = np.nonzero(ink > level)
    if not len(ys):
        return 0, 0, ink.shape[0], ink.shape[1]
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def line_through(box: tuple[int, int, int, int], angle: float, offset: float, reach: float) -> list[tuple[float, float]]:
    """The two ends of a straight line at `angle` crossing the box's centre (moved by `offset` of its
    size, across the line), `reach` times the box's diagonal long."""
    y0, x0, y1, x1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = reach * np.hypot(x1 - x0, y1 - y0) / 2
    dx, dy = np.cos(angle), np.sin(angle)
    ox, oy = -dy * offset * (y1 - y0), dx * offset * (x1 - x0)
    return [(cx + ox - dx * half, cy + oy - dy * half), (cx + ox + dx * half, cy + oy + dy * half)]
