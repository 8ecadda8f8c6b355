"""Real images of digits -> what the model was trained on: MNIST's own convention.

The pipeline, each step a pure function:

1. decode: Pillow reads PNG, JPEG (with phones' MPO), GIF, BMP, TIFF, WebP and PNM, and only those:
   no other decoder runs on a file, whatever its contents say it is (Pillow's EPS reader would run
   PostScript through Ghostscript). EXIF orientation is applied, so a phone photo stored sideways is
   seen upright. Undecodable or truncated files are errors, and so are
   files over MAX_IMAGE_BYTES and images over MAX_IMAGE_PIXELS (checked from the header, before any
   pixel is decoded: a small file can declare a huge image).
2. ink: every mode becomes an ink map on [0, 1]. Palette, 16-bit and float images are scaled by their
   real range. With a transparent background (most canvas exports) ink is opacity. Otherwise the
   paper is estimated locally (a coarse max/min filter, so uneven lighting in scans and photos
   flattens out) and ink is the distance from it, on whichever side (dark-on-light or light-on-dark)
   has the strong sparse tail. A noisy picture (isolated specks: salt-and-pepper; or grain: sensor
   noise) is first median-filtered, once or twice, so specks never become strokes or stretch the
   digit's box; a clean one is left exactly as it was. The paper's noise floor (JPEG ringing,
   texture) is cut at a fraction of Otsu's threshold. Too little contrast means "no digit found",
   never a guess.
3. digit: connected blobs of ink; specks far smaller than the largest blob are dropped; the digit
   is the bounding box of what remains.
4. strokes: the crop is scaled to fit an 80x80 box, its stroke width estimated (2 x area / perimeter)
   and thickened or thinned toward MNIST's typical width, so hairline fonts and fat markers both
   look like MNIST's pen.
5. MNIST's box: scaled (area-averaged, anti-aliased) to fit 20x20 keeping the aspect ratio, then
   placed in 28x28 so its centre of mass is at the centre, white ink on black, on [0, 255].
"""

from __future__ import annotations

import io
import warnings
from collections import deque

import numpy as np
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from edgevit.data import warp_affine
from edgevit.errors import EdgeViTError

CANVAS = 28  # MNIST images are 28x28...
BOX = 20  # ...with the digit scaled to fit 20x20, keeping its aspect ratio
STROKE_SCALE = 4  # stroke width is measured and adjusted at 4x MNIST's resolution
MNIST_STROKE = 7.4  # median stroke width of MNIST test digits at 4x (2 x area / perimeter)
STROKE_RANGE = (5.5, 12.0)  # MNIST's own 3rd-97th percentile: left alone
MIN_CONTRAST = 0.08  # ink weaker than this against the paper is no digit
MAX_WORK = 512  # larger images are reduced first: a digit needs no more detail than this
COARSE = 96  # resolution at which blobs of ink are found
PAPER = 32  # resolution of the paper (background) estimate: lighting varies slowly
PAPER_FILTER = 9  # wider than any stroke at that resolution, so strokes vanish from the estimate
NOISE_FLOOR = 0.5  # fraction of Otsu's threshold below which ink is paper noise
SPECK = 0.08  # blobs with less than this fraction of the largest blob's ink are specks
MIN_INK_PIXELS = 4
# a picture is noisy when more than IMPULSE_SHARE of its pixels, and at least MIN_SPECKS, are isolated
# specks (brighter or darker than all 8 neighbours by SPECK_STEP) or when its grain (the median step
# between neighbours, as a Gaussian's sigma) is over GRAIN: clean scans and drawings have next to none
# of either (a digit reduced to 14x14 has one speck where a stroke ends)
IMPULSE_SHARE = 0.004
MIN_SPECKS = 8
SPECK_STEP = 0.25
GRAIN = 0.04
MEDIAN_STEPS = 0.6745 * 2**0.5  # median |a - b| of two independent N(0, 1) values
DENOISE_PASSES = 2
MAX_IMAGE_BYTES = 64 * 2**20  # no picture of a digit needs a bigger file
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")  # Pillow's names; JPEG reads MPO too, PPM every PNM
MAX_IMAGE_PIXELS = 50_000_000  # a 50-megapixel photo; decoding one takes about 150 MB (RGB), 200 MB (RGBA)


def decode(data: bytes, name: str = "image") -> Image.Image:
    """Bytes of any image Pillow reads -> an upright, fully loaded image, within the size limits."""
    if not data:
        raise EdgeViTError(f"{name}: empty file")
    if len(data) > MAX_IMAGE_BYTES:
        raise EdgeViTError(f"{name}: over {MAX_IMAGE_BYTES // 2**20} MiB, the most an image may be")
    try:
        with warnings.catch_warnings():
            # Pillow's warnings (corrupt EXIF data...) would be stray lines on stderr: the image decodes or
            # it does not. It only warns about a large image; here that is refused, below, by a lower limit.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.init()  # registers every plugin Pillow has: FORMATS picks the ones that may run
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            size = img.size
            if size[0] * size[1] > MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise EdgeViTError(f"{name}: not an image EdgeViT reads ({', '.join(FORMATS[:-1])}, PNM)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise EdgeViTError(f"{name}: image too large (over {MAX_IMAGE_PIXELS:,} pixels)") from None
    except Exception as e:  # Pillow parses hostile bytes: whatever it raises, the file is damaged
        raise EdgeViTError(f"{name}: damaged image ({str(e) or type(e).__name__})") from None


def _luminance_and_alpha(img: Image.Image, sixteen_bit: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey level on [0, 1] and opacity on [0, 1] (None when the image has no transparency).
    `sixteen_bit`: an "I" image that was 16-bit before it was reduced."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise EdgeViTError("damaged image (pixel values that are not finite numbers)")
        top = 65535.0 if sixteen_bit or img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)).astype(np.float32), None
        return np.clip(arr / top, 0, 1).astype(np.float32), None
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    try:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (ValueError, OSError) as e:  # a mode Pillow cannot convert (LAB, HSV, ...)
        raise EdgeViTError(f"unsupported image mode {img.mode} ({e})") from None
    grey = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return grey, (rgba[..., 3] if has_alpha else None)


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    return float(centers[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _paper(grey: np.ndarray, dark_ink: bool) -> np.ndarray:
    """The local background level: strokes filtered out at coarse scale, then smoothed back up."""
    h, w = grey.shape
    scale = PAPER / max(h, w)
    small = Image.fromarray(grey, "F")
    if scale < 1:
        small = small.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    filt = ImageFilter.MaxFilter(PAPER_FILTER) if dark_ink else ImageFilter.MinFilter(PAPER_FILTER)
    bg = _box_blur(np.asarray(small.filter(filt), dtype=np.float32), 3)
    return np.asarray(Image.fromarray(bg, "F").resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _box_blur(a: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur with edge padding, by running sums (Pillow's blurs refuse float images)."""
    k = 2 * radius + 1
    a = np.pad(a, radius, mode="edge").astype(np.float64)
    for axis in (0, 1):
        c = np.cumsum(a, axis=axis)
        c = np.concatenate([np.zeros_like(c.take([0], axis=axis)), c], axis=axis)
        a = (c.take(range(k, c.shape[axis]), axis=axis) - c.take(range(c.shape[axis] - k), axis=axis)) / k
    return a.astype(np.float32)


def _neighbours(a: np.ndarray) -> np.ndarray:
    """(9, H, W): every pixel's 3x3 neighbourhood (edges repeated), the pixel itself at index 4."""
    p = np.pad(a, 1, mode="edge")
    h, w = a.shape
    return np.stack([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def noisy(grey: np.ndarray) -> bool:
    """Whether a grey image carries impulse noise or sensor grain (see IMPULSE_SHARE, GRAIN)."""
    if min(grey.shape) < 3:
        return False
    around = np.delete(_neighbours(grey), 4, axis=0)
    specks = (grey - around.max(0) > SPECK_STEP) | (around.min(0) - grey > SPECK_STEP)
    grain = float(np.median(np.abs(np.diff(grey, axis=1)))) / MEDIAN_STEPS
    return (float(specks.mean()) > IMPULSE_SHARE and int(specks.sum()) >= MIN_SPECKS) or grain > GRAIN


def denoise(grey: np.ndarray) -> np.ndarray:
    """A noisy image median-filtered (3x3) until it is not noisy, at most DENOISE_PASSES times."""
    for _ in range(DENOISE_PASSES):
        if not noisy(grey):
            break
        grey = np.median(_neighbours(grey), axis=0).astype(np.float32)
    return grey


def ink_map(img: Image.Image) -> np.ndarray:
    """Any decoded image -> ink on [0, 1] (1 = full stroke), paper at 0. Raises when there is no ink."""
    sixteen_bit = img.mode.startswith("I;16")
    if max(img.size) > MAX_WORK:
        img = img.convert("I") if sixteen_bit else img.copy()  # Pillow reduces 16-bit images only as 32-bit
        img.thumbnail((MAX_WORK, MAX_WORK), Image.Resampling.BOX)
    grey, alpha = _luminance_and_alpha(img, sixteen_bit)
    if alpha is not None and (alpha < 0.5).mean() > 0.05:
        ink = alpha  # drawn on a transparent canvas: where it is opaque is where the pen went
    else:
        grey = denoise(grey)
        median = float(np.median(grey))
        dark_tail = np.percentile(np.clip(median - grey, 0, None), 99.5)
        light_tail = np.percentile(np.clip(grey - median, 0, None), 99.5)
        dark_ink = dark_tail >= light_tail
        paper = _paper(grey, dark_ink)
        ink = np.clip(paper - grey if dark_ink else grey - paper, 0, None)
    peak = float(np.percentile(ink, 99.9)) if ink.size > 1000 else float(ink.max())
    if peak < MIN_CONTRAST:
        raise EdgeViTError("no digit found (the image has no ink with enough contrast)")
    ink = np.clip(ink / peak, 0, 1)
    floor = NOISE_FLOOR * _otsu(ink)
    return np.clip((ink - floor) / (1 - floor), 0, 1).astype(np.float32)


def _blobs(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, as arrays of flat indices."""
    h, w = mask.shape
    seen = np.zeros(h * w, bool)
    flat = mask.ravel()
    blobs = []
    for start in np.flatnonzero(flat):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), [start]
        while queue:
            p = queue.popleft()
            y, x = divmod(p, w)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w:
                        q = ny * w + nx
                        if flat[q] and not seen[q]:
                            seen[q] = True
                            queue.append(q)
                            members.append(q)
        blobs.append(np.array(members))
    return blobs


def digit_crop(ink: np.ndarray) -> np.ndarray:
    """The digit's bounding box in an ink map, specks far smaller than the digit's strokes dropped."""
    # blobs are found on a reduced copy: fast, and a broken stroke reconnects at coarse scale
    scale = min(1.0, COARSE / max(ink.shape))
    small = ink
    if scale < 1:
        h, w = ink.shape
        small = np.asarray(
            Image.fromarray(ink, "F").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
        )
    mask = small > 0.25
    blobs = _blobs(mask)
    if not blobs or mask.sum() < MIN_INK_PIXELS:
        raise EdgeViTError("no digit found (only specks of ink)")
    mass = np.array([small.ravel()[b].sum() for b in blobs])
    kept = np.concatenate([b for b, m in zip(blobs, mass) if m >= SPECK * mass.max()])
    ys, xs = np.divmod(kept, small.shape[1])
    # map the coarse box back to full resolution, with a one-pixel margin for rounding
    y0, y1 = max(0, int(ys.min() / scale) - 1), min(ink.shape[0], int((ys.max() + 1) / scale) + 1)
    x0, x1 = max(0, int(xs.min() / scale) - 1), min(ink.shape[1], int((xs.max() + 1) / scale) + 1)
    crop = ink[y0:y1, x0:x1].copy()
    # drop what the coarse pass called specks but lies inside the box at full resolution
    rows, cols = np.nonzero(crop > 0.25)
    if len(rows) < MIN_INK_PIXELS:
        raise EdgeViTError("no digit found (only specks of ink)")
    return crop[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width of a binary shape: 2 x area / perimeter (exact for long thin strokes)."""
    m = np.pad(mask.astype(np.int8), 1)
    perimeter = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    return 2.0 * m.sum() / max(1, perimeter)


def _fit(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = size / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS if s > 1 else Image.Resampling.BOX)


def normalize_strokes(crop: np.ndarray) -> np.ndarray:
    """The crop at 4x MNIST scale (longest side 80), strokes thickened or thinned toward MNIST's pen."""
    big = np.clip(np.asarray(_fit(Image.fromarray(crop, "F"), BOX * STROKE_SCALE), dtype=np.float32), 0, None)
    big = np.clip(big / max(float(big.max()), 1e-6), 0, 1)  # a hairline averages faint when reduced: restore its peak
    width = stroke_width(big > 0.5)
    lo, hi = STROKE_RANGE
    if lo <= width <= hi:
        return big
    size = 2 * round(abs(MNIST_STROKE - width) / 2) + 1  # a k-wide filter changes width by about k - 1
    size = min(size, 15)
    if size < 3:
        return big
    filt = ImageFilter.MaxFilter(size) if width < lo else ImageFilter.MinFilter(size)
    pad = size  # room for the strokes to grow before the box is re-fitted
    padded = Image.fromarray(np.pad(big, pad), "F").filter(filt)
    arr = np.asarray(padded, dtype=np.float32)
    rows, cols = np.nonzero(arr > 0.25)
    if len(rows) == 0:
        return big
    return arr[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def mnist_layout(digit: np.ndarray) -> np.ndarray:
    """A digit crop -> 28x28 on [0, 255]: fitted to 20x20 keeping aspect, centre of mass at the centre."""
    small = np.clip(np.asarray(_fit(Image.fromarray(digit.astype(np.float32), "F"), BOX), dtype=np.float32), 0, None)
    small = np.clip(small / max(float(small.max()), 1e-6), 0, 1)
    h, w = small.shape
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    top, left = (CANVAS - h) // 2, (CANVAS - w) // 2
    canvas[top : top + h, left : left + w] = small
    ys, xs = np.mgrid[0:CANVAS, 0:CANVAS]
    total = canvas.sum()
    cy, cx = (ys * canvas).sum() / total, (xs * canvas).sum() / total
    centre = (CANVAS - 1) / 2
    shift = np.array([[[1.0, 0.0, cx - centre], [0.0, 1.0, cy - centre]]])  # sample from the COM-centred position
    return np.clip(warp_affine(canvas[None] * 255.0, shift)[0], 0, 255)


def preprocess_image(img: Image.Image) -> np.ndarray:
    """A decoded image -> (28, 28) float32 on [0, 255], white digit on black, as MNIST."""
    out = mnist_layout(normalize_strokes(digit_crop(ink_map(img))))
    if not np.isfinite(out).all():  # never hand the model NaN: it would answer "0 nan%"
        raise EdgeViTError("no digit found (the image's values are not finite numbers)")
    return out


def preprocess(data: bytes, name: str = "image") -> np.ndarray:
    """Image file bytes -> (28, 28) float32 on [0, 255], white digit on black, as MNIST."""
    try:
        return preprocess_image(decode(data, name))
    except EdgeViTError as e:
        if str(e).startswith(name):
            raise
        raise EdgeViTError(f"{name}: {e}") from None
