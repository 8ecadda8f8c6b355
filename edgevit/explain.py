"""Attention as plain text, for a terminal `--explain` mode.

A 28x28 digit is cut into a 4x4 grid of patches; with the class token that makes 17 tokens. In each
layer, every head gives every token (the query) one unit of attention to spread over all tokens (the
keys). `explain` prints, per layer and averaged over heads:

- the class token's attention over the patch grid: where the model looked to name the digit;
- the strongest links between two different patches: which patch gathered most from which.

Patches are named rRcC, row R and column C counting from 0 at the top left (r0c0 ... r3c3), the same
names the browser explorer uses.
"""

from __future__ import annotations

import numpy as np

CLS = 0  # the class token is token 0; patch p (row-major) is token p + 1
TOP_LINKS = 3  # patch-to-patch links listed per layer
DIGITS = 3  # decimals of each weight


def patch_name(patch: int, grid: int) -> str:
    """Patch index (row-major, from 0) -> 'rRcC'."""
    return f"r{patch // grid}c{patch % grid}"


def _cls_grid(layer: np.ndarray, grid: int) -> list[str]:
    """The class token's row of one (T, T) head-mean matrix, as a grid of numbers with row/column labels."""
    weights = layer[CLS, 1:].reshape(grid, grid)
    width = DIGITS + 4  # "0.123" and two spaces before it
    lines = ["      " + "".join(f"c{c}".rjust(width) for c in range(grid))]
    lines += [f"    r{r}" + "".join(f"{w:{width}.{DIGITS}f}" for w in row) for r, row in enumerate(weights)]
    lines.append(f"    (to itself: {layer[CLS, CLS]:.{DIGITS}f})")
    return lines


def strongest_links(layer: np.ndarray, grid: int, k: int = TOP_LINKS) -> list[tuple[str, str, float]]:
    """The k largest patch -> patch weights of a (T, T) matrix, (query, key, weight), self-links left out:
    a patch attending to itself is the residual path's job as much as attention's."""
    patches = layer[1:, 1:].copy()
    np.fill_diagonal(patches, -np.inf)
    order = np.argsort(patches, axis=None)[::-1][:k]
    return [
        (patch_name(q, grid), patch_name(key, grid), float(patches[q, key]))
        for q, key in zip(*np.unravel_index(order, patches.shape))
    ]


def explain(attention_one_image: np.ndarray, grid: int = 4) -> str:
    """(depth, heads, T, T) attention of one image, T = grid^2 + 1 -> a readable multi-line report."""
    maps = np.asarray(attention_one_image, dtype=np.float64)
    tokens = grid * grid + 1
    if maps.ndim != 4 or maps.shape[2:] != (tokens, tokens):
        raise ValueError(f"expected attention of shape (depth, heads, {tokens}, {tokens}), got {maps.shape}")
    depth, heads = maps.shape[:2]
    lines = [
        f"Attention, averaged over {heads} heads. Patches are named rRcC: row R, column C of the {grid}x{grid} grid,",
        "counting from 0 at the top left. Each weight is a share of the query token's attention (rows sum to 1).",
    ]
    for index, layer in enumerate(maps.mean(axis=1)):
        lines += ["", f"Layer {index + 1} of {depth}", "  class token -> patches (where it looked to name the digit):"]
        lines += _cls_grid(layer, grid)
        lines.append("  strongest patch -> patch links (query gathers from key):")
        lines += [f"    {q} -> {key}  {w:.{DIGITS}f}" for q, key, w in strongest_links(layer, grid)]
    return "\n".join(lines) + "\n"
