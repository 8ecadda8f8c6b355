import json

import numpy as np
from conftest import run_module

from edgevit import weights
from edgevit.answer import Reject
from edgevit.cli.evaluate import format_robustness
from edgevit.evaluation import rejection, robustness, score


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
    assert set(ev) == {"accuracy", "per_class", "confusion", "images", "calibration", "rejection"}
    assert ev["rejection"] is None  # a model without a "not a digit" rule
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


def test_rejection_counts_digits_and_non_digits_by_kind():
    eleven = lambda best, p: [*(p if d == best else (1 - p) / 10 for d in range(10)), (1 - p) / 10]  # noqa: E731
    digits = np.array([eleven(3, 0.9), eleven(3, 0.4), eleven(5, 0.9), [0.0] * 10 + [1.0]], np.float32)
    labels = np.array([3, 3, 4, 7])
    negatives = np.array([[0.0] * 10 + [1.0], eleven(1, 0.3), eleven(2, 0.95)], np.float32)
    r = rejection(digits, labels, Reject(10, 0.5), negatives, np.array([0, 0, 5]))
    assert r.false_rejection == 0.5  # the unsure 3 and the one its class took
    assert r.answered_accuracy == 0.5  # of the two answered: the 3 right, the 5 wrong
    assert (r.negatives, r.negatives_rejected) == (3, 2 / 3)
    assert r.per_kind == {"font": 1.0, "shape": 0.0}


def test_cli_reports_rejection_on_the_bundled_non_digits(rejecting_weights):
    result = run_module("edgevit.evaluate", str(rejecting_weights["class"]), "--limit", "50", "--json")
    assert result.returncode == 0, result.stderr
    r = json.loads(result.stdout)["rejection"]
    assert r["false_rejection"] == 1.0 and r["negatives_rejected"] == 1.0  # this model rejects everything
    assert r["negatives"] == 2969 and set(r["per_kind"]) == {"font", "handwritten", "scribble", "noise", "texture", "shape"}
    table = run_module("edgevit.evaluate", str(rejecting_weights["threshold"]), "--limit", "50", "--no-negatives").stdout
    assert 'test digits answered "not a digit": 100.00% of 50' in table and "non-digits" not in table


def test_robustness_report_per_kind_and_severity_and_other_writers(rejecting_weights):
    """A model that rejects everything answers no damaged digit: every row says so, in the table and in JSON."""
    from edgevit.degrade import KINDS, SEVERITIES
    from edgevit.writers import GROUPS

    r = robustness(rejecting_weights["class"], per_cell=2, per_group=3)
    assert len(r.cells) == len(KINDS) * len(SEVERITIES) and [k.kind for k in r.kinds] == [k.name for k in KINDS]
    assert all(c.images == 2 and c.not_a_digit == 1.0 and c.right == 0.0 for c in r.cells)
    assert r.mean.not_a_digit == 1.0 and [g.kind for g in r.writers] == list(GROUPS)
    table = format_robustness(r)
    assert "salt-pepper" in table and "   0.0  100.0    0.0" in table and "uci" in table
    result = run_module("edgevit.evaluate", str(rejecting_weights["class"]), "--robustness", "--per-cell", "0")
    assert result.returncode == 1 and "--per-cell must be from 1 to 1000, not 0" in result.stderr
