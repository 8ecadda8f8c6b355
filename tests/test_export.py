import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHIPPED, native_int8_path, reject_rule, run_module

from edgevit import export
from edgevit.answer import NOT_A_DIGIT, answer, answers
from edgevit.data import load_negatives
from edgevit.errors import EdgeViTError
from edgevit.quantize import quantize_file
from edgevit.runtime import Classifier
from edgevit.runtime.c import CModel

INT8 = ROOT / "weights" / "edgevit-mnist-int8.safetensors"
N_IMAGES = 1000
N_NEGATIVES = 300  # held-out non-digits, 50 of each kind: where the "not a digit" rule decides
STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"]
ARM64_SYSROOT = Path("/usr/aarch64-linux-gnu")


def compile_c(compiler: str, out: Path, *sources: Path, flags=(), extra=()) -> None:
    cmd = [compiler, *STRICT, *flags, "-o", str(out), *map(str, sources), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # warning-free, not just error-free


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    for name, weights in (("fp32", SHIPPED), ("int8", INT8)):
        directory = tmp_path_factory.mktemp(f"c-{name}")
        out[name] = (weights, directory, export.export(weights, directory))
    return out


def read_answers(lines: list[str]) -> np.ndarray:
    """The digits main.c printed, "not a digit" as NOT_A_DIGIT."""
    return np.array([NOT_A_DIGIT if line.startswith("not a digit") else int(line.split()[0]) for line in lines])


@pytest.fixture(scope="module")
def images(mnist, degraded):
    """The first 1,000 MNIST test images, damaged test digits, then held-out non-digits, as whole
    pixels (a PGM holds bytes)."""
    negatives = np.clip(np.rint(load_negatives().images[:N_NEGATIVES]), 0, 255).astype(np.uint8)
    return np.concatenate([mnist.test.images[:N_IMAGES], degraded, negatives])


@pytest.fixture(scope="module")
def tinygrad_reference(images, tmp_path_factory):
    """What the tinygrad runtime says about `images`, per scheme."""
    images = images.astype(np.float32)
    cache = tmp_path_factory.mktemp("jit-cache")
    schemes = (("fp32", SHIPPED), ("int8", INT8))
    return {name: Classifier(w, cache_dir=cache, device="CPU").predict(images) for name, w in schemes}


def test_export_writes_the_promised_files_and_sizes(exported):
    _, directory, result = exported["int8"]
    assert sorted(p.name for p in directory.iterdir()) == sorted([*export.SOURCES, export.MARKER])
    header = (directory / "edgevit_model.h").read_text()
    assert "int edgevit_classify(const uint8_t image[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES]);" in header
    assert f"#define EDGEVIT_WEIGHTS_BYTES {result.weights_bytes}" in header
    # the int8 weights stay int8: about a quarter of the fp32 export's constant data
    assert result.weights_bytes < 0.3 * exported["fp32"][2].weights_bytes
    source = (directory / "edgevit_model.c").read_text()
    assert "static const signed char edgevit_blocks_0_attn_query_weight_t[4096]" in source
    assert "malloc" not in source and "#include <stdio.h>" not in source
    assert [line for line in source.splitlines() if line.startswith("#include")] == [
        "#include <math.h>",
        "#include <stddef.h>",
        '#include "edgevit_model.h"',
    ]


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_c_program_matches_the_tinygrad_runtime(exported, tinygrad_reference, images, mnist, tmp_path, compiler):
    pgms = []
    for i, image in enumerate(images):
        pgms.append(tmp_path / f"{i}.pgm")
        pgms[-1].write_bytes(b"P5\n# an MNIST test image\n28 28\n255\n" + image.tobytes())
    for name, (weights, directory, _) in exported.items():
        program = tmp_path / f"edgevit-{name}"
        compile_c(compiler, program, directory / "main.c", directory / "edgevit_model.c", extra=["-lm"])
        lines = subprocess.run([program, *map(str, pgms)], capture_output=True, text=True, check=True).stdout.splitlines()
        said = read_answers(lines)
        np.testing.assert_array_equal(said, answers(tinygrad_reference[name].probs, reject_rule(weights)))
        assert (said[-N_NEGATIVES:] == NOT_A_DIGIT).mean() > 0.5  # the rule decided here, the same way in C

        library = tmp_path / f"lib-{name}.so"
        compile_c(compiler, library, directory / "edgevit_model.c", flags=["-fPIC", "-shared"], extra=["-lm"])
        clf = Classifier(weights, cache_dir=None)
        probs, attention = CModel(library.read_bytes(), str(library), clf.model.sha256, clf.config)(images)
        np.testing.assert_allclose(probs, tinygrad_reference[name].probs, atol=1e-4)
        np.testing.assert_allclose(attention, tinygrad_reference[name].attention, atol=1e-4)
        assert (probs[:N_IMAGES, :10].argmax(1) == mnist.test.labels[:N_IMAGES]).mean() > 0.98


def test_single_image_program_output_and_bad_input(exported, tinygrad_reference, images, mnist, tmp_path):
    _, directory, _ = exported["fp32"]
    subprocess.run(["make", "-s", "-C", str(directory)], check=True, capture_output=True)
    raw = tmp_path / "seven.raw"
    raw.write_bytes(mnist.test.images[0].tobytes())  # 784 raw bytes work as well as a PGM
    out = subprocess.run([directory / "edgevit", raw], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == str(mnist.test.labels[0]) and 0.5 < float(out[1]) <= 1.0 and len(out) == 2

    # a non-digit: "not a digit" and the probability behind it; --always-digit names the likeliest digit
    weights = exported["fp32"][0]
    probs = tinygrad_reference["fp32"].probs
    first = (
        len(images) - N_NEGATIVES + int(np.flatnonzero(answers(probs[-N_NEGATIVES:], reject_rule(weights)) == NOT_A_DIGIT)[0])
    )
    said = answer(probs[first], reject_rule(weights))
    raw.write_bytes(images[first].tobytes())
    out = subprocess.run([directory / "edgevit", raw], capture_output=True, text=True, check=True).stdout
    assert out.startswith("not a digit ") and float(out.split()[3]) == pytest.approx(said.confidence, abs=1e-4)
    out = subprocess.run([directory / "edgevit", "--always-digit", raw], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == str(probs[first, :10].argmax())

    big = tmp_path / "big.pgm"
    big.write_bytes(b"P5 32 32 255\n" + bytes(32 * 32))
    for path, message in ((big, "is 32x32; expected 28x28"), (tmp_path / "missing.pgm", "cannot open")):
        done = subprocess.run([directory / "edgevit", path], capture_output=True, text=True)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1


def test_export_compiles_for_64_bit_arm(exported, tmp_path):
    """No x86-only code: the file compiles for aarch64 (compile only; needs libc6-dev-arm64-cross)."""
    assert (ARM64_SYSROOT / "include" / "math.h").is_file(), "install the arm64 headers: apt-get install libc6-dev-arm64-cross"
    for _, directory, _ in exported.values():
        flags = ["--target=aarch64-linux-gnu", f"--sysroot={ARM64_SYSROOT}", "-c"]
        compile_c("clang", tmp_path / "model.o", directory / "edgevit_model.c", flags=flags)
        assert (tmp_path / "model.o").read_bytes()[18] == 183  # ELF e_machine = EM_AARCH64


@pytest.mark.slow
def test_w8a8_export_agrees_on_every_prediction(mnist, tmp_path):
    """w8a8 rounds activations to int8, so float noise near a rounding boundary moves single
    integers: the predictions must agree; probabilities differ by up to about 1e-3."""
    w8a8 = tmp_path / "w8a8.safetensors"
    quantize_file(SHIPPED, w8a8, "w8a8", calibration=256)
    images = mnist.test.images[:200].astype(np.float32)
    expected = Classifier(w8a8, cache_dir=None, device="CPU").predict(images).probs
    clf = Classifier(w8a8, cache_dir=tmp_path / "cache", runtime="c", beam=0)
    got = clf.predict(images).probs
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=5e-3)


def test_c_runtime_is_built_once_cached_and_checked(mnist, tmp_path, tinygrad_reference):
    images = mnist.test.images[:20].astype(np.float32)
    first = Classifier(INT8, cache_dir=tmp_path, runtime="c", beam=0)
    np.testing.assert_allclose(first.predict(images).probs, tinygrad_reference["int8"].probs[:20], atol=1e-4)
    assert first.cache_hits == [] and len(list(tmp_path.glob("*.lib"))) == 1
    second = Classifier(INT8, cache_dir=tmp_path, runtime="c", beam=0)
    second.predict(images[:1])
    assert second.cache_hits == [0]
    # a library exported from other weights is refused, not silently used
    library = tmp_path / "int8.so"
    library.write_bytes(second.backend.library.image())
    with pytest.raises(EdgeViTError, match="exported from different weights"):
        Classifier(SHIPPED, runtime="c", c_library=library).predict(images[:1])
    # the cache key holds the search width: a different one builds a different library
    assert Classifier(INT8, cache_dir=tmp_path, runtime="c", beam=1).backend.library.key() != second.backend.library.key()
    with pytest.raises(EdgeViTError, match="the C runtime runs on this CPU"):
        Classifier(INT8, runtime="c", device="CPU")


@pytest.mark.slow
def test_big_batches_run_through_the_batch_library_with_the_same_answers(mnist, tmp_path, tinygrad_reference):
    images = mnist.test.images[:40].astype(np.float32)  # at least PARALLEL_MIN: whole BATCHes, then the rest
    clf = Classifier(SHIPPED, cache_dir=tmp_path, runtime="c", beam=0)
    one_by_one = [clf.predict(images[i : i + 1]) for i in range(len(images))]
    assert len(list(tmp_path.glob("*.lib"))) == 1  # small batches never build the batch library
    got = clf.predict(images)
    assert len(list(tmp_path.glob("*.lib"))) == 2
    np.testing.assert_allclose(got.probs, np.concatenate([p.probs for p in one_by_one]), atol=1e-5)
    np.testing.assert_allclose(got.attention, np.concatenate([p.attention for p in one_by_one], axis=1), atol=1e-5)
    np.testing.assert_allclose(got.probs, tinygrad_reference["fp32"].probs[:40], atol=1e-4)


def test_a_batch_library_that_cannot_be_built_leaves_big_batches_to_the_batch_1_library(
    tiny_weights, mnist, tmp_path, monkeypatch
):
    images = mnist.test.images[:40].astype(np.float32)
    clf = Classifier(tiny_weights, cache_dir=tmp_path, runtime="c", beam=0)
    tries = []

    def fails():
        tries.append(1)
        raise RuntimeError("a kernel search tinygrad refuses")

    monkeypatch.setattr(clf.backend.batch_library, "image", fails)
    expected = np.concatenate([clf.predict(images[i : i + 1]).probs for i in range(len(images))])
    for _ in range(2):
        np.testing.assert_array_equal(clf.predict(images).probs, expected)  # the batch-1 library, image by image
    assert len(tries) == 1  # given up on once, not rebuilt on every call


def test_classify_cli_with_the_c_runtime(tmp_path):
    env = {**os.environ, "EDGEVIT_CACHE": str(tmp_path)}
    # no search: the library's default search (a minute here) runs in test_bench's quick bench
    sample = str(ROOT / "samples" / "mnist-3.png")
    done = run_module("edgevit.cli.classify", "--runtime", "c", "--beam", "0", sample, env=env)
    assert done.returncode == 0 and done.stdout.split()[1] == "3", done.stderr
    done = run_module("edgevit.cli.classify", "--c-library", "x.so", sample, env=env)
    assert done.returncode == 1 and done.stderr.strip() == "edgevit-classify: error: --c-library needs --runtime c"


def test_unsupported_schemes_and_bad_paths_fail_in_one_line(tmp_path):
    fp16 = tmp_path / "fp16.safetensors"
    quantize_file(SHIPPED, fp16, "fp16")
    with pytest.raises(EdgeViTError, match="supports fp32, int8 and w8a8 weights, not fp16"):
        export.export(fp16, tmp_path / "out")
    (tmp_path / "file").write_text("")
    done = subprocess.run(
        [ROOT / ".venv" / "bin" / "python", ROOT / "tools" / "export.py", SHIPPED, "-o", tmp_path / "file"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"export.py: error: {tmp_path / 'file'} exists and is not a directory"


HARNESS = r"""
#include <stdio.h>
#include "edgevit_model.h"
int main(void) {
  static float pixels[2 * EDGEVIT_PIXELS], probs[2 * EDGEVIT_NUM_CLASSES], attention[2 * EDGEVIT_ATTENTION_SIZE];
  printf("%d %d %d %d %d\n", edgevit_classify_pixels(NULL, probs, NULL), edgevit_classify_pixels(pixels, NULL, NULL),
         edgevit_classify_many(pixels, -1, probs, NULL), edgevit_classify_many(pixels, 2, probs, NULL),
         edgevit_classify_pixels(pixels, probs, attention));
  return 0;
}
"""


def test_entry_points_say_what_went_wrong(exported, tmp_path):
    _, directory, _ = exported["int8"]
    (tmp_path / "harness.c").write_text(HARNESS)
    program = tmp_path / "harness"
    compile_c("gcc", program, tmp_path / "harness.c", directory / "edgevit_model.c", flags=[f"-I{directory}"], extra=["-lm"])
    out = subprocess.run([program], capture_output=True, text=True, check=True).stdout.split()
    assert out[:4] == ["-1", "-1", "-1", "2"]  # NULLs and a negative count refused; many returns how many it did
    assert 0 <= int(out[4]) <= NOT_A_DIGIT


def test_generated_c_reads_like_a_program(exported):
    _, directory, result = exported["int8"]
    source = (directory / "edgevit_model.c").read_text()
    header = (directory / "edgevit_model.h").read_text()
    forward = source[source.index("static void edgevit_forward(void) {") :]
    forward = forward[: forward.index("\n}\n")]
    calls = [line for line in forward.splitlines() if line.startswith("  edgevit_k")]
    assert len(calls) == result.steps
    assert all(re.search(r"\); /\* \S.* \*/$", line) for line in calls)  # every call names what it computes
    assert "/* blocks.0.attn.query */" in forward and "/* blocks.3.mlp.fc2 */" in forward
    assert "  float *const blocks_0_attn_query = edgevit_arena_float + " in forward  # activations are named
    assert "E_ kernels are elementwise" in source and "r_ kernels reduce" in source  # the legend
    assert '#ifdef __cplusplus\nextern "C" {' in header
    stack = int(re.search(r"#define EDGEVIT_STACK_BYTES (\d+)", header).group(1))
    assert stack == result.stack_bytes and 0 < stack < 4096


@pytest.mark.slow
def test_export_without_attention_saves_its_ram_and_still_classifies(tiny_weights, mnist, tmp_path):
    full = export.export(tiny_weights, tmp_path / "full")
    lean = export.export(tiny_weights, tmp_path / "lean", attention=False)
    saved = full.ram_bytes - lean.ram_bytes
    assert saved >= 2 * 2 * 17 * 17 * 4  # at least the maps themselves (depth 2, heads 2, 17 x 17 floats), as the header says
    header = (tmp_path / "lean" / "edgevit_model.h").read_text()
    maps = 2 * 2 * 17 * 17 * 4
    assert (
        "#define EDGEVIT_HAS_ATTENTION 0" in header
        and f"exported without the attention maps: at least {maps} bytes less" in header
    )
    subprocess.run(["make", "-s", "-C", str(tmp_path / "lean")], check=True, capture_output=True)
    pgms = []
    for i, image in enumerate(mnist.test.images[:20]):
        pgms.append(tmp_path / f"{i}.pgm")
        pgms[-1].write_bytes(b"P5 28 28 255\n" + image.tobytes())
    lines = subprocess.run(
        [tmp_path / "lean" / "edgevit", *pgms], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    expected = Classifier(tiny_weights, cache_dir=None).predict(mnist.test.images[:20].astype(np.float32)).probs.argmax(1)
    assert read_answers(lines).tolist() == expected.tolist()
    (tmp_path / "harness.c").write_text(HARNESS)
    program = tmp_path / "harness"
    compile_c(
        "gcc",
        program,
        tmp_path / "harness.c",
        tmp_path / "lean" / "edgevit_model.c",
        flags=[f"-I{tmp_path / 'lean'}"],
        extra=["-lm"],
    )
    assert subprocess.run([program], capture_output=True, text=True, check=True).stdout.split()[4] == "-2"


@pytest.mark.parametrize("by", ["likeliest class", "class threshold"])
def test_the_c_rule_answers_like_python_for_both_reasons(mnist, tmp_path, by):
    """A small 11-class model whose rule rejects by its class (the likeliest, or over a threshold) on
    some images and by the digit threshold on others: main.c gives edgevit.answer's answers and
    confidences on every one."""
    from dataclasses import asdict

    from tinygrad import Tensor
    from tinygrad.nn.state import get_state_dict

    from edgevit import weights
    from edgevit.answer import DIGITS
    from edgevit.model import ViT, ViTConfig

    config = ViTConfig(dim=16, depth=2, heads=2, mlp_dim=32, num_classes=DIGITS + 1)
    images = np.concatenate([mnist.test.images[:100], np.clip(np.rint(load_negatives().images[:100]), 0, 255)])
    images = images.astype(np.uint8)

    def save(bias: float, threshold: float, class_threshold: float | None = None) -> Path:
        Tensor.manual_seed(3)
        model = ViT(config)
        model.head.bias = Tensor([0.0] * DIGITS + [bias])
        path = tmp_path / f"rule-{bias:.3f}-{threshold:.3f}-{class_threshold}.safetensors"
        rule = {"class": DIGITS, "threshold": threshold} | ({"class_threshold": class_threshold} if class_threshold else {})
        weights.save(
            path,
            get_state_dict(model),
            {"config": asdict(config), "preprocess": {"mean": 0.1307, "std": 0.3081}, "reject": rule},
        )
        return path

    # the untrained model's own margins place the bias and the thresholds inside its outputs
    probs = Classifier(save(0.0, 0.0), cache_dir=None).predict(images.astype(np.float32)).probs
    margin = np.log(probs[:, :DIGITS].max(1)) - np.log(probs[:, DIGITS])
    bias, threshold = float(np.quantile(margin, 0.3)), float(np.quantile(probs[:, :DIGITS].max(1), 0.4))
    path = save(bias, threshold)
    if by == "class threshold":
        shifted = Classifier(path, cache_dir=None).predict(images.astype(np.float32)).probs
        path = save(bias, threshold, float(np.quantile(shifted[:, DIGITS], 0.8)))
    probs = Classifier(path, cache_dir=None).predict(images.astype(np.float32)).probs
    said = [answer(p, reject_rule(path)) for p in probs]
    reasons = {a.reason.split(":")[0] for a in said if a.digit is None}
    assert reasons == {"class", "low confidence"} and any(a.digit is not None for a in said)

    export.export(path, tmp_path / "c")
    subprocess.run(["make", "-s", "-C", str(tmp_path / "c"), "edgevit"], check=True, capture_output=True)
    pgms = []
    for i, image in enumerate(images):
        pgms.append(tmp_path / f"{i}.pgm")
        pgms[-1].write_bytes(b"P5 28 28 255\n" + image.tobytes())
    lines = subprocess.run([tmp_path / "c" / "edgevit", *pgms], capture_output=True, text=True, check=True).stdout
    lines = lines.splitlines()
    np.testing.assert_array_equal(read_answers(lines), answers(probs, reject_rule(path)))
    printed = np.array([float(line.split()[-2]) for line in lines])  # 4 decimals
    np.testing.assert_allclose(printed, [a.confidence for a in said], atol=5e-5 + 1e-6)


def test_the_library_is_tuned_with_the_flag_this_compiler_takes_on_each_architecture(tmp_path):
    """Debian's clang on arm64 (a Raspberry Pi) refuses -march=native: Arm gets -mcpu=native, plus
    dotprod where the kernel says the CPU has it (clang 14 under qemu-user, or on a CPU part it does not
    know, would leave it out, and the w8a8 products would miss sdot)."""
    from edgevit.export import build

    assert [build.native_flag(m, set()) for m in ("x86_64", "AMD64", "aarch64", "arm64", "armv7l")] == [
        "-march=native",
        "-march=native",
        "-mcpu=native",
        "-mcpu=native",
        "-mcpu=native",
    ]
    # a Raspberry Pi 5 (Cortex-A76) and qemu's 'max' CPU have asimddp, a Pi 4 (Cortex-A72) has not;
    # 32-bit Arm's feature bits are not asked, and x86 never takes them
    assert [build.native_flag(m, {"asimd", "asimddp"}) for m in ("aarch64", "arm64", "armv7l", "x86_64")] == [
        "-mcpu=native+dotprod",
        "-mcpu=native+dotprod",
        "-mcpu=native",
        "-march=native",
    ]
    assert build.native_flag("aarch64", {"fp", "asimd", "crc32"}) == "-mcpu=native"
    if build.platform.machine() not in build.ARM64_MACHINES:
        assert build.arm64_features() == set()  # another machine's HWCAP bits mean other things
    source = tmp_path / "one.c"
    source.write_text("float one(float x) { return x + 1.0f; }\n")
    build.compile_library(source, tmp_path / "libone.so")  # this machine's compiler takes this machine's flag
    assert (tmp_path / "libone.so").stat().st_size > 0


W8A8 = ROOT / "weights" / "edgevit-mnist-w8a8.safetensors"
VNNI_RUN = """
import sys, numpy as np
from edgevit.runtime import Classifier
clf = Classifier(sys.argv[1], cache_dir=sys.argv[2], runtime="c", beam=0)
np.save(sys.argv[3], clf.predict(np.load(sys.argv[4])).probs)
print(clf.backend.compiled().int8_path)
"""


def test_c_runtime_names_its_int8_path_and_gives_the_same_bits_on_vpdpbusd(mnist, tmp_path):
    """Big batches put the w8a8 products on AMX where this CPU has it; EDGEVIT_INT8=vnni keeps them on
    vpdpbusd: the int32 sums are exact on both, so the probabilities are the same to the bit."""
    images = mnist.test.images[:64].astype(np.float32)  # 16 images a call: 272 rows, AMX's size
    clf = Classifier(W8A8, cache_dir=tmp_path / "cache", runtime="c", beam=0)
    probs = clf.predict(images).probs
    assert clf.backend.compiled().int8_path == native_int8_path()
    assert Classifier(SHIPPED, cache_dir=tmp_path / "cache", runtime="c", beam=0).backend.compiled().int8_path is None
    np.save(tmp_path / "images.npy", images)
    env = {**os.environ, "EDGEVIT_INT8": "vnni"}
    args = [str(W8A8), str(tmp_path / "cache"), str(tmp_path / "vnni.npy"), str(tmp_path / "images.npy")]
    done = subprocess.run([sys.executable, "-c", VNNI_RUN, *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == native_int8_path().replace("tdpbssd (AMX-INT8)", "vpdpbusd (AVX512-VNNI)")
    np.testing.assert_array_equal(np.load(tmp_path / "vnni.npy"), probs)
