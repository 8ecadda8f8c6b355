import numpy as np
import pytest

from edgevit.quant.codec import (
    activation_scale,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_activations,
    quantize_int4,
    quantize_int8,
    unpack_int4,
)

RNG = np.random.default_rng(0)
W = (RNG.standard_normal((64, 49)) * RNG.uniform(0.01, 2, (64, 1))).astype(np.float32)  # rows of different range
X = RNG.standard_normal((3, 5, 49)).astype(np.float32)
B = RNG.standard_normal(64).astype(np.float32)


def test_int8_is_per_channel_and_within_half_a_step():
    q, scale = quantize_int8(W)
    assert q.dtype == np.int8 and scale.shape == (64,)
    np.testing.assert_allclose(scale, np.abs(W).max(1) / 127, rtol=1e-6)
    assert (np.abs(q).max(1) == 127).all()  # every channel uses its full range
    assert (np.abs(dequantize_int8(q, scale) - W) <= scale[:, None] / 2 + 1e-7).all()


def test_int4_groups_of_32_within_half_a_step_and_packed_two_per_byte():
    packed, scale = quantize_int4(W)
    assert packed.dtype == np.uint8 and packed.shape == (64, 25) and scale.shape == (64, 2)  # 49 inputs: 32 + 17
    np.testing.assert_allclose(scale[:, 0], np.abs(W[:, :32]).max(1) / 7, rtol=1e-6)
    step = np.repeat(scale, 32, axis=1)[:, :49]
    assert (np.abs(dequantize_int4(packed, scale, 49) - W) <= step / 2 + 1e-7).all()


@pytest.mark.parametrize("width", [1, 2, 7, 32])
def test_int4_packing_round_trips_every_value(width):
    q = np.resize(np.arange(-8, 8, dtype=np.int8), (3, width))
    packed = pack_int4(q)
    assert packed.shape == (3, -(-width // 2))
    assert np.array_equal(unpack_int4(packed, width), q)
    assert pack_int4(np.array([[1, -1]], np.int8)).tolist() == [[0xF1]]  # low nibble first


def test_activation_scales():
    a = np.array([0.5, -2.0, 1.0, 100.0])
    assert activation_scale(a, "minmax") == 100.0 / 127
    assert activation_scale(a, "percentile", 50) == np.percentile(np.abs(a), 50) / 127
    with pytest.raises(ValueError, match="unknown calibration method"):
        activation_scale(a, "mean")
    assert quantize_activations(np.array([1000.0, -1000.0, 0.4]), 1.0).tolist() == [127, -127, 0]
