"""The C export on Arm, emulated: 64-bit Arm Linux under qemu-aarch64-static, and the bare-metal program
`tools/export.py --board` writes, on QEMU's Cortex-M4F (mps2-an386) and Cortex-M7 (mps2-an500) boards.
Both against the Python runtime on MNIST test images. `make test-devices` installs the cross compilers
and QEMU; a missing one fails these tests with the package to install, it never skips them."""

import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHIPPED, reject_rule

from edgevit.answer import NOT_A_DIGIT, answer, answers
from edgevit.data import load_negatives
from edgevit.errors import EdgeViTError
from edgevit.export import boards
from edgevit.quantize import quantize_file
from edgevit.runtime import Classifier

pytestmark = pytest.mark.devices

WEIGHTS = {"fp32": SHIPPED, "int8": ROOT / "weights" / "edgevit-mnist-int8.safetensors"}
LINUX_IMAGES = 1000
NEGATIVES = 300  # held-out non-digits after the MNIST images, 50 of each kind: where "not a digit" is decided
BOARD_IMAGES = 10
LINUX_ATOL = 1e-4  # another compiler and libm than tinygrad's clang: float32 rounding, measured about 1e-6
BOARD_ATOL = 1e-5  # newlib's exp2f and the Cortex-M FPU, measured about 1e-7
PRINTED_DECIMALS = 6  # the board prints each digit's probability with 6 decimals
# (scheme, board, extra export flags); every board gets int8, one gets fp32, and --no-attention is covered
BOARD_EXPORTS = [
    ("int8", "mps2-an386", ()),
    ("int8", "mps2-an500", ("--no-attention", "--damaged-test-images")),  # damaged digits, as the held-out set has them
    ("fp32", "mps2-an386", ()),
]
RESULT_LINE = re.compile(r"^(\d+) (\d+) (\d\.\d{6})$")
SIZE_LINE = re.compile(r"^size flash=\d+ ram=\d+ stack_reserved=\d+ stack_peak=\d+ model_weights=\d+ model_ram=\d+$")


def export_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "export.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )


@pytest.fixture(scope="module")
def images(mnist, degraded):
    """The first LINUX_IMAGES test images, damaged test digits, then NEGATIVES non-digits, as whole
    pixels (the C input is bytes)."""
    negatives = np.clip(np.rint(load_negatives().images[:NEGATIVES]), 0, 255).astype(np.uint8)
    return np.concatenate([mnist.test.images[:LINUX_IMAGES], degraded, negatives])


@pytest.fixture(scope="module")
def python_probs(images):
    """The Python runtime's probabilities for `images`, per scheme."""
    return {scheme: Classifier(path, cache_dir=None, device="CPU").predict(images).probs for scheme, path in WEIGHTS.items()}


@pytest.fixture(scope="module")
def board_dirs(tmp_path_factory):
    """Each of BOARD_EXPORTS written by the command line, as the README says."""
    dirs = {}
    for scheme, board, flags in BOARD_EXPORTS:
        out = tmp_path_factory.mktemp(f"{scheme}-{board}")
        done = export_cli(WEIGHTS[scheme], "-o", out, "--board", board, "--test-images", BOARD_IMAGES, *flags)
        assert done.returncode == 0, done.stderr
        dirs[scheme, board] = out
    return dirs


def test_the_device_tools_are_installed():
    boards.require(boards.BOARD_TOOLS)
    boards.require_newlib()
    boards.require((boards.AARCH64.compiler, boards.Tool(boards.AARCH64.emulator[0], boards.AARCH64.emulator_package)))


@pytest.mark.parametrize("scheme", ["int8", "fp32"])
def test_aarch64_linux_classifies_like_x86_and_the_python_runtime(board_dirs, python_probs, images, scheme):
    model_dir = board_dirs[scheme, "mps2-an386"]  # an export with a board program is still the plain export
    arm_digits, arm_probs = boards.classify_linux(model_dir, images, boards.AARCH64)
    x86_digits, x86_probs = boards.classify_linux(model_dir, images, boards.HOST)
    expected = python_probs[scheme]
    np.testing.assert_array_equal(arm_digits, x86_digits)
    np.testing.assert_array_equal(arm_digits, answers(expected, reject_rule(WEIGHTS[scheme])))
    assert (arm_digits[-NEGATIVES:] == NOT_A_DIGIT).mean() > 0.5  # the rule decided, on Arm as in Python
    np.testing.assert_allclose(arm_probs, expected, rtol=0, atol=LINUX_ATOL)
    np.testing.assert_allclose(arm_probs, x86_probs, rtol=0, atol=LINUX_ATOL)


@pytest.mark.parametrize(("scheme", "board", "flags"), BOARD_EXPORTS)
def test_the_board_program_classifies_like_the_python_runtime(board_dirs, python_probs, scheme, board, flags):
    board_dir = board_dirs[scheme, board]
    expected = python_probs[scheme][:BOARD_IMAGES]
    if "--damaged-test-images" in flags:
        from edgevit.cli.export import test_images

        damaged = test_images(BOARD_IMAGES, damaged=True)[0].astype(np.float32)
        expected = Classifier(WEIGHTS[scheme], cache_dir=None, device="CPU").predict(damaged).probs
    said = [answer(p, reject_rule(WEIGHTS[scheme])) for p in expected]
    digits = [NOT_A_DIGIT if a.digit is None else a.digit for a in said]

    # the documented command, as a person runs it: one line per image, then the sizes
    done = subprocess.run(["make", "-s", "-C", str(board_dir), "run"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    printed = [RESULT_LINE.match(line) for line in lines[:BOARD_IMAGES]]
    assert all(printed), lines
    assert [int(m.group(1)) for m in printed] == list(range(BOARD_IMAGES))
    np.testing.assert_array_equal([int(m.group(2)) for m in printed], digits)
    shown = np.array([float(m.group(3)) for m in printed])
    confidence = [a.confidence for a in said]
    np.testing.assert_allclose(shown, confidence, rtol=0, atol=BOARD_ATOL + 0.5 * 10**-PRINTED_DECIMALS)
    assert SIZE_LINE.match(lines[BOARD_IMAGES]), lines

    # every probability, bit for bit as the board computed it, and QEMU's instruction counts
    run = boards.run_board(board_dir, count=True)
    np.testing.assert_array_equal(run.digits, digits)
    np.testing.assert_allclose(run.probs, expected, rtol=0, atol=BOARD_ATOL)
    assert len(run.instructions) == BOARD_IMAGES and min(run.instructions) > 0
    assert run.sizes["model_weights"] < run.sizes["flash"] <= boards.BOARDS[board].flash_bytes
    assert 0 < run.sizes["stack_peak"] < run.sizes["stack_reserved"]


def test_the_compilers_stack_bound_covers_the_measured_peak(board_dirs):
    board_dir = board_dirs["fp32", "mps2-an386"]
    bound = boards.board_stack(board_dir)
    assert bound.bounded, bound.chain
    peak = boards.run_board(board_dir, exact=False).sizes["stack_peak"]
    assert peak <= bound.bytes < boards.STACK_RESERVE
    model = boards.board_stack(board_dir, root="edgevit_classify")
    assert 0 < model.bytes < bound.bytes
    sizes = boards.board_size(board_dir)
    assert sizes["model_flash"] < sizes["flash"] and sizes["model_ram"] < sizes["ram"]


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stdout == "", done.stdout
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_an_unknown_board_is_one_line(tmp_path):
    error = one_line_error(export_cli(WEIGHTS["int8"], "-o", tmp_path / "out", "--board", "mps2-an999"))
    assert "unknown board 'mps2-an999'" in error and "mps2-an386" in error and "mps2-an500" in error
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_scheme_the_c_export_refuses_is_one_line_with_a_board(tmp_path):
    fp16 = tmp_path / "fp16.safetensors"
    quantize_file(SHIPPED, fp16, "fp16")
    error = one_line_error(export_cli(fp16, "-o", tmp_path / "out", "--board", "mps2-an386"))
    assert "not fp16" in error


def test_a_bad_image_count_is_one_line(tmp_path):
    error = one_line_error(export_cli(WEIGHTS["int8"], "-o", tmp_path / "out", "--board", "mps2-an386", "--test-images", "0"))
    assert "--test-images" in error


def test_a_model_too_big_for_the_board_is_one_line():
    board = boards.BOARDS["mps2-an386"]
    with pytest.raises(EdgeViTError) as flash:
        boards.check_fits(board, weights_bytes=board.flash_bytes, ram_bytes=64_000, images=BOARD_IMAGES)
    with pytest.raises(EdgeViTError) as ram:
        boards.check_fits(board, weights_bytes=160_000, ram_bytes=board.ram_bytes, images=BOARD_IMAGES)
    for error, memory in ((flash, "flash"), (ram, "RAM")):
        assert "\n" not in str(error.value) and f"bytes of {memory} needed" in str(error.value)


def test_the_test_images_header_holds_the_images_row_by_row(mnist):
    images, labels = mnist.test.images[:2], mnist.test.labels[:2]
    header = boards.images_header(images, labels)
    assert "#define EDGEVIT_TEST_IMAGES 2" in header and f"/* 1: label {labels[1]} */" in header
    body = header[header.index("] = {") : header.index("};")]
    rows = re.findall(r"^\s+([\d ,]+),$", body, re.MULTILINE)
    values = [int(v) for row in rows for v in row.split(",")]
    np.testing.assert_array_equal(np.array(values).reshape(images.shape), images)
    with pytest.raises(EdgeViTError):
        boards.images_header(images.astype(np.float32) + 0.5, labels)
