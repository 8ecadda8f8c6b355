import hashlib
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, SHIPPED, run_module

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.quantize import quantize_file
from edgevit.runtime import Classifier


def test_cli_bad_input_is_one_line(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "quantize.py")]
    for args, needle in [
        ([str(tmp_path / "none.safetensors")], "none.safetensors: no such file"),
        ([str(SHIPPED), "--percentile", "0"], "--percentile must be in (0, 100]"),
        ([str(ROOT / "README.md")], "README.md: not a safetensors file"),
    ]:
        result = subprocess.run([*tool, *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized")
    files = {}
    for scheme in ("int8", "w8a8", "fp16", "int4"):
        files[scheme] = out / f"{scheme}.safetensors"
        quantize_file(SHIPPED, files[scheme], scheme, calibration=256)
    return files


def test_quantized_files_are_small_and_describe_themselves(quantized):
    fp32 = SHIPPED.stat().st_size
    assert quantized["int8"].stat().st_size <= 0.30 * fp32
    assert quantized["int4"].stat().st_size <= 0.20 * fp32
    meta = weights.read_header(quantized["w8a8"]).metadata
    assert meta["scheme"] == "w8a8" and meta["calibration"]["images"] == 256
    assert meta["config"] == weights.read_header(SHIPPED).metadata["config"]

    assert meta["source_sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert weights.read_header(quantized["int8"]).tensors["head.q"].dtype == "I8"  # stays integer in the file


def test_int8_and_w8a8_agree_with_fp32_on_a_test_slice(quantized, mnist):
    images = mnist.test.images[:1000].astype(np.float32)
    fp32 = Classifier(SHIPPED, cache_dir=None).predict(images).probs.argmax(-1)
    for scheme in ("int8", "w8a8"):
        predicted = Classifier(quantized[scheme], cache_dir=None).predict(images).probs.argmax(-1)
        assert (predicted == fp32).mean() >= 0.99, scheme


@pytest.mark.parametrize("scheme", ["int8", "w8a8", "fp16", "int4"])
def test_every_scheme_runs_in_edgevit_classify(quantized, scheme, tmp_path):

    env = {"EDGEVIT_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run_module(
        "edgevit.cli.classify", str(ROOT / "samples" / "mnist-3.png"), "--json", "--weights", str(quantized[scheme]), env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digit"] == 3


def test_damaged_or_mismatched_quantized_files_are_refused(quantized, tmp_path):
    header = weights.read_header(quantized["int8"])
    lying = tmp_path / "lying.safetensors"
    weights.save(
        lying,
        weights.read_weights(header.path).tensors(),
        dict(header.metadata, scheme="int4"),
    )
    with pytest.raises(
        EdgeViTError, match=r"do not match the config.*embed\.proj\.q is \(64, 49\) but the config needs \(64, 25\)"
    ):
        weights.ModelFile.open(lying)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(quantized["int4"].read_bytes()[:-100])
    with pytest.raises(EdgeViTError, match="truncated weights file"):
        weights.ModelFile.open(truncated)
    with pytest.raises(EdgeViTError, match="holds int8 weights; this tool needs float"):
        quantize_file(quantized["int8"], tmp_path / "again.safetensors", "int4")
    unknown = tmp_path / "unknown.safetensors"
    weights.save(
        unknown,
        weights.read_weights(header.path).tensors(),
        dict(header.metadata, scheme="int3"),
    )
    with pytest.raises(EdgeViTError, match="unknown weights scheme 'int3'"):
        weights.ModelFile.open(unknown)


def test_cli_never_overwrites_its_input_and_leaves_nothing_when_interrupted(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "quantize.py")]
    copy = tmp_path / "w.safetensors"
    copy.write_bytes(SHIPPED.read_bytes())
    same = subprocess.run([*tool, str(copy), "-o", str(copy)], capture_output=True, text=True, cwd=ROOT)
    assert same.returncode == 1 and "refusing to overwrite the input" in same.stderr
    assert copy.read_bytes() == SHIPPED.read_bytes()
    out = tmp_path / "w8a8.safetensors"
    proc = subprocess.Popen(
        [*tool, str(copy), "--scheme", "w8a8", "--calibration", "20000", "-o", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)  # inside the calibration pass (past the imports even on a busy machine; 20,000 images take longer)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.mark.slow
def test_compare_json_has_a_row_per_scheme(tiny_weights):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "quantize.py"), str(tiny_weights), "--compare", "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["scheme"] for r in rows] == ["fp32", "int8", "w8a8", "fp16", "int4"]
    keys = {"scheme", "bytes", "accuracy", "agreement", "max_logit_diff", "batch1_ms", "batch256_ips", "peak_rss_mb"}
    assert all(set(r) == keys for r in rows)
    assert rows[0]["agreement"] == 1.0 and rows[0]["max_logit_diff"] == 0.0
