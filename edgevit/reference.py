"""The same ViT outside tinygrad: a plain-numpy forward pass and a PyTorch module.

They are the references `tools/bench.py` measures EdgeViT against, and they load the very same
fp32 weights file. Both follow `edgevit.model` exactly (pre-norm blocks, LayerNorm eps 1e-5, tanh GELU).
The PyTorch module exported to ONNX (`export_onnx`) is what ONNX Runtime and OpenVINO run in the bench.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from edgevit.errors import EdgeViTError
from edgevit.model import ViTConfig
from edgevit.weights import ModelFile, model_file

LAYERNORM_EPS = 1e-5  # tinygrad's nn.LayerNorm default
ONNX_OPSET = 17  # the first opset with LayerNormalization as one operator


def float_weights(weights: str | os.PathLike | ModelFile) -> tuple[dict[str, np.ndarray], ViTConfig, tuple[float, float]]:
    """(name -> float32 array, ViTConfig, (mean, std)) of an fp32 weights file."""
    model = model_file(weights, float_only=True)
    return model.file.arrays(), model.config, (model.mean, model.std)


# --- numpy ------------------------------------------------------------------------------------
def _layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYERNORM_EPS) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_forward(w: dict[str, np.ndarray], config, x: np.ndarray, knockout=None, seen: list | None = None) -> np.ndarray:
    """Normalised images (B, 1, H, W) -> logits (B, classes). `knockout` (T,) bool: tokens removed as
    keys (scores minus infinity); `seen`, if given, gets each layer's q, k, v (B, H, T, hd), scores and
    weights (B, H, T, T): the explorer's numbers are checked against these."""

    def linear(name: str, t: np.ndarray) -> np.ndarray:
        return t @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    B, p, hd = x.shape[0], config.patch_size, config.dim // config.heads
    g = config.image_size // p
    patches = x.reshape(B, 1, g, p, g, p).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, p * p)
    t = linear("embed.proj", patches)  # (B, N, D)
    cls = np.broadcast_to(w["embed.cls_token"], (B, 1, config.dim))
    t = np.concatenate([cls, t], axis=1) + w["embed.pos_embedding"]  # (B, T, D)
    T = t.shape[1]
    for i in range(config.depth):
        pre = f"blocks.{i}"
        h = _layernorm(t, w[f"{pre}.ln1.weight"], w[f"{pre}.ln1.bias"])
        q, k, v = (
            linear(f"{pre}.attn.{n}", h).reshape(B, T, config.heads, hd).transpose(0, 2, 1, 3)
            for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)  # (B, H, T, T)
        if knockout is not None:
            scores = np.where(knockout, -np.inf, scores)
        att = _softmax(scores)
        if seen is not None:
            seen.append({"query": q, "key": k, "value": v, "scores": scores, "weights": att})
        y = (att @ v).transpose(0, 2, 1, 3).reshape(B, T, config.dim)
        t = t + linear(f"{pre}.attn.proj", y)
        h = _layernorm(t, w[f"{pre}.ln2.weight"], w[f"{pre}.ln2.bias"])
        t = t + linear(f"{pre}.mlp.fc2", _gelu(linear(f"{pre}.mlp.fc1", h)))
    return linear("head", _layernorm(t[:, 0], w["norm.weight"], w["norm.bias"]))


# --- PyTorch ----------------------------------------------------------------------------------
def torch_vit(w: dict[str, np.ndarray], config):
    """A torch.nn.Module with the same architecture and these weights (torch is the optional [bench] extra)."""
    try:
        import torch
        from torch import nn
    except ImportError:
        raise EdgeViTError("PyTorch is not installed: pip install -e '.[bench]'") from None

    head_root = math.sqrt(config.dim // config.heads)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = config.dim
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=LAYERNORM_EPS), nn.LayerNorm(d, eps=LAYERNORM_EPS)
            self.query, self.key, self.value, self.proj = (nn.Linear(d, d) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(d, config.mlp_dim), nn.Linear(config.mlp_dim, d)

        def forward(self, x):
            B, T, D = x.shape
            h = self.ln1(x)
            q, k, v = (m(h).view(B, T, config.heads, -1).transpose(1, 2) for m in (self.query, self.key, self.value))
            # the scale from the config, not from x.shape: an ONNX export then keeps it a constant
            att = (q @ k.transpose(-2, -1) / head_root).softmax(-1)  # (B, H, T, T)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, D))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(config.patch_dim, config.dim)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
            self.pos_embedding = nn.Parameter(torch.zeros(1, config.tokens, config.dim))
            self.blocks = nn.ModuleList(Block() for _ in range(config.depth))
            self.norm = nn.LayerNorm(config.dim, eps=LAYERNORM_EPS)
            self.head = nn.Linear(config.dim, config.num_classes)

        def forward(self, x):
            B, p = x.shape[0], config.patch_size
            g = config.image_size // p
            patches = x.reshape(B, 1, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, p * p)
            t = torch.cat([self.cls_token.expand(B, -1, -1), self.proj(patches)], dim=1) + self.pos_embedding
            for block in self.blocks:
                t = block(t)
            return self.head(self.norm(t[:, 0]))

    model = ViT()
    renamed = {}
    for name, value in w.items():
        name = name.replace("embed.proj", "proj").replace("embed.", "")
        name = name.replace(".attn.proj", ".proj").replace(".attn.", ".").replace(".mlp.", ".")
        renamed[name] = torch.from_numpy(value.copy())
    model.load_state_dict(renamed, strict=True)
    return model.eval()


def export_onnx(w: dict[str, np.ndarray], config, path: str | os.PathLike) -> None:
    """The PyTorch module as an ONNX file (opset 17, any batch size): the model ONNX Runtime and
    OpenVINO run in the bench, so every runtime there starts from the same weights."""
    import torch

    model = torch_vit(w, config)
    example = torch.zeros(1, 1, config.image_size, config.image_size)
    with warnings.catch_warnings():
        # torch 2.13 flags its TorchScript-based exporter as legacy; the default one needs onnxscript,
        # one more package, for the same opset-17 graph of this model
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
