import numpy as np
import pytest
from tinygrad import Tensor, dtypes, nn
from tinygrad.nn.state import get_state_dict

from edgevit.model import ViT, ViTConfig, linear_layers, parameter_shapes
from edgevit.quant import schemes
from edgevit.quant.codec import activation_scale, dequantize_int4, dequantize_int8, quantize_activations
from edgevit.quant.schemes import InferenceLinear, QuantLinear, build_vit, inference_layout

SMALL = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)
RNG = np.random.default_rng(0)
W = (RNG.standard_normal((64, 49)) * RNG.uniform(0.01, 2, (64, 1))).astype(np.float32)  # rows of different range
X = RNG.standard_normal((3, 5, 49)).astype(np.float32)
B = RNG.standard_normal(64).astype(np.float32)


def load(layer: QuantLinear, tensors: dict) -> QuantLinear:
    for name, value in tensors.items():
        setattr(layer, name, Tensor(value))
    return layer


def test_fp16_keeps_every_weight_within_half_precision():
    half = schemes.get("fp16").encode(W, B, None)
    assert half["weight"].dtype == np.float16 and half["bias"].dtype == np.float16
    assert (np.abs(half["weight"].astype(np.float32) - W) <= np.abs(W) * 2.0**-11 + 2.0**-25).all()


@pytest.mark.parametrize("scheme", ["int8", "int4", "fp16", "w8a8"])
def test_compiled_layer_matches_the_numpy_reference(scheme):
    tensors = schemes.get(scheme).encode(W, B, activation_scale(X, "minmax"))
    y = load(QuantLinear(scheme, 49, 64), tensors)(Tensor(X)).numpy()
    if scheme == "int8":
        ref = X @ dequantize_int8(tensors["q"], tensors["scale"]).T + B
    elif scheme == "int4":
        ref = X @ dequantize_int4(tensors["q"], tensors["scale"], 49).T + B
    elif scheme == "fp16":
        ref = X @ W.astype(np.float16).astype(np.float32).T + B.astype(np.float16).astype(np.float32)
    else:
        s = tensors["input_scale"][0]
        acc = quantize_activations(X, s).astype(np.int32) @ tensors["q"].astype(np.int32).T
        ref = acc.astype(np.float32) * (s * tensors["scale"]) + B
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)


def test_w8a8_accumulates_in_int32_without_overflow():
    layer = QuantLinear("w8a8", 64, 2)
    q = np.full((2, 64), 127, np.int8)
    q[1] = -127
    load(
        layer,
        {
            "q": q,
            "scale": np.ones(2, np.float32),
            "bias": np.zeros(2, np.float32),
            "input_scale": np.ones(1, np.float32),
        },
    )
    y = layer(Tensor(np.full((1, 64), 127.0, np.float32))).numpy()
    assert y.tolist() == [[127 * 127 * 64, -127 * 127 * 64]]  # 1,032,256: far outside int8 and int16


@pytest.mark.parametrize("scheme", ["fp32", "int8", "w8a8"])
def test_inference_layout_computes_what_the_training_layout_does(scheme):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 5, 48)).astype(np.float32))
    if scheme == "fp32":
        layer = nn.Linear(48, 24)
    else:
        layer = QuantLinear(scheme, 48, 24)
        layer.q = Tensor(rng.integers(-127, 128, (24, 48)).astype(np.int8), dtype=dtypes.int8)
        layer.scale = Tensor(rng.uniform(0.001, 0.01, 24).astype(np.float32))
        layer.bias = Tensor(rng.standard_normal(24).astype(np.float32))
        if scheme == "w8a8":
            layer.input_scale = Tensor([0.02])
    expected = layer(x).numpy()
    got = InferenceLinear(layer)(x).numpy()
    assert InferenceLinear(layer).weight_t.shape == (48, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_inference_layout_swaps_every_linear_it_can():
    cfg = SMALL
    x = Tensor(np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32))
    model = ViT(cfg)
    logits, attention = model.forward(x)
    inference_layout(model)
    assert all(isinstance(getattr(o, a), InferenceLinear) for o, a in linear_layers(model).values())
    new_logits, new_attention = model.forward(x)
    np.testing.assert_allclose(new_logits.numpy(), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(new_attention.numpy(), attention.numpy(), atol=1e-6)
    int4 = inference_layout(build_vit(cfg, "int4"))  # packed nibbles: no transposed form, left as they are
    assert not any(isinstance(getattr(o, a), InferenceLinear) for o, a in linear_layers(int4).values())


@pytest.mark.parametrize("scheme", list(schemes.SCHEMES))
def test_file_layout_and_layer_attributes_come_from_the_same_table(scheme):
    specs = schemes.parameter_specs(SMALL, scheme)
    model = build_vit(SMALL, scheme)
    assert {k: v.shape for k, v in get_state_dict(model).items()} == {k: shape for k, (shape, _) in specs.items()}
    if scheme == "fp32":
        assert specs == {k: (v, "F32") for k, v in parameter_shapes(SMALL).items()}


def test_encoding_a_state_dict_gives_exactly_the_file_layout():
    rng = np.random.default_rng(2)
    floats = {k: rng.standard_normal(shape).astype(np.float32) for k, shape in parameter_shapes(SMALL).items()}
    scales = dict.fromkeys(linear_layers(ViT(SMALL)), 0.05)
    for scheme in schemes.SCHEMES:
        encoded = schemes.encode_tensors(floats, SMALL, scheme, scales)
        specs = schemes.parameter_specs(SMALL, scheme)
        assert {k: v.shape for k, v in encoded.items()} == {k: shape for k, (shape, _) in specs.items()}, scheme
    with pytest.raises(ValueError, match="w8a8 needs a calibrated input scale"):
        schemes.encode_tensors(floats, SMALL, "w8a8")


def test_query_key_and_value_share_one_quantized_input_with_the_same_outputs(monkeypatch):
    """Calibrated on one tensor, their input scales are one number: sharing the tensor lets the graph
    quantize that input once (into the LayerNorm before it), and nothing else changes, to the bit."""
    from conftest import ROOT

    from edgevit.weights import ModelFile

    model = ModelFile.open(ROOT / "weights" / "edgevit-mnist-w8a8.safetensors")
    x = Tensor(np.random.default_rng(2).standard_normal((2, 1, 28, 28)).astype(np.float32))
    shared = inference_layout(model.build())
    for block in shared.blocks:
        assert block.attn.key.input_scale is block.attn.query.input_scale is block.attn.value.input_scale
    monkeypatch.setattr(schemes, "share_input_scale", lambda *layers: None)
    apart = inference_layout(model.build())
    assert apart.blocks[0].attn.key.input_scale is not apart.blocks[0].attn.query.input_scale
    for got, expected in zip(shared.forward(x), apart.forward(x), strict=True):
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_layers_with_different_input_scales_keep_their_own():
    layers = [QuantLinear("w8a8", 8, 8) for _ in range(3)]
    for layer, scale in zip(layers, (0.02, 0.02, 0.03), strict=True):
        layer.input_scale = Tensor([scale])
    before = [layer.input_scale for layer in layers]
    schemes.share_input_scale(*layers)
    assert all(layer.input_scale is b for layer, b in zip(layers, before, strict=True))
    floats = [nn.Linear(8, 8) for _ in range(3)]
    schemes.share_input_scale(*floats)  # float layers: nothing to share, nothing added
    assert not any(hasattr(layer, "input_scale") for layer in floats)
