import numpy as np
import pytest
from tinygrad import Context, Tensor
from tinygrad.nn.state import get_state_dict

from edgevit.model import Attention, ViT, ViTConfig, parameter_shapes, patchify

SMALL = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_default_config_is_the_design():
    cfg = ViTConfig()
    assert (cfg.num_patches, cfg.patch_size, cfg.dim, cfg.tokens, cfg.num_classes) == (16, 7, 64, 17, 10)
    assert sum(t.numel() for t in get_state_dict(ViT(cfg)).values()) == 139_018


@pytest.mark.parametrize("bad", [dict(patch_size=5), dict(dim=30, heads=4), dict(depth=0), dict(dropout=1.0)])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError, match="invalid ViTConfig"):
        ViTConfig(**bad)


def test_a_config_with_unknown_fields_is_refused(tmp_path):
    import dataclasses

    from tinygrad.nn.state import get_state_dict as state

    from edgevit import weights
    from edgevit.errors import EdgeViTError

    path = tmp_path / "w.safetensors"
    weights.save(path, state(ViT(SMALL)), {"config": dataclasses.asdict(SMALL) | {"colour": 3}, "preprocess": {}})
    with pytest.raises(EdgeViTError, match="no usable model config"):
        weights.config_of(weights.read_header(path))


def test_patchify_matches_numpy():
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    ref = np.stack([x[:, 0, 7 * r : 7 * r + 7, 7 * c : 7 * c + 7].reshape(2, 49) for r in range(4) for c in range(4)], 1)
    np.testing.assert_array_equal(patchify(Tensor(x), 7).numpy(), ref)


def test_attention_matches_numpy_softmax_qkt_v():
    cfg = ViTConfig(dim=16, heads=4)
    attn = Attention(cfg)
    x = np.random.default_rng(1).standard_normal((3, cfg.tokens, cfg.dim)).astype(np.float32)
    out, att = attn(Tensor(x))

    def lin(layer, v):
        return v @ layer.weight.numpy().T + layer.bias.numpy()

    def heads(t):
        return t.reshape(3, cfg.tokens, 4, 4).transpose(0, 2, 1, 3)

    q, k, v = (heads(lin(layer, x)) for layer in (attn.query, attn.key, attn.value))
    ref_att = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(4))
    ref_out = lin(attn.proj, (ref_att @ v).transpose(0, 2, 1, 3).reshape(3, cfg.tokens, 16))
    np.testing.assert_allclose(att.numpy(), ref_att, atol=1e-5)
    np.testing.assert_allclose(out.numpy(), ref_out, atol=1e-5)


def test_forward_shapes_and_attention_rows_sum_to_one():
    model = ViT(SMALL)
    logits, maps = model.forward(Tensor.randn(5, 1, 28, 28))
    assert logits.shape == (5, 10)
    assert maps.shape == (SMALL.depth, 5, SMALL.heads, SMALL.tokens, SMALL.tokens)
    m = maps.numpy()
    assert (m >= 0).all()
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(model(Tensor.zeros(2, 1, 28, 28)).numpy()[0], model(Tensor.zeros(2, 1, 28, 28)).numpy()[1])


@pytest.mark.slow
def test_gradients_reach_every_parameter():
    model = ViT(ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32, dropout=0.1))
    params = get_state_dict(model)
    with Context(TRAINING=1):
        for p in params.values():
            p.requires_grad = True
        loss = model(Tensor.randn(4, 1, 28, 28)).sparse_categorical_crossentropy(Tensor([1, 2, 3, 4])).backward()
        grads = Tensor.realize(*[p.grad for p in params.values()])
    assert np.isfinite(loss.item())
    dead = [name for name, g in zip(params, grads) if not np.abs(g.numpy()).sum() > 0]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize(
    "cfg", [ViTConfig(), SMALL, ViTConfig(patch_size=4, dim=24, depth=3, heads=3, mlp_dim=40, num_classes=47)]
)
def test_parameter_shapes_name_exactly_the_models_parameters(cfg):
    assert parameter_shapes(cfg) == {k: v.shape for k, v in get_state_dict(ViT(cfg)).items()}
