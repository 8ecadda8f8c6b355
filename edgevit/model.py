"""The Vision Transformer: patches of a digit attend to each other, a class token reads the answer.

A 28x28 image becomes 16 patches of 7x7; each patch is embedded into a `dim`-wide token, a learned
class token is prepended and learned position embeddings added. Every block projects each token into
a Query, a Key and a Value; softmax(QK^T/sqrt(d)) weights the Values. The model can hand back those
attention weights for every layer and head, because seeing which patch looked at which is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tinygrad import Tensor, dtypes, nn


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
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.dim % self.heads:
            problems.append(f"dim {self.dim} is not divisible by heads {self.heads}")
        if min(self.image_size, self.patch_size, self.channels, self.dim, self.depth, self.heads, self.mlp_dim) < 1:
            problems.append("sizes must be positive")
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

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, T, D = x.shape

        def split_heads(t: Tensor) -> Tensor:
            return t.reshape(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        att = (q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.head_dim))).softmax(-1)  # (B, H, T, T)
        y = att.dropout(self.dropout) @ v  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj(y).dropout(self.dropout), att


class MLP:
    def __init__(self, cfg: ViTConfig):
        self.fc1 = nn.Linear(cfg.dim, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.dim)
        self.dropout = cfg.dropout

    def __call__(self, x: Tensor) -> Tensor:
        return self.fc2(self.fc1(x).gelu().dropout(self.dropout)).dropout(self.dropout)


class Block:
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: ViTConfig):
        self.ln1 = nn.LayerNorm(cfg.dim)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.dim)
        self.mlp = MLP(cfg)

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, att = self.attn(self.ln1(x))
        x = x + y
        return x + self.mlp(self.ln2(x)), att


class ViT:
    def __init__(self, cfg: ViTConfig):
        self.config = cfg
        self.embed = PatchEmbedding(cfg)
        self.blocks = [Block(cfg) for _ in range(cfg.depth)]
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images (B, C, H, W) -> logits (B, classes), attention (depth, B, heads, T, T)."""
        x = self.embed(x)  # (B, T, D)
        maps = []
        for block in self.blocks:
            x, att = block(x)
            maps.append(att)
        logits = self.head(self.norm(x[:, 0]))  # the class token carries the answer
        return logits, Tensor.stack(*maps)

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)[0]


def parameter_shapes(cfg: ViTConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of ViT(cfg)'s parameters, without building it (a weights file is checked
    against these before any tinygrad work starts; a test keeps them equal to the real model's)."""

    def linear(name: str, fan_in: int, fan_out: int) -> dict[str, tuple[int, ...]]:
        return {f"{name}.weight": (fan_out, fan_in), f"{name}.bias": (fan_out,)}

    def norm(name: str) -> dict[str, tuple[int, ...]]:
        return {f"{name}.weight": (cfg.dim,), f"{name}.bias": (cfg.dim,)}

    shapes = {"embed.cls_token": (1, 1, cfg.dim), "embed.pos_embedding": (1, cfg.tokens, cfg.dim)}
    shapes |= linear("embed.proj", cfg.patch_dim, cfg.dim)
    for i in range(cfg.depth):
        b = f"blocks.{i}"
        shapes |= norm(f"{b}.ln1") | norm(f"{b}.ln2")
        for proj in ("query", "key", "value", "proj"):
            shapes |= linear(f"{b}.attn.{proj}", cfg.dim, cfg.dim)
        shapes |= linear(f"{b}.mlp.fc1", cfg.dim, cfg.mlp_dim) | linear(f"{b}.mlp.fc2", cfg.mlp_dim, cfg.dim)
    return shapes | norm("norm") | linear("head", cfg.dim, cfg.num_classes)


INT4_GROUP = 32
QUANTIZED_SCHEMES = ("int8", "w8a8", "fp16", "int4")


class QuantLinear:
    """A Linear whose weight stays quantized in device memory; the compiled graph expands it.

    int8 / int4 / fp16: the weight is dequantized inside the graph and the matmul runs in float.
    w8a8: inputs are quantized with a calibrated scale and multiplied int8 x int8 -> int32.
    """

    def __init__(self, scheme: str, in_features: int, out_features: int):
        self.scheme, self.in_features = scheme, in_features
        if scheme in ("int8", "w8a8"):
            self.q = Tensor.empty(out_features, in_features, dtype=dtypes.int8)
            self.scale = Tensor.empty(out_features)
        elif scheme == "int4":
            self.q = Tensor.empty(out_features, -(-in_features // 2), dtype=dtypes.uint8)
            self.scale = Tensor.empty(out_features, -(-in_features // INT4_GROUP))
        elif scheme == "fp16":
            self.weight = Tensor.empty(out_features, in_features, dtype=dtypes.half)
        else:
            raise ValueError(f"unknown scheme {scheme!r}")
        if scheme == "w8a8":
            self.input_scale = Tensor.empty(1)
        self.bias = Tensor.empty(out_features, dtype=dtypes.half if scheme == "fp16" else dtypes.float32)

    def dequantized(self) -> Tensor:
        if self.scheme == "fp16":
            return self.weight.cast(dtypes.float32)
        if self.scheme == "int4":
            low = (self.q & 0xF).cast(dtypes.int8)
            high = (self.q.rshift(4)).cast(dtypes.int8)
            q = low.unsqueeze(-1).cat(high.unsqueeze(-1), dim=-1).flatten(1)[:, : self.in_features]  # (out, in)
            q = (q > 7).where(q - 16, q).cast(dtypes.float32)
            scale = self.scale.repeat_interleave(INT4_GROUP, dim=1)[:, : self.in_features]
            return q * scale
        return self.q.cast(dtypes.float32) * self.scale.unsqueeze(1)

    def __call__(self, x: Tensor) -> Tensor:
        if self.scheme != "w8a8":
            return x.linear(self.dequantized().T, self.bias.cast(dtypes.float32))
        xq = (x / self.input_scale).round().clip(-127, 127).cast(dtypes.int8)
        acc = xq.matmul(self.q.T, dtype=dtypes.int32)  # int32 accumulation: int8 would overflow
        return acc.cast(dtypes.float32) * (self.input_scale * self.scale) + self.bias


def linear_layers(model: ViT) -> dict[str, tuple[object, str]]:
    """Every Linear in the model by its state-dict prefix, as (owner, attribute) so it can be swapped."""
    found = {"embed.proj": (model.embed, "proj"), "head": (model, "head")}
    for i, block in enumerate(model.blocks):
        for name in ("query", "key", "value", "proj"):
            found[f"blocks.{i}.attn.{name}"] = (block.attn, name)
        for name in ("fc1", "fc2"):
            found[f"blocks.{i}.mlp.{name}"] = (block.mlp, name)
    return found


def quantized_vit(cfg: ViTConfig, scheme: str) -> ViT:
    """A ViT whose Linear layers hold `scheme` weights (all other parameters: float32, or half for fp16)."""
    model = ViT(cfg)
    for owner, attr in linear_layers(model).values():
        layer = getattr(owner, attr)
        out_f, in_f = layer.weight.shape
        setattr(owner, attr, QuantLinear(scheme, in_f, out_f))
    return model


TRANSPOSABLE = ("fp32", "int8", "w8a8")  # schemes whose Linear has an InferenceLinear layout


class InferenceLinear:
    """A float, int8 or w8a8 Linear with its weight stored transposed, (in, out), for inference.

    With the training layout (out, in) every kernel reads weights along the reduction axis, which
    compilers do not vectorise; transposed, they are read along the output axis. Measured on the
    exported C graph: 553 -> 343 us per image. Outputs match the training layout to float rounding.
    """

    def __init__(self, layer):
        self.scheme = getattr(layer, "scheme", "fp32")
        if self.scheme not in TRANSPOSABLE:
            raise ValueError(f"no transposed layout for {self.scheme}")
        weight = layer.weight if self.scheme == "fp32" else layer.q
        self.weight_t = weight.T.contiguous().realize()  # (in, out)
        self.bias = layer.bias
        self.scale = getattr(layer, "scale", None)
        self.input_scale = getattr(layer, "input_scale", None)

    def __call__(self, x: Tensor) -> Tensor:
        if self.scheme == "fp32":
            return x.matmul(self.weight_t) + self.bias
        if self.scheme == "int8":
            # the scale is per output column, so it can wait until after the sum: one multiply per output
            return x.matmul(self.weight_t.cast(dtypes.float32)) * self.scale + self.bias
        xq = (x / self.input_scale).round().clip(-127, 127).cast(dtypes.int8)
        acc = xq.matmul(self.weight_t, dtype=dtypes.int32)
        return acc.cast(dtypes.float32) * (self.input_scale * self.scale) + self.bias


def inference_layout(model: ViT) -> ViT:
    """Swap, in place, every Linear that has a faster inference layout for an InferenceLinear."""
    for owner, attr in linear_layers(model).values():
        layer = getattr(owner, attr)
        if getattr(layer, "scheme", "fp32") in TRANSPOSABLE:
            setattr(owner, attr, InferenceLinear(layer))
    return model


def parameter_specs(cfg: ViTConfig, scheme: str = "fp32") -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) of every tensor a `scheme` weights file holds for `cfg`."""
    specs = {}
    for name, shape in parameter_shapes(cfg).items():
        prefix = name.removesuffix(".weight")
        if scheme == "fp32" or len(shape) != 2:  # only Linear weights are 2-D
            specs.setdefault(name, (shape, "F32"))
            continue
        out_f, in_f = shape
        if scheme == "fp16":
            specs |= {name: (shape, "F16"), f"{prefix}.bias": ((out_f,), "F16")}
        elif scheme in ("int8", "w8a8"):
            specs |= {f"{prefix}.q": (shape, "I8"), f"{prefix}.scale": ((out_f,), "F32")}
            if scheme == "w8a8":
                specs[f"{prefix}.input_scale"] = ((1,), "F32")
        elif scheme == "int4":
            groups = -(-in_f // INT4_GROUP)
            specs |= {f"{prefix}.q": ((out_f, -(-in_f // 2)), "U8"), f"{prefix}.scale": ((out_f, groups), "F32")}
        else:
            raise ValueError(f"unknown scheme {scheme!r}")
    return specs
