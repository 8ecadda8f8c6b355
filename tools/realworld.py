"""Synthetic "real world" digit images, for judging preprocessing and the model beyond MNIST.

Three groups, like the inputs users send:
- printed: digits 0-9 in the machine's TrueType fonts, at random sizes and positions, on white or
  grey paper, some JPEG-compressed;
- canvas: MNIST test digits redrawn as thick anti-aliased pen strokes on a transparent 280x280
  canvas (what a web drawing pad exports), dark or light ink;
- scans: MNIST test digits printed dark on paper and "scanned" at low resolution: uneven lighting,
  paper grain, blur, slight rotation, JPEG.

`python tools/realworld.py OUTDIR [--per-group N]` writes LABEL_GROUP_INDEX.{png,jpg} files;
`python tools/realworld.py --score WEIGHTS [--per-group N]` scores a weights file on them instead, per
group: how often the likeliest digit is right, how often the answer is "not a digit" (a false
rejection: every image here is a digit), and how often the answer edgevit-classify gives is right.
`generate(...)` yields (group, label, encoded bytes) for tests.
"""

from __future__ import annotations

import argparse
import glob
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from edgevit.answer import NOT_A_DIGIT, answers
from edgevit.cli import run
from edgevit.errors import EdgeViTError
from edgevit.preprocess import preprocess
from edgevit.runtime import Classifier

FONT_GLOBS = ("/usr/share/fonts/**/*.ttf", "/usr/share/fonts/**/*.otf")
NOT_DIGITS = ("symbol", "emoji", "dingbat", "math", "d050000l")  # fonts whose "digits" are pictures
GROUPS = ("printed", "canvas", "scans")


def fonts(family: str = "") -> list[str]:
    """The machine's fonts (those whose path contains `family`, if given)."""
    found = sorted({p for g in FONT_GLOBS for p in glob.glob(g, recursive=True)})
    return [p for p in found if family.lower() in p.lower() and not any(s in p.lower() for s in NOT_DIGITS)]


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buf.getvalue()


def printed(rng: np.random.Generator, label: int, font_path: str) -> bytes:
    size = int(rng.integers(24, 160))
    font = ImageFont.truetype(font_path, size)
    w, h = int(size * rng.uniform(1.2, 3.0)), int(size * rng.uniform(1.4, 2.5))
    paper = int(rng.integers(200, 256))
    img = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((0, 0), str(label), font=font)
    x = rng.uniform(0, max(1, w - (box[2] - box[0]))) - box[0]
    y = rng.uniform(0, max(1, h - (box[3] - box[1]))) - box[1]
    draw.text((x, y), str(label), fill=int(rng.integers(0, 60)), font=font)
    if rng.random() < 0.5:
        return _encode(img.convert("RGB"), "JPEG", int(rng.integers(50, 95)))
    return _encode(img, "PNG")


def canvas(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(4))
    alpha = np.clip((np.asarray(big, np.float32) - 60) * 3, 0, 255).astype(np.uint8)  # a firm pen edge
    ink = (0, 0, 0) if rng.random() < 0.7 else (255, 255, 255)
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = ink, alpha
    return _encode(Image.fromarray(rgba, "RGBA"), "PNG")


def scan(rng: np.random.Generator, digit: np.ndarray) -> bytes:
    height = int(rng.integers(14, 40))  # pixels the digit's 28x28 cell gets in the scan
    cell = Image.fromarray(255 - digit).rotate(rng.uniform(-8, 8), Image.Resampling.BILINEAR, fillcolor=255)
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
    return _encode(img, "JPEG", int(rng.integers(30, 85)))


def generate(per_group: int, seed: int = 0, family: str = "", mnist_offset: int = 5000) -> Iterator[tuple[str, int, bytes]]:
    """Yield (group, label, image bytes): `per_group` of each group. MNIST digits come from the test split."""
    from edgevit.data import load_dataset

    rng = np.random.default_rng(seed)
    test = load_dataset().test
    font_list = fonts(family)
    if not font_list:
        raise SystemExit(f"no fonts matching {family!r} under /usr/share/fonts")
    for i in range(per_group):
        label = i % 10
        yield "printed", label, printed(rng, label, font_list[(i // 10) % len(font_list)])
    for group, make in (("canvas", canvas), ("scans", scan)):
        for i in range(per_group):
            j = mnist_offset + (i if group == "canvas" else per_group + i)
            yield group, int(test.labels[j]), make(rng, test.images[j])


def score(weights: Path, per_group: int, seed: int, family: str) -> dict[str, dict[str, float]]:
    """Group -> images, likeliest digit right, answered "not a digit", answer right (shares of images;
    an image preprocessing refuses counts as neither right nor rejected)."""
    totals = dict.fromkeys(GROUPS, 0)
    groups, labels, images = [], [], []
    for i, (group, label, data) in enumerate(generate(per_group, seed, family)):
        totals[group] += 1
        try:
            images.append(preprocess(data, f"{group}-{i}"))
        except EdgeViTError:
            continue  # refused: no image goes to the model
        groups.append(group)
        labels.append(label)
    classifier = Classifier(weights, cache_dir=None)
    probs = classifier.predict(np.stack(images)).probs
    said, groups, labels = answers(probs, classifier.reject), np.array(groups), np.array(labels)
    out = {}
    for group in GROUPS:
        mine, total = groups == group, totals[group]
        out[group] = {
            "images": total,
            "likeliest_right": float((probs[mine, :10].argmax(1) == labels[mine]).sum() / total),
            "not_a_digit": float((said[mine] == NOT_A_DIGIT).sum() / total),
            "answer_right": float((said[mine] == labels[mine]).sum() / total),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, nargs="?", help="directory to write the images to")
    p.add_argument("--score", type=Path, metavar="WEIGHTS", help="score this weights file instead of writing images")
    p.add_argument("--per-group", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--family", default="", help="only fonts whose path contains this (e.g. dejavu)")
    args = p.parse_args(argv)
    if (args.out is None) == (args.score is None):
        p.error("give an output directory or --score WEIGHTS")
    if args.score:
        print("| group | images | likeliest digit right | answered not a digit | answer right |\n|---|---|---|---|---|")
        for group, r in score(args.score, args.per_group, args.seed, args.family).items():
            shares = (r["likeliest_right"], r["not_a_digit"], r["answer_right"])
            print(f"| {group} | {r['images']} | " + " | ".join(f"{100 * v:.2f}%" for v in shares) + " |")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (group, label, data) in enumerate(generate(args.per_group, args.seed, args.family)):
        ext = "jpg" if data[:2] == b"\xff\xd8" else "png"
        (args.out / f"{label}_{group}_{i:04d}.{ext}").write_bytes(data)
    return 0


if __name__ == "__main__":
    run("realworld.py", main)
