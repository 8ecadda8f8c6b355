"""edgevit.replay.int8: which replay launches are int8 products, and a w8a8 model whose replay runs
them on `edgevit_gemm_s8` giving tinygrad's own outputs bit for bit, at batch 1 and split over cores."""

import numpy as np
import pytest
from conftest import SHIPPED, native_int8_path

from edgevit.data import normalize
from edgevit.device import usable_cores
from edgevit.internals import HostBuffer, Launch
from edgevit.quantize import quantize_file
from edgevit.replay.int8 import find_products
from edgevit.runtime import Classifier

I8, I32, F32 = np.dtype(np.int8), np.dtype(np.int32), np.dtype(np.float32)


def launch(name: str, *buffers: HostBuffer) -> Launch:
    return Launch(None, [()], name, list(buffers), (0,))


def test_find_products_takes_int8_products_and_nothing_else():
    out, x, w = HostBuffer(I32, 17 * 64, 0, True), HostBuffer(I8, 17 * 144, 0, True), HostBuffer(I8, 144 * 64, 0, False)
    launches = [
        launch("r_17_16_4_36_4", out, x, w),  # fc2: M 17, K 144, N 64
        launch("E_17_16_4", out, x, w),  # not a reduction
        launch("r_17_16_4_36_4", out, x, w._replace(written=True)),  # the "weight" is an activation
        launch("r_17_16_4_36_4", out._replace(dtype=F32), x, w),  # float out
        launch("r_11_16_4", HostBuffer(I32, 11, 0, True), HostBuffer(I8, 64, 0, True), HostBuffer(I8, 704, 0, False)),  # N 11
    ]
    found = find_products(launches)
    assert [(p.index, p.m, p.k, p.n) for p in found] == [(0, 17, 144, 64)]


@pytest.fixture(scope="module")
def w8a8(tmp_path_factory):
    path = tmp_path_factory.mktemp("w8a8") / "w8a8.safetensors"
    quantize_file(SHIPPED, path, "w8a8", calibration=64)
    return path


@pytest.mark.parametrize("batch", [1, 256])
def test_w8a8_replay_runs_the_dot_product_kernels_with_tinygrads_outputs(w8a8, mnist, tmp_path, batch):
    swapped = Classifier(w8a8, cache_dir=tmp_path / "cache", device="CPU")
    plain = Classifier(w8a8, cache_dir=None, device="CPU", replay=False)  # tinygrad's own replay
    x = normalize(mnist.test.images[:batch].astype(np.float32), swapped.model.mean, swapped.model.std).reshape(batch, 1, 28, 28)
    for _ in range(3):  # eager, capture, then the direct replay
        got = swapped.forward(x)
    replay = swapped.backend.replay(batch)
    assert replay is not None and replay.int8 is not None
    assert replay.int8.path == native_int8_path()
    gemms = [launch for launch in replay.launches if launch.name.startswith("edgevit_gemm_s8_")]
    assert len(gemms) == 25  # 24 in the layers and the patch embedding; the 11-class head stays tinygrad's
    assert all(len(g.per_core) == (usable_cores() if batch == 256 else 1) for g in gemms)  # big ones split over cores
    expected = plain.forward(x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    again = swapped.forward(x[::-1].copy())  # another input through the same replay
    for a, b in zip(again, plain.forward(x[::-1].copy()), strict=True):
        np.testing.assert_array_equal(a, b)
