"""Attention maps as pictures: which of the 16 patches the class token looked at, layer by layer.

Per layer, the class token's attention to each patch is averaged over heads. Attention rollout
(Abnar & Zuidema, 2020) follows attention through the residual stream across all layers: each
layer's head-averaged matrix is mixed half-and-half with the identity (the skip connection),
rows renormalised, and the layers multiplied; the class token's row then says how much each
patch contributed to the final answer.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PANEL = 224  # pixels per panel side: 28x28 upscaled 8x
MARGIN = 12
LABEL_HEIGHT = 22
TITLE_HEIGHT = 30
HEAT_ALPHA = 0.55
# a perceptual dark-to-bright ramp (after matplotlib's inferno), sampled at 6 stops
RAMP = np.array([[0, 0, 4], [66, 10, 104], [147, 38, 103], [221, 81, 58], [252, 165, 10], [252, 255, 164]], np.float32)


def cls_attention(maps: np.ndarray, grid: int) -> np.ndarray:
    """(depth, heads, T, T) for one image -> (depth, grid, grid): class token -> patches, head mean."""
    return maps[:, :, 0, 1:].mean(1).reshape(-1, grid, grid)


def rollout(maps: np.ndarray, grid: int) -> np.ndarray:
    """(depth, heads, T, T) for one image -> (grid, grid) attention rollout from the class token."""
    tokens = maps.shape[-1]
    flow = np.eye(tokens)
    for layer in maps.mean(1):  # (T, T), head mean
        mixed = 0.5 * layer + 0.5 * np.eye(tokens)
        flow = (mixed / mixed.sum(-1, keepdims=True)) @ flow
    return flow[0, 1:].reshape(grid, grid)


def colorize(values: np.ndarray) -> np.ndarray:
    """Values on [0, 1] -> RGB uint8 through the ramp."""
    pos = np.clip(values, 0, 1) * (len(RAMP) - 1)
    lo = np.minimum(pos.astype(int), len(RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (RAMP[lo] * (1 - frac) + RAMP[lo + 1] * frac).astype(np.uint8)


def panel(image: np.ndarray, heat: np.ndarray | None) -> Image.Image:
    """The 28x28 input upscaled, with a (grid, grid) heat map over it scaled to its own maximum."""
    grey = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).resize((PANEL, PANEL), Image.Resampling.NEAREST)
    base = np.asarray(grey.convert("RGB"), np.float32)
    if heat is None:
        return Image.fromarray(base.astype(np.uint8))
    cells = np.kron(heat / max(float(heat.max()), 1e-9), np.ones((PANEL // heat.shape[0], PANEL // heat.shape[1])))
    out = (1 - HEAT_ALPHA) * base + HEAT_ALPHA * colorize(cells).astype(np.float32)
    img = Image.fromarray(out.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    step = PANEL // heat.shape[0]
    for k in range(1, heat.shape[0]):  # the patch grid the model cut the image into
        draw.line([(k * step, 0), (k * step, PANEL)], fill=(90, 90, 90))
        draw.line([(0, k * step), (PANEL, k * step)], fill=(90, 90, 90))
    for (r, c), v in np.ndenumerate(heat):
        draw.text(
            (c * step + 4, r * step + 3),
            f"{v:.2f}",
            fill=(255, 255, 255),
            font=_font(11),
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
    return img


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def render(image: np.ndarray, maps: np.ndarray, title: str) -> Image.Image:
    """One labelled picture: the input as the model saw it, each layer's map, and the rollout."""
    depth, grid = maps.shape[0], round((maps.shape[-1] - 1) ** 0.5)
    panels = [("input, as the model saw it", panel(image, None))]
    layers = cls_attention(maps, grid)
    panels += [(f"layer {i + 1}: class token -> patches", panel(image, layers[i])) for i in range(depth)]
    panels.append(("rollout across layers", panel(image, rollout(maps, grid))))
    width = len(panels) * (PANEL + MARGIN) + MARGIN
    height = TITLE_HEIGHT + LABEL_HEIGHT + PANEL + MARGIN
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.text((MARGIN, 6), title, fill=(0, 0, 0), font=_font(18))
    for i, (label, img) in enumerate(panels):
        x = MARGIN + i * (PANEL + MARGIN)
        draw.text((x, TITLE_HEIGHT + 2), label, fill=(40, 40, 40), font=_font(12))
        canvas.paste(img, (x, TITLE_HEIGHT + LABEL_HEIGHT))
    return canvas
