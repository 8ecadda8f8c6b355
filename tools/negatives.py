"""Non-digit images, as a user would send them, for training and testing the "not a digit" answer.

Every generator is a pure function of (kind, rng, split): it draws a real image (PIL) on a canvas the
way edgevit.writers does (paper or dark background, ink colours, PNG or JPEG, a transparent
280x280 drawing-pad canvas, a scanned page) and returns the encoded file bytes. The model sees it only
after `edgevit.preprocess.preprocess(bytes)`, exactly as a user's file; when preprocessing raises
"no digit found" the image is rejected before the model (counted, and reported separately).

Kinds (KINDS):
- font: letters, symbols and short "words" of them in TrueType/OpenType fonts, sizes 24-160 px;
- handwritten: jittered pen strokes along letter/symbol skeletons (STROKES), drawn with a round pen;
- scribble: random strokes, zigzags, loops and scratch-outs;
- noise: white, salt-and-pepper and smooth (blob) noise;
- texture: stripes, checkerboards, grids, dot lattices (full frame or a patch on paper);
- shape: filled discs/ellipses/rectangles/triangles/stars/polygons, outlined triangles and stars.

Never drawn, because a human could read them as a digit (CONFUSABLE): O o Q D 0-like rings
(circles, ellipses, outlined squares or polygons, concentric rings, spirals, degree sign),
I l i j J | ! / \\ ( ) [ ] 1-like strokes,
Z z 2-like, S s $ § 5-like, B & 8-like, b G 6-like, g q 9-like, T t 7-like, r f 1-with-flag-like,
L C c U u d p ? { } and the digits themselves.

Splits: SPLITS["train"] and SPLITS["test"] differ in fonts (train: DejaVu + GNU FreeFont; test:
Liberation + URW base35 incl. the script font Z003), in stroke parameters (test strokes are more
jittered, more slanted, with other pen widths; scribbles are Bezier curves instead of random walks),
in texture periods, shape vertex counts and noise scales, and are drawn from disjoint seed streams
(`bank(split, ...)` seeds every image with (SPLIT_SEED[split], seed, i)).
Fonts needed: Debian packages fonts-dejavu-core fonts-dejavu-extra fonts-freefont-ttf (train),
fonts-liberation fonts-urw-base35 (test).

`bank(split, n, seed)` draws and preprocesses them; tools/banks.py writes the shipped banks.
"""

from __future__ import annotations

import glob
import io
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edgevit.data import NEGATIVE_KINDS as KINDS  # the order the test bank's kind labels index
from edgevit.errors import EdgeViTError
from edgevit.preprocess import preprocess

# characters drawn in fonts (both splits); everything a human could read as a digit is left out
UPPER = "AEFHKMNPRVWXY"
LOWER = "aehkmnvwxy"
SYMBOLS = (
    "#%*+=@<>~^\u00d7\u00f7\u2192\u2190\u2191\u2193\u2605\u2665\u0394\u039b\u03a0"
    "\u03a3\u03a8\u03bb\u03bc\u03c0\u03c8\u03c9\u0416\u0428\u042f\u0418\u041b\u0436\u0448\u044f"
)
CONFUSABLE = "0123456789OoQDIlijJ|!/\\()[]ZzSs$\u00a7B&bGgqTtrfLCcUudp?{}\u00b0"
FONT_CHARS = UPPER + LOWER + SYMBOLS
assert not set(FONT_CHARS) & set(CONFUSABLE)


def _ellipse_arc(cx, cy, rx, ry, a0, a1, n=14):
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in np.linspace(math.radians(a0), math.radians(a1), n)]


# Skeletons in a unit box (x right, y down; lowercase x-height from 0.4, descenders past 1): polylines.
STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.75, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.48), (0.75, 0.48)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.55)], [(0.3, 0.4), (1, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "R": [[(0, 1), (0, 0), (0.65, 0), (0.9, 0.12), (0.9, 0.36), (0.65, 0.5), (0, 0.5)], [(0.4, 0.5), (1, 1)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.4), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "a": [_ellipse_arc(0.45, 0.72, 0.4, 0.28, -20, 340), [(0.85, 0.45), (0.85, 1)]],
    "e": [[(0.08, 0.7), (0.92, 0.7), *_ellipse_arc(0.5, 0.7, 0.42, 0.3, 0, -300)]],
    "h": [[(0, 0), (0, 1)], [(0, 0.62), *_ellipse_arc(0.45, 0.65, 0.45, 0.22, 200, 360), (0.9, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.8, 0.4), (0.05, 0.75), (0.85, 1)]],
    "m": [
        [(0, 1), (0, 0.4)],
        [(0, 0.6), (0.15, 0.42), (0.35, 0.42), (0.5, 0.6), (0.5, 1)],
        [(0.5, 0.6), (0.65, 0.42), (0.85, 0.42), (1, 0.6), (1, 1)],
    ],
    "n": [[(0, 1), (0, 0.4)], [(0, 0.6), (0.25, 0.4), (0.65, 0.42), (0.9, 0.6), (0.9, 1)]],
    "v": [[(0, 0.4), (0.5, 1), (1, 0.4)]],
    "w": [[(0, 0.4), (0.25, 1), (0.5, 0.55), (0.75, 1), (1, 0.4)]],
    "x": [[(0, 0.4), (1, 1)], [(1, 0.4), (0, 1)]],
    "y": [[(0, 0.4), (0.5, 0.9)], [(1, 0.4), (0.3, 1.4)]],
    "#": [[(0.35, 0), (0.25, 1)], [(0.75, 0), (0.65, 1)], [(0, 0.33), (1, 0.33)], [(0, 0.67), (1, 0.67)]],
    "*": [[(0.5, 0), (0.5, 1)], [(0.07, 0.25), (0.93, 0.75)], [(0.93, 0.25), (0.07, 0.75)]],
    "+": [[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]],
    "=": [[(0, 0.35), (1, 0.35)], [(0, 0.65), (1, 0.65)]],
    "arrow": [[(0, 0.5), (1, 0.5)], [(0.65, 0.2), (1, 0.5), (0.65, 0.8)]],
    "check": [[(0, 0.6), (0.35, 1), (1, 0)]],
    "star": [[(0.5, 0), (0.79, 0.9), (0.02, 0.35), (0.98, 0.35), (0.21, 0.9), (0.5, 0)]],
    "house": [[(0, 1), (0, 0.45), (0.5, 0), (1, 0.45), (1, 1), (0, 1)], [(0, 0.45), (1, 0.45)]],
    "smiley": [
        _ellipse_arc(0.5, 0.5, 0.5, 0.5, 0, 360, 30),
        _ellipse_arc(0.5, 0.55, 0.28, 0.22, 20, 160),
        [(0.33, 0.32), (0.35, 0.4)],
        [(0.65, 0.32), (0.67, 0.4)],
    ],
}


@dataclass(frozen=True)
class SplitParams:
    font_dirs: tuple[str, ...]
    jitter: tuple[float, float]  # std of per-vertex jitter, in units of the letter box
    wobble: tuple[float, float]  # amplitude of slow wobble along a stroke
    slant: tuple[float, float]  # horizontal shear
    rotate: float  # degrees, +-
    aspect: tuple[float, float]  # width / height of the letter box
    pen: tuple[float, float]  # pen width / letter height
    scribble: str  # "walk" (random-walk polylines) or "bezier" (cubic Bezier chains)
    stripe_period: tuple[tuple[float, float], ...]  # texture period / canvas size: ranges, one drawn at random
    star_points: tuple[int, ...]
    polygon_vertices: tuple[int, ...]
    noise_scale: tuple[int, int]  # smooth-noise grid cells across the image


SPLITS = {
    "train": SplitParams(
        font_dirs=("dejavu", "freefont"),
        jitter=(0.0, 0.035),
        wobble=(0.0, 0.02),
        slant=(-0.3, 0.3),
        rotate=12,
        aspect=(0.6, 1.1),
        pen=(0.06, 0.14),
        scribble="walk",
        stripe_period=((0.05, 0.12), (0.22, 0.3)),
        star_points=(5, 6),
        polygon_vertices=(3, 4, 5),
        noise_scale=(3, 8),
    ),
    "test": SplitParams(
        font_dirs=("liberation", "urw-base35"),
        jitter=(0.035, 0.06),
        wobble=(0.02, 0.04),
        slant=(-0.5, 0.5),
        rotate=20,
        aspect=(0.5, 1.3),
        pen=(0.04, 0.18),
        scribble="bezier",
        stripe_period=((0.12, 0.22),),
        star_points=(4, 7, 8),
        polygon_vertices=(6, 7),
        noise_scale=(9, 14),
    ),
}
SPLIT_SEED = {"train": 11, "test": 22}
FONT_GLOBS = ("/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.otf")
NOT_TEXT_FONTS = ("symbol", "d050000l", "math")  # pictures, not letters


def fonts(split: str) -> list[str]:
    found = sorted({p for g in FONT_GLOBS for p in glob.glob(g, recursive=True)})
    dirs = SPLITS[split].font_dirs
    out = [p for p in found if any(f"/{d}/" in p.lower() for d in dirs) and not any(s in p.lower() for s in NOT_TEXT_FONTS)]
    if not out:
        raise RuntimeError(f"no fonts for split {split} ({dirs}): apt-get install the packages negatives.py names")
    return out


_FONT_CACHE: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}


def _font(path: str, size: int):
    key = (path, size)
    if key not in _FONT_CACHE:
        _FONT_CACHE[key] = ImageFont.truetype(path, size)
    return _FONT_CACHE[key]


def _has_glyph(font, ch: str) -> bool:
    """False when the font draws its 'missing glyph' box (or nothing) for ch."""
    try:
        mask = font.getmask(ch)
        missing = font.getmask("\uffff")
    except Exception:
        return False
    if mask.size[0] == 0 or mask.size[1] == 0:
        return False
    return not (mask.size == missing.size and bytes(mask) == bytes(missing))


# --- presentation: an ink mask onto a canvas like a user's file -------------------------------------
def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def present(mask: Image.Image, rng: np.random.Generator, full_frame: bool = False) -> bytes:
    """Ink mask ('L', 255 = ink) -> encoded image: paper (dark ink), dark background (light ink),
    transparent drawing-pad canvas, or a scanned page. full_frame: the mask is the whole picture."""
    style = rng.choice(["paper", "dark", "canvas", "scan"], p=[0.4, 0.15, 0.25, 0.2])
    w, h = mask.size
    if not full_frame:  # a margin around the drawing, as on a page or pad
        fw, fh = int(w * rng.uniform(1.1, 2.2)), int(h * rng.uniform(1.1, 2.0))
        frame = Image.new("L", (fw, fh), 0)
        frame.paste(mask, (int(rng.integers(0, fw - w + 1)), int(rng.integers(0, fh - h + 1))))
        mask = frame
    if style == "canvas":
        mask = mask.resize((280, 280), Image.Resampling.BILINEAR) if not full_frame else mask
        ink = (0, 0, 0) if rng.random() < 0.7 else (255, 255, 255)
        if rng.random() < 0.2:
            ink = tuple(int(v) for v in rng.integers(0, 255, 3))
        rgba = np.zeros((mask.size[1], mask.size[0], 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = ink, np.asarray(mask)
        return _encode(Image.fromarray(rgba, "RGBA"), "PNG")
    m = np.asarray(mask, np.float32) / 255.0
    if style in ("paper", "scan"):
        paper = rng.uniform(170, 255, 3) if rng.random() < 0.3 else np.full(3, rng.uniform(190, 255))
        ink = rng.uniform(0, 90, 3) if rng.random() < 0.3 else np.full(3, rng.uniform(0, 80))
    else:
        paper, ink = np.full(3, rng.uniform(0, 60)), np.full(3, rng.uniform(180, 255))
    img = paper[None, None] * (1 - m[..., None]) + ink[None, None] * m[..., None]
    if style == "scan":
        hh, ww = m.shape
        ys, xs = np.mgrid[0:hh, 0:ww]
        img = img * (1 + rng.uniform(-0.15, 0.15) * (xs / ww - 0.5) + rng.uniform(-0.15, 0.15) * (ys / hh - 0.5))[..., None]
        img = img + rng.normal(0, rng.uniform(2, 10), img.shape[:2])[..., None]
        scale = rng.uniform(0.15, 0.6)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        pil = pil.resize((max(8, int(ww * scale)), max(8, int(hh * scale))), Image.Resampling.BILINEAR)
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8))).convert("L")
        return _encode(pil, "JPEG", int(rng.integers(30, 85)))
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        return _encode(pil, "JPEG", int(rng.integers(50, 95)))
    return _encode(pil.convert("L") if rng.random() < 0.5 else pil, "PNG")


# --- the kinds ------------------------------------------------------------------------------------
def _text(rng, sp: SplitParams, split: str) -> Image.Image:
    paths = fonts(split)
    for _ in range(20):
        font = _font(paths[int(rng.integers(len(paths)))], int(rng.integers(24, 160)))
        n = 1 if rng.random() < 0.7 else int(rng.integers(2, 5))
        chars = [FONT_CHARS[int(rng.integers(len(FONT_CHARS)))] for _ in range(n)]
        if all(_has_glyph(font, c) for c in chars):
            break
    s = "".join(chars)
    box = font.getbbox(s)
    w, h = max(1, box[2] - box[0]), max(1, box[3] - box[1])
    img = Image.new("L", (w + 8, h + 8), 0)
    ImageDraw.Draw(img).text((4 - box[0], 4 - box[1]), s, fill=255, font=font)
    return img


def _resample(poly, step=0.02):
    pts = np.asarray(poly, np.float64)
    out = [pts[0]]
    for a, b in itertools.pairwise(pts):
        n = max(1, int(np.linalg.norm(b - a) / step))
        out += [a + (b - a) * (i / n) for i in range(1, n + 1)]
    return np.array(out)


def _smooth_noise(rng, n, amp):
    """n values of a slowly varying random curve with std about amp."""
    k = max(2, n // 12 + 2)
    knots = rng.normal(0, amp, k)
    return np.interp(np.linspace(0, k - 1, n), np.arange(k), knots)


def _draw_strokes(strokes, rng, sp: SplitParams, size=None) -> Image.Image:
    """Skeleton polylines (unit box) -> jittered, slanted, rotated round-pen drawing as an ink mask."""
    size = size or int(rng.integers(120, 320))
    aspect = rng.uniform(*sp.aspect)
    slant = rng.uniform(*sp.slant)
    rot = math.radians(rng.uniform(-sp.rotate, sp.rotate))
    jit = rng.uniform(*sp.jitter)
    wob = rng.uniform(*sp.wobble)
    cos, sin = math.cos(rot), math.sin(rot)
    polys = []
    for poly in strokes:
        v = np.asarray(poly, np.float64) + rng.normal(0, jit, (len(poly), 2))
        pts = _resample(v)
        pts[:, 0] += _smooth_noise(rng, len(pts), wob)
        pts[:, 1] += _smooth_noise(rng, len(pts), wob)
        x, y = pts[:, 0] * aspect, pts[:, 1]
        x = x - slant * (y - 0.5)
        polys.append(np.stack([cos * x - sin * y, sin * x + cos * y], 1))
    allp = np.concatenate(polys)
    lo, hi = allp.min(0), allp.max(0)
    span = max(hi - lo)
    pen = max(2, int(rng.uniform(*sp.pen) * size))
    scale = (size - 2 * pen) / max(span, 1e-6)
    w, h = (int((hi - lo)[0] * scale) + 2 * pen + 2, int((hi - lo)[1] * scale) + 2 * pen + 2)
    img = Image.new("L", (max(w, 4), max(h, 4)), 0)
    d = ImageDraw.Draw(img)
    r = pen / 2
    for p in polys:
        q = [(float((x - lo[0]) * scale + pen), float((y - lo[1]) * scale + pen)) for x, y in p]
        d.line(q, fill=255, width=pen, joint="curve")
        for x, y in (q[0], q[-1]):
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(pen * 0.15))
    return img


def _handwritten(rng, sp: SplitParams, split: str) -> Image.Image:
    keys = list(STROKES)
    if rng.random() < 0.8:
        return _draw_strokes(STROKES[keys[int(rng.integers(len(keys)))]], rng, sp)
    # a short word: 2-3 letters side by side
    letters = [k for k in keys if len(k) == 1 and k.isalpha()]
    strokes, x = [], 0.0
    for _ in range(int(rng.integers(2, 4))):
        for poly in STROKES[letters[int(rng.integers(len(letters)))]]:
            strokes.append([(px * 0.8 + x, py) for px, py in poly])
        x += 1.05
    return _draw_strokes(strokes, rng, sp, size=int(rng.integers(160, 360)))


def _scribble(rng, sp: SplitParams, split: str) -> Image.Image:
    style = rng.choice(["free", "zigzag", "scratch"], p=[0.6, 0.2, 0.2])
    strokes = []
    if style == "zigzag":  # at least 4 turns: no Z, no 2
        n = int(rng.integers(5, 10))
        ys = np.where(np.arange(n) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.08, n)
        strokes.append(list(zip(np.linspace(0, 1, n) + rng.normal(0, 0.03, n), ys)))
    elif style == "scratch":  # a scratched-out patch: dense back and forth
        n = int(rng.integers(8, 20))
        xs = np.where(np.arange(n) % 2 == 0, 0.0, 1.0) + rng.normal(0, 0.06, n)
        strokes.append(list(zip(xs, np.linspace(0, 1, n) + rng.normal(0, 0.02, n))))
    else:
        for _ in range(int(rng.integers(2, 5))):
            if sp.scribble == "walk":
                n = int(rng.integers(6, 12))  # enough turns not to be read as a digit
                pts = np.cumsum(rng.normal(0, 0.35, (n, 2)), axis=0)
                strokes.append([tuple(p) for p in pts])
            else:  # chains of cubic Bezier curves
                ctrl = rng.uniform(0, 1, (3 * int(rng.integers(1, 4)) + 1, 2))
                pts = []
                for i in range(0, len(ctrl) - 1, 3):
                    p0, p1, p2, p3 = ctrl[i : i + 4]
                    t = np.linspace(0, 1, 20)[:, None]
                    pts += list((1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3)
                strokes.append([tuple(p) for p in pts])
    return _draw_strokes(strokes, rng, sp)


def _noise(rng, sp: SplitParams, split: str) -> tuple[Image.Image, bool]:
    w, h = int(rng.integers(40, 300)), int(rng.integers(40, 300))
    style = rng.choice(["white", "saltpepper", "smooth"])
    if style == "white":
        a = rng.uniform(0, 1, (h, w)) ** rng.uniform(0.5, 3)
    elif style == "saltpepper":
        a = (rng.random((h, w)) < rng.uniform(0.01, 0.3)).astype(np.float64)
    else:
        cells = int(rng.integers(*sp.noise_scale))
        small = rng.uniform(0, 1, (cells, cells))
        a = (
            np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC), np.float64)
            / 255
        )
        if rng.random() < 0.5:
            a = (a > rng.uniform(0.4, 0.7)).astype(np.float64)  # blobs
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)), True


def _texture(rng, sp: SplitParams, split: str) -> tuple[Image.Image, bool]:
    size = int(rng.integers(60, 300))
    w, h = size, int(size * rng.uniform(0.6, 1.6))
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    ranges = sp.stripe_period
    lo_hi = ranges[0] if len(ranges) == 1 else ranges[int(rng.integers(len(ranges)))]
    period = rng.uniform(*lo_hi) * size
    ang = rng.uniform(0, math.pi)
    u = xs * math.cos(ang) + ys * math.sin(ang)
    v = -xs * math.sin(ang) + ys * math.cos(ang)
    duty = rng.uniform(0.25, 0.6)
    style = rng.choice(["stripes", "checker", "grid", "dots"])
    if style == "stripes":
        a = ((u / period) % 1) < duty
    elif style == "checker":
        a = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    elif style == "grid":
        a = (((u / period) % 1) < duty / 2) | (((v / period) % 1) < duty / 2)
    else:  # filled dots on a lattice
        a = (((u / period) % 1 - 0.5) ** 2 + ((v / period) % 1 - 0.5) ** 2) < (duty / 2) ** 2
    img = Image.fromarray((a * 255).astype(np.uint8))
    return img, bool(rng.random() < 0.5)  # full frame, or a textured patch on paper


def _star(cx, cy, r_out, r_in, k, rot):
    pts = []
    for i in range(2 * k):
        r = r_out if i % 2 == 0 else r_in
        a = rot + math.pi * i / k
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _shape(rng, sp: SplitParams, split: str) -> Image.Image:
    size = int(rng.integers(80, 300))
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.25, 0.75, 2) * size
        r = rng.uniform(0.15, 0.45) * size
        shape = rng.choice(["disc", "rect", "triangle", "star", "polygon", "outline_triangle", "outline_star"])
        rot = rng.uniform(0, 2 * math.pi)
        if shape == "disc":
            rx, ry = r, r * rng.uniform(0.55, 1.0)  # no thin slivers: they read as a 1
            d.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
        elif shape == "rect":
            hw, hh = r, r * rng.uniform(0.5, 1.0)
            c, s_ = math.cos(rot), math.sin(rot)
            d.polygon(
                [(cx + x * c - y * s_, cy + x * s_ + y * c) for x, y in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))], fill=255
            )
        elif shape in ("triangle", "outline_triangle"):
            ang = rot + np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.5, 0.5, 3)  # no slivers
            pts = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in ang]
            if shape == "triangle":
                d.polygon(pts, fill=255)
            else:
                d.line([*pts, pts[0]], fill=255, width=max(2, int(size * rng.uniform(0.04, 0.1))), joint="curve")
        elif shape in ("star", "outline_star"):
            k = int(rng.choice(sp.star_points))
            pts = _star(cx, cy, r, r * rng.uniform(0.35, 0.55), k, rot)
            if shape == "star":
                d.polygon(pts, fill=255)
            else:
                d.line([*pts, pts[0]], fill=255, width=max(2, int(size * rng.uniform(0.03, 0.07))), joint="curve")
        else:  # filled random polygon
            k = int(rng.choice(sp.polygon_vertices))
            ang = rot + 2 * math.pi * np.arange(k) / k + rng.uniform(-0.4, 0.4, k) * (2 * math.pi / k)
            rr = r * rng.uniform(0.6, 1.0, k)
            d.polygon([(cx + a * math.cos(b), cy + a * math.sin(b)) for a, b in zip(rr, ang)], fill=255)
    return img


_MAKERS = {
    "font": _text,
    "handwritten": _handwritten,
    "scribble": _scribble,
    "noise": _noise,
    "texture": _texture,
    "shape": _shape,
}


def render(kind: str, rng: np.random.Generator, split: str = "train") -> tuple[Image.Image, bool]:
    """The ink mask of one non-digit and whether it fills the frame."""
    out = _MAKERS[kind](rng, SPLITS[split], split)
    return out if isinstance(out, tuple) else (out, False)


def generate(kind: str, rng: np.random.Generator, split: str = "train") -> bytes:
    """One non-digit image of `kind` as encoded file bytes (PNG or JPEG), a pure function of rng's state."""
    if kind not in _MAKERS:
        raise ValueError(f"unknown kind {kind!r}; one of {KINDS}")
    mask, full = render(kind, rng, split)
    return present(mask, rng, full)


TRAIN_MIX = {"font": 0.3, "handwritten": 0.3, "scribble": 0.15, "noise": 0.05, "texture": 0.05, "shape": 0.15}


def bank(split: str, n: int, seed: int = 0, kinds=KINDS, mix: dict | None = None):
    """n images, each preprocessed as a user's file would be; kinds in turn, or drawn with the weights `mix`.
    Returns (images float32 (M, 28, 28) on [0, 255], kinds (M,), {kind: number rejected by preprocessing})."""
    images, names, failed = [], [], {k: 0 for k in kinds}
    for i in range(n):
        rng = np.random.default_rng([SPLIT_SEED[split], seed, i])
        kind = str(rng.choice(list(mix), p=np.array(list(mix.values())) / sum(mix.values()))) if mix else kinds[i % len(kinds)]
        data = generate(kind, rng, split)
        try:
            images.append(preprocess(data, f"{split}-{kind}-{i}"))
            names.append(kind)
        except EdgeViTError:
            failed[kind] += 1
    return np.array(images, np.float32).reshape(-1, 28, 28), np.array(names), failed
