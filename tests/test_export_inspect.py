"""edgevit_inspect, the explorer's entry point of the exported C: every layer's query, key, value and
scores, with patches knocked out, against the model's own forward pass (edgevit.qkv, itself checked
against numpy in test_qkv)."""

import ctypes
import subprocess

import numpy as np
import pytest

from edgevit import export
from edgevit.data import normalize
from edgevit.qkv import attention_parts
from edgevit.weights import ModelFile

F32 = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def inspected(tiny_weights, tmp_path_factory):
    """The tiny model exported with edgevit_inspect, built as a shared library this test loads."""
    out = tmp_path_factory.mktemp("inspect")
    done = export.export(tiny_weights, out, inspect=True)
    library = out / "libinspect.so"
    cmd = ["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC", "-o", str(library)]
    built = subprocess.run([*cmd, str(done.files["edgevit_model.c"]), "-lm"], capture_output=True, text=True)
    assert built.returncode == 0 and built.stderr == "", built.stderr
    return ModelFile.open(tiny_weights), ctypes.CDLL(str(library)), (out / "edgevit_model.h").read_text()


def run_inspect(lib, cfg, pixels: np.ndarray, knockout: list[int]) -> dict[str, np.ndarray]:
    hd = cfg.dim // cfg.heads
    shapes = {
        "probs": (cfg.num_classes,),
        "attention": (cfg.depth, cfg.heads, cfg.tokens, cfg.tokens),
        "query": (cfg.depth, cfg.heads, cfg.tokens, hd),
        "key": (cfg.depth, cfg.heads, cfg.tokens, hd),
        "value": (cfg.depth, cfg.heads, cfg.tokens, hd),
        "scores": (cfg.depth, cfg.heads, cfg.tokens, cfg.tokens),
    }
    out = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    mask = np.zeros(cfg.tokens, np.uint8)
    mask[[p + 1 for p in knockout]] = 1
    image = np.ascontiguousarray(pixels, np.float32)
    args = [image.ctypes.data_as(F32), mask.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte))]
    answer = lib.edgevit_inspect(*args, *(a.ctypes.data_as(F32) for a in out.values()))
    assert answer >= 0
    return out


@pytest.mark.parametrize("knockout", [[], [0, 5, 15]])
def test_inspect_hands_out_the_forward_pass_numbers(inspected, mnist, knockout):
    model, lib, _ = inspected
    cfg, vit = model.config, model.build()
    for pixels in mnist.test.images[:3]:
        got = run_inspect(lib, cfg, pixels, knockout)
        logits, parts = attention_parts(vit, normalize(pixels[None], model.mean, model.std), knockout)
        probs = np.exp(logits / model.temperature - np.max(logits / model.temperature))
        np.testing.assert_allclose(got["probs"], probs / probs.sum(), atol=1e-5)
        for layer, want in enumerate(parts):
            for name in ("query", "key", "value"):
                np.testing.assert_allclose(got[name][layer], getattr(want, name), atol=1e-4, err_msg=name)
            finite = np.isfinite(want.scores)
            assert np.array_equal(np.isfinite(got["scores"][layer]), finite)  # knocked-out keys: -inf in both
            np.testing.assert_allclose(got["scores"][layer][finite], want.scores[finite], atol=1e-4)
            np.testing.assert_allclose(got["attention"][layer], want.weights, atol=1e-5)


def test_knocking_out_is_undone_for_the_other_entry_points(inspected, mnist):
    model, lib, header = inspected
    cfg = model.config
    assert "#define EDGEVIT_HAS_INSPECT 1" in header
    plain = run_inspect(lib, cfg, mnist.test.images[0], [])
    run_inspect(lib, cfg, mnist.test.images[0], list(range(cfg.tokens - 1)))
    probs = np.zeros(cfg.num_classes, np.float32)
    lib.edgevit_classify_pixels(
        np.ascontiguousarray(mnist.test.images[0], np.float32).ctypes.data_as(F32), probs.ctypes.data_as(F32), None
    )
    np.testing.assert_allclose(probs, plain["probs"], atol=1e-6)


def test_an_export_without_inspect_has_no_inspect_entry_point(tiny_weights, tmp_path):
    done = export.export(tiny_weights, tmp_path)
    assert "edgevit_inspect" not in (tmp_path / "edgevit_model.h").read_text()
    assert "edgevit_knockout" not in done.files["edgevit_model.c"].read_text()
