"""What each weights scheme is, in one table: its file layout, its layers, where it can run.

Only the Linear layers differ between schemes. Biases of every scheme but fp16, the LayerNorms, the
class token and the position embeddings stay float32: under 3% of the parameters, and the precision
of norms matters.

| scheme | a Linear in the file | the graph computes |
|---|---|---|
| fp32 | weight, bias | x @ W^T + b |
| int8 | q (int8), one scale per output channel, bias | x @ (q * scale)^T + b, in float |
| w8a8 | as int8, plus one calibrated input scale | int8(x / s_in) @ q^T in int32, then * s_in * scale + b |
| fp16 | weight and bias in half precision | cast to float in the graph |
| int4 | q packed two per byte, one scale per `INT4_GROUP` inputs, bias | unpacked and dequantized in the graph |

Each Linear has two forms: `QuantLinear`, the file's own layout (training layout (out, in)), and
`InferenceLinear`, the same weights stored transposed (in, out) for the schemes that allow it:
kernels then read weights along the output axis, which compilers vectorise (measured on the exported
C graph: 553 -> 343 us per image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tinygrad import Tensor, dtypes, nn

from edgevit.model import ViT, ViTConfig, linear_layers, linear_shapes, parameter_shapes
from edgevit.quant import codec

Layout = dict[str, tuple[tuple[int, ...], str]]  # tensor suffix -> (shape, safetensors dtype)
TINYGRAD_DTYPES = {"F32": dtypes.float32, "F16": dtypes.half, "I8": dtypes.int8, "U8": dtypes.uint8}


@dataclass(frozen=True)
class Scheme:
    """One row of the table: how a scheme stores a Linear and what the graph computes from it."""

    name: str
    layout: Callable[[int, int], Layout]  # a Linear's tensors in a file, from (out_features, in_features)
    encode: Callable[[np.ndarray, np.ndarray, float | None], dict[str, np.ndarray]]  # (w, b, input scale) -> tensors
    forward: Callable[[QuantLinear, Tensor], Tensor]  # the file's own layout, (out, in)
    # the transposed layout's forward (InferenceLinear, weights (in, out)) and the tensor it transposes;
    # None: the scheme has no such form
    inference: Callable[[InferenceLinear, Tensor], Tensor] | None = None
    transposed: str = "q"
    c_export: bool = True
    why_not_c: str = ""

    @property
    def transposable(self) -> bool:
        return self.inference is not None


def _float_layout(dtype: str) -> Callable[[int, int], Layout]:
    return lambda out_f, in_f: {"weight": ((out_f, in_f), dtype), "bias": ((out_f,), dtype)}


def _int8_layout(out_f: int, in_f: int) -> Layout:
    return {"q": ((out_f, in_f), "I8"), "scale": ((out_f,), "F32"), "bias": ((out_f,), "F32")}


def _w8a8_layout(out_f: int, in_f: int) -> Layout:
    return _int8_layout(out_f, in_f) | {"input_scale": ((1,), "F32")}


def _int4_layout(out_f: int, in_f: int) -> Layout:
    groups = codec.int4_groups(in_f)
    return {"q": ((out_f, -(-in_f // 2)), "U8"), "scale": ((out_f, groups), "F32"), "bias": ((out_f,), "F32")}


def _encode_float(dtype):
    return lambda w, b, input_scale: {"weight": w.astype(dtype), "bias": b.astype(dtype)}


def _encode_int8(w, b, input_scale):
    q, scale = codec.quantize_int8(w)
    return {"q": q, "scale": scale, "bias": b.astype(np.float32)}


def _encode_w8a8(w, b, input_scale):
    if input_scale is None:
        raise ValueError("w8a8 needs a calibrated input scale for every Linear")
    return _encode_int8(w, b, None) | {"input_scale": np.array([input_scale], np.float32)}


def _encode_int4(w, b, input_scale):
    q, scale = codec.quantize_int4(w)
    return {"q": q, "scale": scale, "bias": b.astype(np.float32)}


def _dequantized_forward(weight: Callable[[QuantLinear], Tensor]) -> Callable[[QuantLinear, Tensor], Tensor]:
    """x @ W^T + b with W the float weight (out, in) that `weight` expands in the graph."""
    return lambda layer, x: x.linear(weight(layer).T, layer.bias.cast(dtypes.float32))


def _int4_weight(layer: QuantLinear) -> Tensor:
    scale = layer.scale.repeat_interleave(codec.INT4_GROUP, dim=1)[:, : layer.in_features]
    return unpack_int4(layer.q, layer.in_features) * scale


SCHEMES = {
    "fp32": Scheme(
        "fp32",
        _float_layout("F32"),
        _encode_float(np.float32),
        _dequantized_forward(lambda layer: layer.weight),
        lambda layer, x: x.matmul(layer.weight_t) + layer.bias,
        transposed="weight",
    ),
    # the scale is per output column, so it can wait until after the sum: one multiply per output
    "int8": Scheme(
        "int8",
        _int8_layout,
        _encode_int8,
        _dequantized_forward(lambda layer: layer.q.cast(dtypes.float32) * layer.scale.unsqueeze(1)),
        lambda layer, x: x.matmul(layer.weight_t.cast(dtypes.float32)) * layer.scale + layer.bias,
    ),
    "w8a8": Scheme(
        "w8a8",
        _w8a8_layout,
        _encode_w8a8,
        lambda layer, x: w8a8_linear(x, layer.q.T, layer.input_scale, layer.scale, layer.bias),
        lambda layer, x: w8a8_linear(x, layer.weight_t, layer.input_scale, layer.scale, layer.bias),
    ),
    "fp16": Scheme(
        "fp16",
        _float_layout("F16"),
        _encode_float(np.float16),
        _dequantized_forward(lambda layer: layer.weight.cast(dtypes.float32)),
        c_export=False,
        why_not_c="C99 has no portable half type",
    ),
    "int4": Scheme(
        "int4",
        _int4_layout,
        _encode_int4,
        _dequantized_forward(_int4_weight),
        c_export=False,
        why_not_c="the C export does not unpack nibbles",
    ),
}
QUANTIZED = tuple(name for name in SCHEMES if name != "fp32")
C_EXPORTABLE = tuple(name for name, s in SCHEMES.items() if s.c_export)


def get(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return SCHEMES[name]


# --- files ------------------------------------------------------------------------------------------
def parameter_specs(cfg: ViTConfig, scheme: str = "fp32") -> Layout:
    """Name -> (shape, safetensors dtype) of every tensor a `scheme` weights file holds for `cfg`."""
    layout = get(scheme).layout
    linears = linear_shapes(cfg)
    specs = {
        name: (shape, "F32")
        for name, shape in parameter_shapes(cfg).items()
        if name.rsplit(".", 1)[0] not in linears  # Linear tensors come from the scheme
    }
    for prefix, (out_f, in_f) in linears.items():
        specs |= {f"{prefix}.{suffix}": spec for suffix, spec in layout(out_f, in_f).items()}
    return specs


def encode_tensors(
    tensors: dict[str, np.ndarray], cfg: ViTConfig, scheme: str, input_scales: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    """A float state dict -> the `scheme` state dict. `input_scales` (w8a8) maps each Linear's
    prefix to its calibrated activation scale."""
    encode = get(scheme).encode
    linears = linear_shapes(cfg)
    out = {name: w.astype(np.float32) for name, w in tensors.items() if name.rsplit(".", 1)[0] not in linears}
    for prefix in linears:
        scale = (input_scales or {}).get(prefix)
        encoded = encode(tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"], scale)
        out |= {f"{prefix}.{suffix}": value for suffix, value in encoded.items()}
    return out


# --- layers -----------------------------------------------------------------------------------------
def quantize_input(x: Tensor, input_scale: Tensor) -> Tensor:
    """w8a8's activations: symmetric int8 with one calibrated scale (the numpy twin: codec.quantize_activations)."""
    return (x / input_scale).round().clip(-codec.INT8_MAX, codec.INT8_MAX).cast(dtypes.int8)


def w8a8_linear(x: Tensor, weight_t: Tensor, input_scale: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
    """int8 x int8 -> int32 (int8 or int16 would overflow), rescaled to float once per output.

    The quantized input and the int32 product are realized on their own, so the product is a kernel
    that does nothing but an int8 matrix product: the input is quantized once rather than once per
    output tile, and the C export can swap that kernel for one built on the CPU's int8 dot-product
    instructions (`edgevit.export.int8`).
    """
    xq = quantize_input(x, input_scale).contiguous()
    acc = xq.matmul(weight_t, dtype=dtypes.int32).contiguous()
    return acc.cast(dtypes.float32) * (input_scale * scale) + bias


def unpack_int4(packed: Tensor, in_features: int) -> Tensor:
    """uint8 (out, ceil(in/2)) -> float (out, in), in the graph (the numpy twin: codec.unpack_int4)."""
    low, high = (packed & 0xF).cast(dtypes.int8), packed.rshift(4).cast(dtypes.int8)
    q = low.unsqueeze(-1).cat(high.unsqueeze(-1), dim=-1).flatten(1)[:, :in_features]  # (out, in)
    return (q > codec.INT4_MAX).where(q - 16, q).cast(dtypes.float32)


class QuantLinear:
    """A Linear whose weights stay in their `scheme` form in device memory; the graph expands them."""

    def __init__(self, scheme: str, in_features: int, out_features: int):
        self.scheme, self.in_features = scheme, in_features
        for suffix, (shape, dtype) in get(scheme).layout(out_features, in_features).items():
            setattr(self, suffix, Tensor.empty(*shape, dtype=TINYGRAD_DTYPES[dtype]))

    def __call__(self, x: Tensor) -> Tensor:
        return get(self.scheme).forward(self, x)


class InferenceLinear:
    """A Linear with its weight stored transposed, (in, out), for inference (schemes that have the form).

    With the training layout (out, in) every kernel reads weights along the reduction axis, which
    compilers do not vectorise; transposed, they are read along the output axis. Outputs match the
    training layout to float rounding.
    """

    def __init__(self, layer: nn.Linear | QuantLinear):
        self.scheme = getattr(layer, "scheme", "fp32")
        if not get(self.scheme).transposable:
            raise ValueError(f"no transposed layout for {self.scheme}")
        self.weight_t = getattr(layer, get(self.scheme).transposed).T.contiguous().realize()  # (in, out)
        self.bias = layer.bias
        self.scale = getattr(layer, "scale", None)
        self.input_scale = getattr(layer, "input_scale", None)

    def __call__(self, x: Tensor) -> Tensor:
        return get(self.scheme).inference(self, x)


def build_vit(cfg: ViTConfig, scheme: str = "fp32") -> ViT:
    """A ViT whose Linear layers hold `scheme` weights (uninitialised unless fp32)."""
    model = ViT(cfg)
    if scheme != "fp32":
        for owner, attr in linear_layers(model).values():
            out_f, in_f = getattr(owner, attr).weight.shape
            setattr(owner, attr, QuantLinear(scheme, in_f, out_f))
    return model


def inference_layout(model: ViT) -> ViT:
    """Swap, in place, every Linear that has a faster inference layout for an InferenceLinear, and let
    each attention's query, key and value share one quantized input where they can."""
    for owner, attr in linear_layers(model).values():
        layer = getattr(owner, attr)
        if get(getattr(layer, "scheme", "fp32")).transposable:
            setattr(owner, attr, InferenceLinear(layer))
    for block in model.blocks:
        share_input_scale(block.attn.query, block.attn.key, block.attn.value)
    return model


def share_input_scale(*layers) -> None:
    """w8a8 layers that read the same input and were calibrated to the same scale (as query, key and
    value are: one tensor, one calibration) get the first one's scale tensor: the graph then quantizes
    that input once, not once per layer, with the same numbers."""
    scales = [getattr(layer, "input_scale", None) for layer in layers]
    if any(s is None for s in scales) or len({float(s.numpy().item()) for s in scales}) != 1:
        return
    for layer in layers[1:]:
        layer.input_scale = scales[0]
