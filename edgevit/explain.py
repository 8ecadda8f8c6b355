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


def token_name(token: int, grid: int) -> str:
    return "cls" if token == CLS else patch_name(token - 1, grid)


def _link(weights: np.ndarray, query: int | None) -> tuple[int, int, int]:
    """(head, query token, key token) of the strongest patch -> other-patch weight of (H, T, T), of
    `query` if given (a token) or of any patch."""
    w = np.asarray(weights, np.float64).copy()
    w[:, :, CLS] = -np.inf  # a patch reading the class token is no patch -> patch link
    w[:, CLS, :] = -np.inf
    idx = np.arange(w.shape[1])
    w[:, idx, idx] = -np.inf
    if query is not None:
        head, key = np.unravel_index(np.argmax(w[:, query, :]), (w.shape[0], w.shape[2]))
        return int(head), query, int(key)
    head, q, key = np.unravel_index(np.argmax(w), w.shape)
    return int(head), int(q), int(key)


def explain_scores(parts: list, grid: int = 4, patch: int | None = None, products: int = 3) -> str:
    """For each layer, the computation behind its strongest patch -> patch link (or the strongest link
    of patch `patch`, row-major from 0): the query and key vectors' dot product, divided by sqrt(d),
    is the score; the softmax over the query's row of scores gives the weight. `parts` are
    edgevit.qkv.Parts, one per layer."""
    lines = []
    for index, p in enumerate(parts):
        head, q, k = _link(p.weights, None if patch is None else patch + 1)
        qv, kv = p.query[head, q].astype(np.float64), p.key[head, k].astype(np.float64)
        d = len(qv)
        terms = qv * kv
        dot, score, weight = float(terms.sum()), float(p.scores[head, q, k]), float(p.weights[head, q, k])
        largest = np.argsort(-np.abs(terms))[:products]
        row = p.scores[head, q]
        ranked = [t for t in np.argsort(-row) if np.isfinite(row[t])][:3]
        lines += [
            f"Layer {index + 1}, head {head + 1}: {token_name(q, grid)} -> {token_name(k, grid)}, weight {weight:.{DIGITS}f}",
            f"  score = q . k / sqrt({d}) = {dot:.3f} / {np.sqrt(d):.3f} = {score:.3f}",
            "    largest products q_d x k_d: " + ", ".join(f"d{j} {qv[j]:.2f} x {kv[j]:.2f} = {terms[j]:.2f}" for j in largest),
            f"  softmax over the {np.isfinite(row).sum()} scores of {token_name(q, grid)}'s row (largest: "
            + ", ".join(f"{token_name(t, grid)} {row[t]:.3f}" for t in ranked)
            + f") gives {token_name(k, grid)} {weight:.{DIGITS}f}",
        ]
    return "\n".join(lines) + "\n"
