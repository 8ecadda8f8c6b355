"""Digits drawn through the same presentation as the negatives (negatives.present): the positive twin of
negatives.py, so that "looks like a scan / a JPEG / a canvas export" is never a cue for "not a digit".

- mnist: a training digit (index < 55,000: never a validation or test digit) upscaled to a random size
  as a pen drawing (like edgevit.writers' canvas), then presented on paper, dark background,
  transparent canvas or a scanned page, encoded, and brought back by edgevit.preprocess;
- printed: a digit 0-9 in one of the train-split fonts (DejaVu, FreeFont), presented the same way.

`bank(n, seed)` draws them; tools/banks.py writes them.
"""

from __future__ import annotations

import numpy as np
from negatives import _font, fonts, present
from PIL import Image, ImageDraw, ImageFilter

from edgevit.data import load_dataset
from edgevit.errors import EdgeViTError
from edgevit.preprocess import preprocess

N_TRAIN = 55_000
SEED = 33


def mnist_mask(digit: np.ndarray, rng) -> Image.Image:
    size = int(rng.integers(40, 300))
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    big = big.filter(ImageFilter.GaussianBlur(size / rng.uniform(50, 90)))
    a = np.asarray(big, np.float32)
    alpha = np.clip((a - 60) * rng.uniform(2, 4), 0, 255).astype(np.uint8)
    return Image.fromarray(alpha)


def printed_mask(label: int, rng) -> Image.Image:
    paths = fonts("train")
    font = _font(paths[int(rng.integers(len(paths)))], int(rng.integers(24, 160)))
    box = font.getbbox(str(label))
    img = Image.new("L", (box[2] - box[0] + 8, box[3] - box[1] + 8), 0)
    ImageDraw.Draw(img).text((4 - box[0], 4 - box[1]), str(label), fill=255, font=font)
    return img


def bank(n: int, seed: int = 0, printed_fraction: float = 0.25):
    train = load_dataset().train
    images, labels, failed = [], [], 0
    for i in range(n):
        rng = np.random.default_rng([SEED, seed, i])
        if rng.random() < printed_fraction:
            label = int(rng.integers(10))
            mask = printed_mask(label, rng)
        else:
            j = int(rng.integers(N_TRAIN))
            label = int(train.labels[j])
            mask = mnist_mask(train.images[j], rng)
        try:
            images.append(preprocess(present(mask, rng), f"pos-{i}"))
            labels.append(label)
        except EdgeViTError:
            failed += 1
    return np.array(images, np.float32), np.array(labels, np.int64), failed
