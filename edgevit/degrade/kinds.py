"""The kinds of damage a real capture of a digit suffers, each drawn by two unrelated generators.

Every kind has a `train` generator (what training images are degraded with) and a `held_out` one
(what the robustness report scores on): they differ in method, not only in parameters, so a model
that does well on the held-out ones has learned the phenomenon, not the generator. For example,
sensor noise is Gaussian in training and shot noise or film grain held out; a pen line across the
digit is straight in training and a zigzag or a curve held out.

A generator is `op(a, rng, u, scale) -> a`: `a` is an ink map (1 = stroke, before the capture is
rendered) for the INK stage and the rendered grey image for the others, `u` the severity on [0, 1],
`scale` the capture's pixels per MNIST pixel. Stages run in order: pen and page first, then the
optics (blur), the light, the sensor, the encoder.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from edgevit.data import warp_affine
from edgevit.degrade import ops

INK, OPTICS, LIGHT, SENSOR, ENCODER = range(5)
Op = Callable[[np.ndarray, np.random.Generator, float, float], np.ndarray]


def lerp(a: float, b: float, u: float) -> float:
    return a + (b - a) * u


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def _warp(a: np.ndarray, forward: np.ndarray, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """`a` moved by the forward 2x2 map `forward` about its centre, then by `shift` pixels."""
    inv = np.linalg.inv(forward)
    matrix = np.concatenate([inv, -(inv @ np.array(shift, np.float64)[:, None])], axis=1)
    return np.clip(warp_affine(a[None], matrix[None])[0], 0, 1)


def _rotation(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


# --- the pen and the page (INK) ------------------------------------------------------------------
def shift_train(a, rng, u, scale):
    d, t = lerp(2, 6, u) * scale, rng.uniform(0, 2 * np.pi)
    return _warp(a, np.eye(2), (d * np.cos(t), d * np.sin(t)))


def shift_held_out(a, rng, u, scale):
    d = lerp(3, 7, u) * scale
    axis = rng.integers(2)
    return _warp(a, np.eye(2), (d * _sign(rng), 0.0) if axis else (0.0, d * _sign(rng)))


def rotation_train(a, rng, u, scale):
    return _warp(a, _rotation(_sign(rng) * lerp(8, 40, u)))


def rotation_held_out(a, rng, u, scale):
    # about a point off the centre, as a page turned under a camera
    off = rng.uniform(-4, 4, 2) * scale
    r = _rotation(_sign(rng) * lerp(12, 45, u))
    return _warp(a, r, tuple(off - r @ off))


def shear_train(a, rng, u, scale):
    return _warp(a, np.array([[1.0, _sign(rng) * lerp(0.15, 0.6, u)], [0.0, 1.0]]))


def shear_held_out(a, rng, u, scale):
    k = _sign(rng) * lerp(0.2, 0.7, u)
    return _warp(a, np.array([[1.0, 0.0], [k, 1.0]]) if rng.random() < 0.5 else np.array([[1.0, k], [0.0, 1.0]]))


def scale_train(a, rng, u, scale):
    s = lerp(0.85, 0.45, u) if rng.random() < 0.6 else lerp(1.1, 1.35, u)
    return _warp(a, np.eye(2) * s)


def scale_held_out(a, rng, u, scale):
    # unequal in x and y: a digit squeezed into a narrow box, or photographed at a slant
    sx, sy = lerp(0.9, 0.5, u), lerp(1.05, 1.25, u)
    return _warp(a, np.diag([sx, sy] if rng.random() < 0.5 else [sy * 0.9, sx]))


def thin_train(a, rng, u, scale):
    k = lerp(0.4, 0.85, u)  # how far toward the eroded stroke: all the way erases MNIST's thinner strokes
    return (1 - k) * a + k * ops.min_filter(a, ops.odd(2 * scale))


def thin_held_out(a, rng, u, scale):
    t = lerp(0.45, 0.8, u)  # a pen that leaves only the middle of the stroke
    return np.clip((a - t) / (1 - t), 0, 1)


def bold_train(a, rng, u, scale):
    return ops.max_filter(a, ops.odd(lerp(2, 4.5, u) * scale))


def bold_held_out(a, rng, u, scale):
    return np.clip(ops.convolve(a, ops.gaussian_kernel(lerp(0.7, 1.6, u) * scale)) * 2.5, 0, 1)


def outline_train(a, rng, u, scale):
    k = ops.odd(lerp(2, 3, u) * scale)
    return np.clip(ops.max_filter(a, k) - ops.min_filter(a, k), 0, 1)


def outline_held_out(a, rng, u, scale):
    # an edge detector: gradient magnitude, thresholded to thin lines
    g = ops.convolve(a, ops.gaussian_kernel(0.5 * scale))
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    mag /= max(float(mag.max()), 1e-6)
    return (mag > lerp(0.2, 0.45, u)).astype(np.float32)


def ruled_train(a, rng, u, scale):
    h, w = a.shape
    gap, width = lerp(9, 5, u) * scale, lerp(0.6, 1.5, u) * scale
    tilt, y0 = np.tan(np.deg2rad(rng.uniform(-2, 2))), rng.uniform(0, gap)
    lines = [([(0.0, y), (w - 1.0, y + tilt * w)], width) for y in np.arange(y0, h, gap)]
    if rng.random() < 0.35:  # a margin line, or the page's other rules: crossing the first ones
        x0 = rng.uniform(0, gap)
        lines += [([(x, 0.0), (x - tilt * h, h - 1.0)], width) for x in np.arange(x0, w, gap * rng.uniform(1, 3))]
    return np.maximum(a, ops.draw(a.shape, lines) * lerp(0.35, 0.9, u))


def ruled_held_out(a, rng, u, scale):
    h, w = a.shape
    if rng.random() < 0.5:  # graph paper: faint lines both ways
        gap = lerp(8, 5, u) * scale
        lines = [([(x, 0.0), (x, h - 1.0)], 0.6 * scale) for x in np.arange(rng.uniform(0, gap), w, gap)]
        lines += [([(0.0, y), (w - 1.0, y)], 0.6 * scale) for y in np.arange(rng.uniform(0, gap), h, gap)]
        return np.maximum(a, ops.draw(a.shape, lines) * lerp(0.3, 0.7, u))
    # a dotted line at any angle through the digit
    ends = ops.line_through(ops.ink_box(a), rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3), 1.6)
    n = 1 + int(u > 0.5)
    lines = [(ends, lerp(1.2, 2.0, u) * scale)] * n
    return np.maximum(a, ops.draw(a.shape, lines, dots=lerp(3.0, 2.2, u) * scale))


def strike_train(a, rng, u, scale):
    box = ops.ink_box(a)
    width = lerp(1, 2.5, u) * scale
    ends = ops.line_through(box, rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3), rng.uniform(0.8, 1.5))
    if rng.random() < 0.4:  # a stray pen line: bent once or twice on its way across
        (x0, y0), (x1, y1) = ends
        t = np.sort(rng.uniform(0.2, 0.8, int(rng.integers(1, 3))))
        bend = rng.normal(0, lerp(0.1, 0.3, u), len(t))  # across the line, as a share of its length
        mids = [(x0 + (x1 - x0) * k - (y1 - y0) * b, y0 + (y1 - y0) * k + (x1 - x0) * b) for k, b in zip(t, bend)]
        ends = [ends[0], *mids, ends[1]]
    lines = [(ends, width)]
    if rng.random() < 0.3 * u:
        lines.append((ops.line_through(box, rng.uniform(0, np.pi), 0.0, 1.2), width))
    return np.maximum(a, ops.draw(a.shape, lines))


def strike_held_out(a, rng, u, scale):
    y0, x0, y1, x1 = ops.ink_box(a)
    k = int(rng.integers(4, 9))
    width = lerp(1.0, 2.5, u) * scale
    if rng.random() < 0.5:  # a zigzag across
        xs = np.linspace(x0 - 3 * scale, x1 + 3 * scale, k)
        ys = (y0 + y1) / 2 + rng.uniform(-1, 1, k) * lerp(0.2, 0.45, u) * (y1 - y0)
        return np.maximum(a, ops.draw(a.shape, [(list(zip(xs, ys)), width)]))
    # a curve: a quadratic Bezier from one side to the other
    p0 = np.array([x0 - 2 * scale, rng.uniform(y0, y1)])
    p2 = np.array([x1 + 2 * scale, rng.uniform(y0, y1)])
    p1 = np.array([(x0 + x1) / 2, rng.uniform(y0 - 0.5 * (y1 - y0), y1 + 0.5 * (y1 - y0))])
    t = np.linspace(0, 1, 24)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    return np.maximum(a, ops.draw(a.shape, [([tuple(p) for p in curve], width)]))


def blots_train(a, rng, u, scale):
    y0, x0, y1, x1 = ops.ink_box(a)
    n = round(lerp(1, 4, u))
    centres = np.stack([rng.uniform(x0 - 2 * scale, x1 + 2 * scale, n), rng.uniform(y0 - 2 * scale, y1 + 2 * scale, n)], 1)
    return np.maximum(a, ops.blobs(a.shape, centres, rng.uniform(1.2, lerp(1.5, 3.5, u), n) * scale, rng))


def blots_held_out(a, rng, u, scale):
    # spatter: many small drops over the whole page, some of ink, some of white-out
    h, w = a.shape
    n = round(lerp(6, 22, u))
    centres = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1)
    drops = ops.blobs(a.shape, centres, rng.uniform(0.4, lerp(0.8, 1.6, u), n) * scale, rng)
    white = ops.blobs(a.shape, centres[: n // 3] + rng.normal(0, 3 * scale, (n // 3, 2)), np.full(n // 3, 0.9 * scale), rng)
    return np.maximum(a * (1 - white), drops)


def erase_train(a, rng, u, scale):
    y0, x0, y1, x1 = ops.ink_box(a)
    area = lerp(0.1, 0.3, u) * (y1 - y0) * (x1 - x0)
    aspect = rng.uniform(0.5, 2.0)
    bh, bw = np.sqrt(area / aspect), np.sqrt(area * aspect)
    top, left = int(rng.uniform(y0, max(y0, y1 - bh))), int(rng.uniform(x0, max(x0, x1 - bw)))
    out = a.copy()
    out[top : top + int(np.ceil(bh)), left : left + int(np.ceil(bw))] *= rng.uniform(0.0, 0.4)
    return out


def erase_held_out(a, rng, u, scale):
    # an eraser stroke across part of the digit
    ends = ops.line_through(ops.ink_box(a), rng.uniform(0, np.pi), rng.uniform(-0.35, 0.35), rng.uniform(0.4, 0.8))
    mask = ops.draw(a.shape, [(ends, lerp(2.0, 4.0, u) * scale)])
    return a * (1 - mask * rng.uniform(0.7, 1.0))


def lowres_train(a, rng, u, scale):
    # a digit a few pixels tall in a big picture, enlarged again
    h, w = a.shape
    side = round(lerp(14, 8, u))
    small = np.asarray(Image.fromarray(a, "F").resize((side, side), Image.Resampling.BOX), np.float32)
    resample = Image.Resampling.NEAREST if rng.random() < 0.5 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(small, "F").resize((w, h), resample), np.float32)


def lowres_held_out(a, rng, u, scale):
    # as the UCI optical digits were made: a bitmap counted in 4x4 blocks
    h, w = a.shape
    side = max(5, round(lerp(12, 7, u)))
    bitmap = np.asarray(Image.fromarray(a, "F").resize((4 * side, 4 * side), Image.Resampling.BILINEAR)) > 0.5
    counts = bitmap.reshape(side, 4, side, 4).mean((1, 3)).astype(np.float32)
    return np.asarray(Image.fromarray(counts, "F").resize((w, h), Image.Resampling.NEAREST), np.float32)


# --- the optics ------------------------------------------------------------------------------------
def defocus_train(a, rng, u, scale):
    blurred = ops.convolve(a, ops.gaussian_kernel(lerp(0.6, 1.5, u) * scale))
    if rng.random() < 0.4:  # through a wavy pane: pixels displaced by a smooth random field
        h, w = a.shape
        dy, dx = (
            ops.resize(rng.normal(0, 1, (6, 6)).astype(np.float32), a.shape) * lerp(0.6, 1.6, u) * scale for _ in range(2)
        )
        ys = np.clip(np.rint(np.arange(h)[:, None] + dy), 0, h - 1).astype(int)
        xs = np.clip(np.rint(np.arange(w)[None, :] + dx), 0, w - 1).astype(int)
        blurred = blurred[ys, xs]
    return blurred


def defocus_held_out(a, rng, u, scale):
    if rng.random() < 0.5:
        return ops.convolve(a, ops.disk_kernel(lerp(1.0, 2.2, u) * scale))
    # frosted glass: every pixel swapped with a random neighbour, a few times over
    out = ops.convolve(a, ops.gaussian_kernel(0.4 * scale))
    h, w = a.shape
    r = max(1, round(lerp(1, 2, u) * scale))
    for _ in range(2):
        ys = np.clip(np.arange(h)[:, None] + rng.integers(-r, r + 1, (h, w)), 0, h - 1)
        xs = np.clip(np.arange(w)[None, :] + rng.integers(-r, r + 1, (h, w)), 0, w - 1)
        out = out[ys, xs]
    return out


def motion_train(a, rng, u, scale):
    length, t = lerp(2, 6, u) * scale, rng.uniform(0, np.pi)
    ends = np.array([[0.0, 0.0], [length * np.cos(t), length * np.sin(t)]])
    return ops.convolve(a, ops.path_kernel(ends))


def motion_held_out(a, rng, u, scale):
    # a shaking hand: a random walk, not a straight line
    steps = rng.normal(0, 1, (8, 2)) + rng.normal(0, 1, 2)
    path = np.cumsum(steps / np.hypot(*steps.T)[:, None], 0) * lerp(2.5, 7, u) * scale / 8
    return ops.convolve(a, ops.path_kernel(np.vstack([[0.0, 0.0], path])))


# --- the light ---------------------------------------------------------------------------------
def contrast_train(a, rng, u, scale):
    m, c = rng.uniform(0.3, 0.7), lerp(0.5, 0.15, u)
    return m + (a - m) * c


def contrast_held_out(a, rng, u, scale):
    m, c = rng.uniform(0.2, 0.8), lerp(0.45, 0.13, u)
    return np.clip(m + (a ** rng.uniform(0.6, 1.6) - m) * c, 0, 1)


def light_train(a, rng, u, scale):
    h, w = a.shape
    if rng.random() < 0.5:  # light from one side
        t = rng.uniform(0, 2 * np.pi)
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        ramp = (np.cos(t) * x + np.sin(t) * y) - min(0.0, np.cos(t)) - min(0.0, np.sin(t))
        return a * (1 - lerp(0.3, 0.75, u) * ramp / max(float(ramp.max()), 1e-6))
    # patchy light: a coarse random field, as under leaves or a lamp's uneven beam
    field = ops.resize(rng.random((3, 3)).astype(np.float32), a.shape)
    return a * (1 - lerp(0.3, 0.8, u) * (field - field.min()) / max(float(field.max() - field.min()), 1e-6))


def light_held_out(a, rng, u, scale):
    h, w = a.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # a spotlight: bright in one place, falling off around it
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        fall = np.hypot(y - cy, x - cx) / np.hypot(h, w)
        return a * np.clip(1 - lerp(0.5, 1.2, u) * fall, 0.15, 1)
    # a hard shadow over part of the page
    t = rng.uniform(0, np.pi)
    side = (np.cos(t) * (x - w / 2) + np.sin(t) * (y - h / 2)) > rng.uniform(-0.2, 0.2) * w
    return a * np.where(side, lerp(0.75, 0.4, u), 1.0)


def fog_train(a, rng, u, scale):
    field = ops.resize(rng.random((4, 4)).astype(np.float32), a.shape)
    f = lerp(0.2, 0.6, u) * field
    return a * (1 - f) + f * rng.uniform(0.5, 0.9)


def fog_held_out(a, rng, u, scale):
    clouds = ops.fractal(a.shape, rng, octaves=5, decay=0.6)
    return np.clip((a + lerp(0.4, 1.3, u) * clouds) / (1 + lerp(0.4, 1.3, u) * 0.8), 0, 1)


def invert_train(a, rng, u, scale):
    h, w = a.shape
    pick = rng.random()
    if pick < 0.35:  # a band across, full height or full width
        out, size = a.copy(), int(lerp(0.2, 0.45, u) * (w if pick < 0.2 else h))
        start = int(rng.integers(0, (w if pick < 0.2 else h) - size + 1))
        region = (slice(None), slice(start, start + size)) if pick < 0.2 else (slice(start, start + size), slice(None))
        out[region] = 1 - out[region]
        return out
    if pick < 0.6:  # everything on one side of a line
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        t = rng.uniform(0, 2 * np.pi)
        return np.where(np.cos(t) * (x - w / 2) + np.sin(t) * (y - h / 2) > lerp(0.35, 0.05, u) * w, 1 - a, a)
    # a quadrilateral of any shape: a label, a sticker, a reflection
    centre = rng.uniform(0.25, 0.75, 2) * (w, h)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 4))
    radii = rng.uniform(0.6, 1.3, 4) * lerp(0.2, 0.35, u) * max(h, w)
    corners = [tuple(centre + r * np.array([np.cos(t), np.sin(t)])) for t, r in zip(angles, radii)]
    img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(img).polygon(corners, fill=255)
    return np.where(np.asarray(img) > 127, 1 - a, a)


def invert_held_out(a, rng, u, scale):
    h, w = a.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:  # a diagonal band
        t = rng.uniform(np.pi / 6, np.pi / 3) * _sign(rng)
        d = np.cos(t) * (x - w / 2) + np.sin(t) * (y - h / 2) - rng.uniform(-0.2, 0.2) * w
        band = np.abs(d) < lerp(0.12, 0.25, u) * w
    else:  # a rectangle anywhere
        bh, bw = int(lerp(0.3, 0.55, u) * h), int(lerp(0.3, 0.55, u) * w)
        top, left = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
        band = (y >= top) & (y < top + bh) & (x >= left) & (x < left + bw)
    return np.where(band, 1 - a, a)


# --- the sensor --------------------------------------------------------------------------------
def noise_train(a, rng, u, scale):
    return np.clip(a + rng.normal(0, lerp(0.06, 0.35, u), a.shape), 0, 1)


def noise_held_out(a, rng, u, scale):
    if rng.random() < 0.5:  # shot noise: photon counts, worst in the dark
        photons = lerp(40, 4, u)
        return np.clip(rng.poisson(np.clip(a, 0, 1) * photons + 1) / photons - 1 / photons, 0, 1)
    grain = ops.convolve(rng.normal(0, 1, a.shape).astype(np.float32), ops.gaussian_kernel(0.7 * scale))
    return np.clip(a + grain / max(float(grain.std()), 1e-6) * lerp(0.08, 0.3, u), 0, 1)


def impulse_train(a, rng, u, scale):
    hit = rng.random(a.shape) < lerp(0.03, 0.3, u)
    return np.where(hit, (rng.random(a.shape) < 0.5).astype(np.float32), a)


def impulse_held_out(a, rng, u, scale):
    amount, salt = lerp(0.05, 0.35, u), rng.uniform(0.3, 0.7)
    hit = rng.random(a.shape) < amount / 1.5
    hit |= np.roll(hit & (rng.random(a.shape) < 0.5), 1, axis=int(rng.integers(2)))  # some in pairs
    value = np.where(rng.random(a.shape) < salt, rng.uniform(0.7, 1.0, a.shape), rng.uniform(0.0, 0.3, a.shape))
    return np.where(hit, value, a).astype(np.float32)


# --- the encoder -------------------------------------------------------------------------------
def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(a * 255), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(buf), np.float32) / 255.0


def jpeg_train(a, rng, u, scale):
    return _jpeg(a, round(lerp(40, 6, u) + rng.uniform(-2, 2)))


def jpeg_held_out(a, rng, u, scale):
    # a low-resolution camera: fewer pixels, then a harder compression
    h, w = a.shape
    small = ops.resize(a, (max(8, round(h * lerp(0.8, 0.6, u))), max(8, round(w * lerp(0.8, 0.6, u)))))
    return ops.resize(_jpeg(small, round(lerp(30, 4, u))), a.shape)


@dataclass(frozen=True)
class Kind:
    name: str
    what: str  # for the report
    stage: int
    train: Op
    held_out: Op


KINDS = (
    Kind("noise", "sensor noise", SENSOR, noise_train, noise_held_out),
    Kind("salt-pepper", "salt-and-pepper (impulse) noise", SENSOR, impulse_train, impulse_held_out),
    Kind("jpeg", "JPEG compression", ENCODER, jpeg_train, jpeg_held_out),
    Kind("motion-blur", "camera motion", OPTICS, motion_train, motion_held_out),
    Kind("defocus", "out of focus, frosted glass", OPTICS, defocus_train, defocus_held_out),
    Kind("low-contrast", "faint ink, grey paper", LIGHT, contrast_train, contrast_held_out),
    Kind("uneven-light", "gradients, spotlights, shadows", LIGHT, light_train, light_held_out),
    Kind("fog", "haze over the page", LIGHT, fog_train, fog_held_out),
    Kind("ruled-line", "ruled or squared paper, a dotted line", INK, ruled_train, ruled_held_out),
    Kind("strike", "a line across the digit", INK, strike_train, strike_held_out),
    Kind("ink-blots", "blots and spatter", INK, blots_train, blots_held_out),
    Kind("erasure", "part of the digit erased or covered", INK, erase_train, erase_held_out),
    Kind("thin-pen", "a thin pen", INK, thin_train, thin_held_out),
    Kind("bold-pen", "a bold marker", INK, bold_train, bold_held_out),
    Kind("outline", "outlines only", INK, outline_train, outline_held_out),
    Kind("inverted", "a region in inverted colours", LIGHT, invert_train, invert_held_out),
    Kind("shift", "off centre", INK, shift_train, shift_held_out),
    Kind("rotation", "rotated", INK, rotation_train, rotation_held_out),
    Kind("shear", "slanted", INK, shear_train, shear_held_out),
    Kind("scale", "smaller or larger", INK, scale_train, scale_held_out),
    Kind("low-res", "a few pixels tall, enlarged", INK, lowres_train, lowres_held_out),
)
BY_NAME = {k.name: k for k in KINDS}
