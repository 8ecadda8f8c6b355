"""The weights in weights/ are what their metadata and README say they are."""

import numpy as np
import pytest
from conftest import SHIPPED

from edgevit.evaluation import evaluate
from edgevit.weights import read_header

CHECK = 1000


def test_shipped_weights_score_what_their_metadata_records():
    metrics = read_header(SHIPPED).metadata["metrics"]
    recorded = metrics[f"test_accuracy_first_{CHECK}"]
    ev = evaluate(SHIPPED, limit=CHECK)
    assert ev.images == CHECK
    assert abs(ev.accuracy - recorded) <= 1 / CHECK  # one image of slack for float summation order
    assert metrics["test_accuracy"] >= 0.995  # the bar, on all 10,000 test images


def test_shipped_weights_are_calibrated_and_can_say_not_a_digit():
    from edgevit.answer import DIGITS
    from edgevit.weights import config_of, reject_of, temperature_of

    header = read_header(SHIPPED)
    config = config_of(header)
    assert config.num_classes == DIGITS + 1 and reject_of(header, config).cls == DIGITS
    assert 0 < reject_of(header, config).threshold < 1 and temperature_of(header) != 1.0
    n_params = sum(int(np.prod(t.shape)) for t in header.model_tensors.values())
    assert n_params <= 150_000  # the bound


def test_shipped_weights_are_the_default_design():
    header = read_header(SHIPPED)
    cfg = header.metadata["config"]
    assert (cfg["patch_size"], cfg["dim"], cfg["image_size"]) == (7, 64, 28)
    assert not any(k.startswith("optimizer.") for k in header.tensors)
    assert np.isclose(header.metadata["preprocess"]["mean"], 0.1307, atol=1e-4)


@pytest.mark.parametrize(("scheme", "drop"), [("int8", 1 / CHECK), ("w8a8", 3 / CHECK)])  # the quantize issue's budgets
def test_shipped_8_bit_files_come_from_the_shipped_float_weights_and_keep_their_accuracy(scheme, drop):
    import hashlib

    path = SHIPPED.with_name(f"edgevit-mnist-{scheme}.safetensors")
    meta = read_header(path).metadata
    assert meta["scheme"] == scheme and meta["source_sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert path.stat().st_size <= 0.30 * SHIPPED.stat().st_size
    recorded = read_header(SHIPPED).metadata["metrics"][f"test_accuracy_first_{CHECK}"]
    assert evaluate(path, limit=CHECK).accuracy >= recorded - drop
