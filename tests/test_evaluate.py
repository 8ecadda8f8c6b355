import json

import numpy as np
from conftest import run_module

from edgevit import weights
from edgevit.evaluate import score


def test_score_counts_confusion_and_per_class_recall():
    labels = np.array([0, 0, 1, 1, 1, 2])
    predictions = np.array([0, 1, 1, 1, 2, 2])
    ev = score(predictions, labels, 4)
    assert ev.accuracy == 4 / 6 and ev.images == 6
    assert ev.confusion == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert ev.per_class == [0.5, 2 / 3, 1.0, None]  # no images of class 3: no recall to report


def test_cli_json_is_one_object_consistent_with_the_table(interrupted_run):
    _, _, root, out, _ = interrupted_run
    result = run_module("edgevit.evaluate", str(out), "--data", str(root / "data"), "--json")
    assert result.returncode == 0, result.stderr
    ev = json.loads(result.stdout)
    assert set(ev) == {"accuracy", "per_class", "confusion", "images", "calibration"}
    header = weights.read_header(out)  # the training run fitted the temperature on its held-out images
    assert ev["calibration"]["temperature"] == header.metadata["temperature"]["value"] > 0
    assert header.metadata["temperature"]["validation_images"] == 6  # a tenth of the 64 training images
    assert sum(b["images"] for b in ev["calibration"]["reliability"]) == 32
    confusion = np.array(ev["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == ev["images"] == 32
    assert ev["accuracy"] == np.trace(confusion) / 32
    table = run_module("edgevit.evaluate", str(out), "--data", str(root / "data"))
    assert f"test accuracy {100 * ev['accuracy']:.2f}% on 32 images" in table.stdout


def test_cli_refuses_a_non_weights_file_in_one_line(tmp_path):
    (tmp_path / "digit.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    result = run_module("edgevit.evaluate", str(tmp_path / "digit.png"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"edgevit.evaluate: error: {tmp_path / 'digit.png'}: not a safetensors file (header length")
