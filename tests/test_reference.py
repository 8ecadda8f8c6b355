import numpy as np
import pytest
from conftest import SHIPPED
from tinygrad import Tensor

from edgevit.data import normalize
from edgevit.errors import EdgeViTError
from edgevit.model import macs_per_image
from edgevit.reference import float_weights, numpy_forward, torch_vit
from edgevit.weights import ModelFile


@pytest.fixture(scope="module")
def shipped_logits(mnist):
    w, config, (mean, std) = float_weights(SHIPPED)
    x = normalize(mnist.test.images[:32], mean, std)
    return w, config, x, ModelFile.open(SHIPPED).build()(Tensor(x)).numpy()


def test_numpy_forward_matches_the_tinygrad_model(shipped_logits):
    w, config, x, expected = shipped_logits
    np.testing.assert_allclose(numpy_forward(w, config, x), expected, atol=1e-4)


def test_pytorch_module_matches_the_tinygrad_model(shipped_logits):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    w, config, x, expected = shipped_logits
    with torch.inference_mode():
        got = torch_vit(w, config)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_quantized_files_are_refused(tmp_path):
    from conftest import ROOT

    with pytest.raises(EdgeViTError, match="float"):
        float_weights(ROOT / "weights" / "edgevit-mnist-int8.safetensors")


def test_macs_per_image_is_what_pytorchs_flop_counter_counts():
    torch = pytest.importorskip("torch", reason="PyTorch is the optional [bench] extra")
    from torch.utils.flop_counter import FlopCounterMode

    w, config, _ = float_weights(SHIPPED)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        torch_vit(w, config)(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * macs_per_image(config)  # a multiply-add is two flops
