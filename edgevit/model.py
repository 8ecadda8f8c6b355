"""The Vision Transformer: patches of a digit attend to each other, a class token reads the answer.

A 28x28 image becomes 16 patches of 7x7; each patch is embedded into a `dim`-wide token, a learned
class token is prepended and learned position embeddings added. Every block projects each token into
a Query, a Key and a Value; softmax(QK^T/sqrt(d)) weights the Values. The model can hand back those
attention weights for every layer and head, because seeing which patch looked at which is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinygrad import Tensor, nn

from edgevit.checks import is_finite, is_int

# the largest model a config may describe: every size is checked against these before any tensor (or
# list of tensor names) is made, so a config from a file cannot ask for a billion layers
MAX_SIZES = {
    "image_size": 1024,
    "patch_size": 1024,
    "channels": 4,
    "dim": 4096,
    "depth": 64,
    "heads": 64,
    "mlp_dim": 16384,
    "num_classes": 1000,
}
MAX_PATCHES = 4096


@dataclass(frozen=True)
class ViTConfig:
    image_size: int = 28
    patch_size: int = 7
    channels: int = 1
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 128
    num_classes: int = 10
    dropout: float = 0.0

    def __post_init__(self):
        # types first: a config from JSON may hold 4.0, true or "4" where a count belongs
        problems = [
            f"{name} {getattr(self, name)!r} is not a whole number" for name in MAX_SIZES if not is_int(getattr(self, name))
        ]
        if not is_finite(self.dropout):
            problems.append(f"dropout {self.dropout!r} is not a finite number")
        if not problems:  # then ranges, before anything divides by a size
            problems = [
                f"{name} {getattr(self, name)} is over {most}" for name, most in MAX_SIZES.items() if getattr(self, name) > most
            ]
            if min(self.image_size, self.patch_size, self.channels, self.dim, self.depth, self.heads, self.mlp_dim) < 1:
                problems.append("sizes must be positive")
        if problems:
            raise ValueError("invalid ViTConfig: " + "; ".join(problems))
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} is not divisible by heads {self.heads}")
        if (self.image_size // self.patch_size) ** 2 > MAX_PATCHES:
            problems.append(f"{(self.image_size // self.patch_size) ** 2} patches is over {MAX_PATCHES}")
        if self.num_classes < 2:
            problems.append("num_classes must be at least 2")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout} is not in [0, 1)")
        if problems:
            raise ValueError("invalid ViTConfig: " + "; ".join(problems))

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def tokens(self) -> int:
        return self.num_patches + 1

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size**2


def patchify(x: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C*patch*patch), patches in row-major order."""
    B, C, H, W = x.shape
    gh, gw = H // patch, W // patch
    x = x.reshape(B, C, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(B, gh * gw, C * patch * patch)


class PatchEmbedding:
    def __init__(self, cfg: ViTConfig):
        self.patch_size = cfg.patch_size
        self.proj = nn.Linear(cfg.patch_dim, cfg.dim)
        self.cls_token = Tensor.randn(1, 1, cfg.dim) * 0.02
        self.pos_embedding = Tensor.randn(1, cfg.tokens, cfg.dim) * 0.02

    def __call__(self, x: Tensor) -> Tensor:
        tokens = self.proj(patchify(x, self.patch_size))  # (B, N, D)
        cls = self.cls_token.cast(tokens.dtype).expand(x.shape[0], 1, tokens.shape[-1])  # (B, 1, D)
        return cls.cat(tokens, dim=1) + self.pos_embedding  # (B, T, D)


class Attention:
    def __init__(self, cfg: ViTConfig):
        self.heads, self.head_dim, self.dropout = cfg.heads, cfg.dim // cfg.heads, cfg.dropout
        self.query = nn.Linear(cfg.dim, cfg.dim)
        self.key = nn.Linear(cfg.dim, cfg.dim)
        self.value = nn.Linear(cfg.dim, cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def __call__(self, x: Tensor, knockout: Tensor | None = None, seen: dict | None = None) -> tuple[Tensor, Tensor]:
        """`knockout`: (T,) bool, the tokens no token may read from (their scores are minus infinity
        before the softmax); `seen`, if given, gets this layer's q, k, v (B, H, T, hd) and scores
        (B, H, T, T, knocked-out keys included)."""
        B, T, D = x.shape

        def split_heads(t: Tensor) -> Tensor:
            return t.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        # stored transposed, so the scores kernel reads each key feature across the tokens, which
        # compilers vectorize (exported C per image: fp32 208 -> 181 us, w8a8 128 -> 104 us)
        k_t = k.transpose(-2, -1).contiguous()  # (B, H, hd, T)
        scores = q @ k_t * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, T)
        if knockout is not None:
            scores = knockout.reshape(1, 1, 1, T).where(-math.inf, scores)
        if seen is not None:
            seen |= {"query": q, "key": k, "value": v, "scores": scores}
        # softmax written out with its exp and its weights stored: from Tensor.softmax tinygrad fuses
        # exp(scores - max) into the row sums and into the product with V, recomputing it for every
        # value feature, one scalar exp at a time (exported w8a8, 16 images a call: 253 -> 134
        # kcycles per image)
        e = (scores - scores.max(-1, keepdim=True)).exp().contiguous()
        att = (e / e.sum(-1, keepdim=True)).contiguous()  # (B, H, T, T)
        y = att.dropout(self.dropout) @ v  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj(y).dropout(self.dropout), att


class MLP:
    def __init__(self, cfg: ViTConfig):
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.dim)
        self.dropout = cfg.dropout

    def __call__(self, x: Tensor) -> Tensor:
        h = self.fc1(x).gelu()  # (B, T, mlp_dim)
        # a float fc2 would recompute GELU for every output inside its product: realize it first. A
        # w8a8 fc2 (an input_scale) realizes its int8 input itself, so GELU, its bias and that rounding
        # become one pass over memory instead of two
        if not hasattr(self.fc2, "input_scale"):
            h = h.contiguous()
        return self.fc2(h.dropout(self.dropout)).dropout(self.dropout)


class Block:
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ViTConfig):
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg)

    def __call__(self, x: Tensor, knockout: Tensor | None = None, seen: dict | None = None) -> tuple[Tensor, Tensor]:
        y, att = self.attn(self.ln1(x), knockout, seen)
        x = x + y
        return x + self.mlp(self.ln2(x)), att


class ViT:
    def __init__(self, cfg: ViTConfig):
        self.config = cfg
        self.embed = PatchEmbedding(cfg)
        self.blocks = [Block(cfg) for _ in range(cfg.depth)]
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, x: Tensor, knockout: Tensor | None = None, seen: list | None = None) -> tuple[Tensor, Tensor]:
        """Normalised images (B, C, H, W) -> logits (B, classes), attention (depth, B, heads, T, T).
        `knockout` (T,) bool: tokens removed as keys in every layer and head; `seen`, if given, gets
        each layer's query, key, value and scores (Attention)."""
        x = self.embed(x)  # (B, T, D)
        maps = []
        for block in self.blocks:
            layer = {} if seen is not None else None
            x, att = block(x, knockout, layer)
            maps.append(att)
            if seen is not None:
                seen.append(layer)
        logits = self.head(self.norm(x[:, 0]))  # the class token carries the answer
        return logits, Tensor.stack(*maps)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)[0]


def linear_shapes(cfg: ViTConfig) -> dict[str, tuple[int, int]]:
    """Every Linear layer by its state-dict prefix, as (out_features, in_features)."""
    shapes = {"embed.proj": (cfg.dim, cfg.patch_dim)}
    for i in range(cfg.depth):
        for proj in ("query", "key", "value", "proj"):
            shapes[f"blocks.{i}.attn.{proj}"] = (cfg.dim, cfg.dim)
        shapes |= {f"blocks.{i}.mlp.fc1": (cfg.mlp_dim, cfg.dim), f"blocks.{i}.mlp.fc2": (cfg.dim, cfg.mlp_dim)}
    return shapes | {"head": (cfg.num_classes, cfg.dim)}


def macs_per_image(cfg: ViTConfig) -> int:
    """Multiply-adds in one image's forward pass: every Linear on every token it runs on (the head on
    the class token alone), and attention's two products (QK^T and the weighted sum of the values)."""
    t = cfg.tokens
    macs = cfg.num_patches * cfg.patch_dim * cfg.dim + cfg.dim * cfg.num_classes
    per_block = sum(out_f * in_f for name, (out_f, in_f) in linear_shapes(cfg).items() if name.startswith("blocks.0."))
    return macs + cfg.depth * (t * per_block + 2 * t * t * cfg.dim)


def parameter_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of ViT(cfg)'s parameters, without building it (a weights file is checked
    against these before any tinygrad work starts; a test keeps them equal to the real model's)."""
    shapes = {"embed.cls_token": (1, 1, cfg.dim), "embed.pos_embedding": (1, cfg.tokens, cfg.dim)}
    for prefix, (out_f, in_f) in linear_shapes(cfg).items():
        shapes |= {f"{prefix}.weight": (out_f, in_f), f"{prefix}.bias": (out_f,)}
    for i in range(cfg.depth):
        for norm in ("ln1", "ln2"):
            shapes |= {f"blocks.{i}.{norm}.weight": (cfg.dim,), f"blocks.{i}.{norm}.bias": (cfg.dim,)}
    return shapes | {"norm.weight": (cfg.dim,), "norm.bias": (cfg.dim,)}


def linear_layers(model: ViT) -> dict[str, tuple[object, str]]:
    """Every Linear in the model by its state-dict prefix, as (owner, attribute) so it can be swapped."""
    found = {"embed.proj": (model.embed, "proj"), "head": (model, "head")}
    for i, block in enumerate(model.blocks):
        for name in ("query", "key", "value", "proj"):
            found[f"blocks.{i}.attn.{name}"] = (block.attn, name)
        for name in ("fc1", "fc2"):
            found[f"blocks.{i}.mlp.{name}"] = (block.mlp, name)
    return found
