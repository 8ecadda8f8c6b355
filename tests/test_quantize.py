import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, SHIPPED
from tinygrad import Tensor

from edgevit import weights
from edgevit.errors import EdgeViTError
from edgevit.model import QuantLinear
from edgevit.quantize import (
    activation_scale,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_activations,
    quantize_file,
    quantize_int4,
    quantize_int8,
    quantize_tensors,
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


def test_fp16_keeps_every_weight_within_half_precision():
    half = quantize_tensors({"l.weight": W, "l.bias": B}, "fp16")
    assert half["l.weight"].dtype == np.float16 and half["l.bias"].dtype == np.float16
    assert (np.abs(half["l.weight"].astype(np.float32) - W) <= np.abs(W) * 2.0**-11 + 2.0**-25).all()


def test_cli_bad_input_is_one_line(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "quantize.py")]
    for args, needle in [
        ([str(tmp_path / "none.safetensors")], "none.safetensors: cannot read weights"),
        ([str(SHIPPED), "--percentile", "0"], "--percentile must be in (0, 100]"),
        ([str(ROOT / "README.md")], "README.md: not a safetensors file"),
    ]:
        result = subprocess.run([*tool, *args], capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 1 and result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


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


def load(layer: QuantLinear, tensors: dict) -> QuantLinear:
    for name, value in tensors.items():
        setattr(layer, name.split(".", 1)[1], Tensor(value))
    return layer


@pytest.mark.parametrize("scheme", ["int8", "int4", "fp16", "w8a8"])
def test_compiled_layer_matches_the_numpy_reference(scheme):
    tensors = quantize_tensors({"l.weight": W, "l.bias": B}, scheme, {"l": activation_scale(X, "minmax")})
    y = load(QuantLinear(scheme, 49, 64), tensors)(Tensor(X)).numpy()
    if scheme == "int8":
        ref = X @ dequantize_int8(tensors["l.q"], tensors["l.scale"]).T + B
    elif scheme == "int4":
        ref = X @ dequantize_int4(tensors["l.q"], tensors["l.scale"], 49).T + B
    elif scheme == "fp16":
        ref = X @ W.astype(np.float16).astype(np.float32).T + B.astype(np.float16).astype(np.float32)
    else:
        s = tensors["l.input_scale"][0]
        acc = quantize_activations(X, s).astype(np.int32) @ tensors["l.q"].astype(np.int32).T
        ref = acc.astype(np.float32) * (s * tensors["l.scale"]) + B
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)


def test_w8a8_accumulates_in_int32_without_overflow():
    layer = QuantLinear("w8a8", 64, 2)
    q = np.full((2, 64), 127, np.int8)
    q[1] = -127
    load(
        layer,
        {
            "l.q": q,
            "l.scale": np.ones(2, np.float32),
            "l.bias": np.zeros(2, np.float32),
            "l.input_scale": np.ones(1, np.float32),
        },
    )
    y = layer(Tensor(np.full((1, 64), 127.0, np.float32))).numpy()
    assert y.tolist() == [[127 * 127 * 64, -127 * 127 * 64]]  # 1,032,256: far outside int8 and int16


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
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    assert weights.read_header(quantized["int8"]).tensors["head.q"].dtype == "I8"  # stays integer in the file


def test_int8_and_w8a8_agree_with_fp32_on_a_test_slice(quantized, mnist):
    from edgevit.runtime import Classifier

    images = mnist.test.images[:1000].astype(np.float32)
    fp32 = Classifier(SHIPPED, cache_dir=None).predict(images).probs.argmax(-1)
    for scheme in ("int8", "w8a8"):
        predicted = Classifier(quantized[scheme], cache_dir=None).predict(images).probs.argmax(-1)
        assert (predicted == fp32).mean() >= 0.99, scheme


@pytest.mark.parametrize("scheme", ["int8", "w8a8", "fp16", "int4"])
def test_every_scheme_runs_in_edgevit_classify(quantized, scheme, tmp_path):
    from conftest import run_module

    env = {"EDGEVIT_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = run_module(
        "edgevit.classify", str(ROOT / "samples" / "mnist-3.png"), "--json", "--weights", str(quantized[scheme]), env=env
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["digit"] == 3


def test_damaged_or_mismatched_quantized_files_are_refused(quantized, tmp_path):
    header = weights.read_header(quantized["int8"])
    lying = tmp_path / "lying.safetensors"
    weights.save(
        lying, {k: v.to("CPU").realize() for k, v in weights.load_tensors(header).items()}, dict(header.metadata, scheme="int4")
    )
    with pytest.raises(
        EdgeViTError, match=r"do not match the config.*embed\.proj\.q is \(64, 49\) but the config needs \(64, 25\)"
    ):
        weights.open_model_file(lying)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(quantized["int4"].read_bytes()[:-100])
    with pytest.raises(EdgeViTError, match="truncated weights file"):
        weights.open_model_file(truncated)
    with pytest.raises(EdgeViTError, match="holds int8 weights; this tool needs float"):
        quantize_file(quantized["int8"], tmp_path / "again.safetensors", "int4")
    unknown = tmp_path / "unknown.safetensors"
    weights.save(
        unknown,
        {k: v.to("CPU").realize() for k, v in weights.load_tensors(header).items()},
        dict(header.metadata, scheme="int3"),
    )
    with pytest.raises(EdgeViTError, match="unknown weights scheme 'int3'"):
        weights.open_model_file(unknown)


def test_cli_never_overwrites_its_input_and_leaves_nothing_when_interrupted(tmp_path):
    tool = [sys.executable, str(ROOT / "tools" / "quantize.py")]
    copy = tmp_path / "w.safetensors"
    copy.write_bytes(SHIPPED.read_bytes())
    same = subprocess.run([*tool, str(copy), "-o", str(copy)], capture_output=True, text=True, cwd=ROOT)
    assert same.returncode == 1 and "refusing to overwrite the input" in same.stderr
    assert copy.read_bytes() == SHIPPED.read_bytes()
    out = tmp_path / "w8a8.safetensors"
    proc = subprocess.Popen(
        [*tool, str(copy), "--scheme", "w8a8", "--calibration", "4000", "-o", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # inside the calibration pass
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
