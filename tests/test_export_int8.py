"""edgevit.export.int8: the packed weight order, `edgevit_gemm_s8` bit for bit against numpy's int32
product on every path it has (x86 AMX and AVX512-VNNI where this CPU has them, plain C99, ARMv8.2
dotprod and plain ARMv8 under qemu), the instructions each path compiles to, and the w8a8 export
wired through it."""

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SHIPPED, native_int8_path

from edgevit.export import export, int8
from edgevit.export.build import LIBRARY_CFLAGS, native_flag
from edgevit.export.render import template
from edgevit.export.wasm import CFLAGS, LDFLAGS, SIMD_FLAGS, find_toolchain
from edgevit.measure import cpu_flags
from edgevit.quantize import quantize_file

# (M, K, N): one image's shapes (17 tokens; K 49 is the patch embedding, a short last group), row tails
# of every length, 256 images' worth of rows, and for AMX's tiles: K with and without a tail of 64,
# outputs in 1 to 4 blocks of 16 beyond the 64s, rows in several blocks of 16 and a tail
SHAPES = [(17, 64, 64), (17, 64, 144), (17, 144, 64), (16, 49, 64), (1, 64, 16), (2, 3, 32), (3, 130, 48), (4352, 64, 64)]
SHAPES += [(4352, 144, 64), (4352, 64, 144), (80, 128, 112), (127, 4, 96), (64, 8, 16), (99, 196, 80)]
HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
int main(void) {
  int M, K, N, got;
  signed char *x, *w;
  int *colsum, *out;
  if (fread(&M, 4, 1, stdin) + fread(&K, 4, 1, stdin) + fread(&N, 4, 1, stdin) != 3) return 2;
  x = malloc((size_t)M * K); w = malloc((size_t)(K + 3) / 4 * 4 * N);
  colsum = malloc(sizeof(int) * N); out = malloc(sizeof(int) * (size_t)M * N);
  got = (int)fread(x, 1, (size_t)M * K, stdin) + (int)fread(w, 1, (size_t)(K + 3) / 4 * 4 * N, stdin);
  got += (int)fread(colsum, sizeof(int), N, stdin);
  if (got != M * K + (K + 3) / 4 * 4 * N + N) return 3;
  edgevit_gemm_s8(out, x, w, colsum, M, K, N);
  fwrite(out, sizeof(int), (size_t)M * N, stdout);
  fprintf(stderr, "%s\n", edgevit_int8_path());
  return 0;
}
"""
QEMU_AARCH64 = ["qemu-aarch64-static", "-L", "/usr/aarch64-linux-gnu"]


def has_vnni() -> bool:
    return "avx512_vnni" in cpu_flags()


def has_amx() -> bool:
    return native_int8_path() == "tdpbssd (AMX-INT8)"


def build(tmp_path: Path, compiler: list[str], name: str) -> Path:
    source = tmp_path / "gemm.c"
    source.write_text("#include <stddef.h>\n" + template(int8.SUPPORT) + HARNESS)
    program = tmp_path / name
    cmd = [*compiler, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(program), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return program


def problem(rng: np.random.Generator, m: int, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)  # -128 too: the u8 offset must reach 0
    w = rng.integers(-127, 128, (k, n), dtype=np.int8)
    x[0, :] = -128  # the extremes, where an int16 or saturating sum would go wrong
    w[:, 0] = -127
    if m > 1:
        x[1, :] = 127
    return x, w


def run_gemm(program: Path, x: np.ndarray, w: np.ndarray, runner=(), env=None) -> tuple[np.ndarray, str]:
    (m, k), n = x.shape, w.shape[1]
    colsum = w.sum(0, dtype=np.int32)
    stdin = np.int32([m, k, n]).tobytes() + x.tobytes() + int8.pack(w).tobytes() + colsum.tobytes()
    done = subprocess.run([*runner, str(program)], input=stdin, capture_output=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return np.frombuffer(done.stdout, np.int32).reshape(m, n), done.stderr.decode().strip()


def assert_exact(program: Path, path: str, runner=(), env=None) -> None:
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        x, w = problem(rng, m, k, n)
        got, said = run_gemm(program, x, w, runner, env)
        assert said == path
        np.testing.assert_array_equal(got, x.astype(np.int32) @ w.astype(np.int32), err_msg=f"{m}x{k}x{n}")


def instructions(objdump: str, program: Path) -> str:
    done = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(program)], capture_output=True, text=True, check=True)
    return done.stdout


def test_pack_puts_each_outputs_four_inputs_in_one_lane():
    w = np.arange(6 * 3, dtype=np.int8).reshape(6, 3)  # K 6: a short last group, padded with zeros
    packed = int8.pack(w)
    assert packed.shape == (2 * 3 * 4,)
    for k in range(8):
        for n in range(3):
            assert packed[((k // 4) * 3 + n) * 4 + k % 4] == (w[k, n] if k < 6 else 0)


@pytest.mark.parametrize("compiler", ["clang", "gcc"])
def test_native_build_is_exact_and_uses_amx_or_vpdpbusd_where_the_cpu_has_them(tmp_path, compiler):
    program = build(tmp_path, [compiler, "-march=native"], "gemm")
    assert_exact(program, native_int8_path())
    listing = instructions("objdump", program)
    if has_vnni():
        assert len(re.findall(r"\bvpdpbusd\b", listing)) >= 16
    if has_amx():
        assert len(re.findall(r"\btdpbssd\b", listing)) >= 8 and "ldtilecfg" in listing and "tilerelease" in listing


@pytest.mark.parametrize("compiler", ["clang", "gcc"])
def test_runtime_library_is_exact_with_each_compiler(tmp_path, compiler):
    """The library the tinygrad runtime's replay loads (a function per shape, called from outside, so
    nothing is inlined into a caller), built as edgevit.export.build builds it, by each compiler."""
    source, library = tmp_path / "int8.c", tmp_path / "int8.so"
    source.write_text(int8.library_source(sorted({(k, n) for _, k, n in SHAPES})))
    cmd = [compiler, *LIBRARY_CFLAGS, native_flag(), "-Wall", "-Wextra", "-Werror", "-o", str(library), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lib = ctypes.CDLL(str(library))
    assert int8.int8_path(lib) == native_int8_path()
    rng = np.random.default_rng(1)
    for m, k, n in SHAPES:
        x, w = problem(rng, m, k, n)
        packed, colsum, out = int8.pack(w), w.sum(0, dtype=np.int32), np.zeros((m, n), np.int32)
        getattr(lib, int8.kernel_name(k, n))(*(a.ctypes.data_as(ctypes.c_void_p) for a in (out, x, packed, colsum)), m)
        np.testing.assert_array_equal(out, x.astype(np.int32) @ w.astype(np.int32), err_msg=f"{compiler} {m}x{k}x{n}")


@pytest.mark.skipif(not has_amx(), reason="this CPU has no AMX: the path is not built")
def test_amx_build_keeps_vpdpbusd_when_told_and_without_amx_code(tmp_path):
    program = build(tmp_path, ["clang", "-march=native"], "gemm")
    assert_exact(program, "vpdpbusd (AVX512-VNNI)", env={**os.environ, "EDGEVIT_INT8": "vnni"})
    program = build(tmp_path, ["clang", "-march=native", "-DEDGEVIT_NO_AMX"], "gemm-no-amx")
    assert_exact(program, "vpdpbusd (AVX512-VNNI)")
    assert "tdpbssd" not in instructions("objdump", program)


def test_plain_c_path_is_exact_without_dot_product_instructions(tmp_path):
    program = build(tmp_path, ["clang", "-march=x86-64-v3"], "gemm-avx2")  # AVX2, no VNNI
    assert_exact(program, "plain C")
    assert "vpdpbusd" not in instructions("objdump", program)


@pytest.mark.devices
@pytest.mark.parametrize(
    ("march", "path", "sdot"), [("armv8.2-a+dotprod", "sdot (ARMv8.2 dotprod)", True), ("armv8-a", "plain C", False)]
)
def test_aarch64_builds_are_exact_under_qemu_and_dotprod_uses_sdot(tmp_path, march, path, sdot):
    for tool in ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-objdump", QEMU_AARCH64[0]):
        assert shutil.which(tool), f"{tool} missing: make test-devices installs it"
    program = build(tmp_path, ["aarch64-linux-gnu-gcc", f"-march={march}"], "gemm-arm64")
    assert_exact(program, path, QEMU_AARCH64)
    count = len(re.findall(r"\bsdot\b", instructions("aarch64-linux-gnu-objdump", program)))
    assert count >= 4 if sdot else count == 0


@pytest.fixture(scope="module")
def w8a8_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("w8a8")
    quantize_file(SHIPPED, tmp / "w8a8.safetensors", "w8a8", calibration=64)
    export(tmp / "w8a8.safetensors", tmp / "c")
    return (tmp / "c" / "edgevit_model.c").read_text()


def test_w8a8_export_runs_every_product_with_a_tile_through_edgevit_gemm_s8(w8a8_export):
    calls = re.findall(r"^  (edgevit_\w+)\(.*/\* (\S+) \*/$", w8a8_export, re.M)
    products = {layer: kernel for kernel, layer in calls if kernel.startswith("edgevit_gemm_s8_")}
    depth = 4
    expected = {"embed.proj"} | {
        f"blocks.{i}.{part}" for i in range(depth) for part in ("attn.query", "attn.key", "attn.value", "attn.proj")
    }
    expected |= {f"blocks.{i}.mlp.{fc}" for i in range(depth) for fc in ("fc1", "fc2")}
    assert set(products) == expected  # the 11-class head does not fill a 16-wide tile: tinygrad's kernel
    assert products["embed.proj"] == "edgevit_gemm_s8_16x49x64"
    assert "edgevit_head_weight_t" in w8a8_export and "edgevit_blocks_0_mlp_fc1_weight_t" not in w8a8_export
    assert "static const int edgevit_blocks_0_mlp_fc1_colsum[144]" in w8a8_export


def test_w8a8_export_quantizes_each_input_in_the_pass_that_makes_it(w8a8_export):
    """Fewer passes over memory: each block's LayerNorm writes int8 (the quantize fused in), read by all
    three of Q, K and V; fc1's epilogue (scale, bias, GELU, requantize) is one step before fc2."""
    steps = [
        (kernel, args.split(", "), layer)
        for kernel, args, layer in re.findall(r"^  (edgevit_\w+)\((.*)\); /\* ([^*]+) \*/$", w8a8_export, re.M)
    ]
    writer = {args[0]: (i, layer) for i, (_, args, layer) in enumerate(steps)}
    reads = {layer: (i, args[1]) for i, (kernel, args, layer) in enumerate(steps) if kernel.startswith("edgevit_gemm_s8_")}
    for block in range(4):
        inputs = {reads[f"blocks.{block}.attn.{p}"][1] for p in ("query", "key", "value")}
        assert len(inputs) == 1
        assert writer[inputs.pop()][1] == f"blocks.{block}.ln1"
        fc1, fc2 = reads[f"blocks.{block}.mlp.fc1"], reads[f"blocks.{block}.mlp.fc2"]
        assert writer[fc2[1]][0] == fc1[0] + 1 == fc2[0] - 1


def test_float_weights_export_without_the_int8_kernels(tiny_weights, tmp_path):
    export(tiny_weights, tmp_path)  # fp32 computes in float: no int8 product to swap
    text = (tmp_path / "edgevit_model.c").read_text()
    assert "edgevit_gemm_s8" not in text and "@SUPPORT_C@" not in text


WASM_HARNESS = r"""
/* the module's memory holds x, w and colsum at the addresses the test writes them to */
void gemm(int *out, const signed char *x, const signed char *w, const int *colsum, int M, int K, int N) {
  edgevit_gemm_s8(out, x, w, colsum, M, K, N);
}
"""


@pytest.mark.parametrize(("simd", "path"), [(True, "i32x4.dot_i16x8_s (WebAssembly SIMD)"), (False, "plain C")])
def test_webassembly_builds_are_exact_and_simd_uses_the_int16_dot_product(tmp_path, simd, path):
    """The explorer's path, run by wasmtime (no browser): the module as build_wasm compiles it."""
    wasmtime = pytest.importorskip("wasmtime", reason="wasmtime is in the [dev] extra")
    compiler, linker = find_toolchain()
    source, module = tmp_path / "gemm.c", tmp_path / "gemm.wasm"
    source.write_text("#include <stddef.h>\n" + template(int8.SUPPORT) + WASM_HARNESS)
    exports = ("gemm", "edgevit_int8_path")
    cmd = [compiler, f"-fuse-ld={linker}", *CFLAGS, *(SIMD_FLAGS if simd else ()), *LDFLAGS, "-Werror", "-o", str(module)]
    cmd += [*(f"-Wl,--export={name}" for name in exports), "-Wl,--initial-memory=16777216", str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    store = wasmtime.Store()
    instance = wasmtime.Instance(store, wasmtime.Module.from_file(store.engine, str(module)), [])
    memory, gemm = instance.exports(store)["memory"], instance.exports(store)["gemm"]
    said = instance.exports(store)["edgevit_int8_path"](store)
    assert memory.read(store, said, said + len(path) + 1) == path.encode() + b"\0"
    rng = np.random.default_rng(0)
    for m, k, n in SHAPES:
        x, w = problem(rng, m, k, n)
        packed, colsum = int8.pack(w), w.sum(0, dtype=np.int32)
        base = 1 << 20  # above the module's own data and stack
        at = {"x": base, "w": base + x.nbytes, "colsum": base + x.nbytes + packed.nbytes}
        at["out"] = at["colsum"] + colsum.nbytes
        for name, data in (("x", x), ("w", packed), ("colsum", colsum)):
            memory.write(store, data.tobytes(), at[name])
        gemm(store, at["out"], at["x"], at["w"], at["colsum"], m, k, n)
        got = np.frombuffer(memory.read(store, at["out"], at["out"] + m * n * 4), np.int32).reshape(m, n)
        np.testing.assert_array_equal(got, x.astype(np.int32) @ w.astype(np.int32), err_msg=f"{m}x{k}x{n}")
    listing = module.read_bytes()
    assert (b"\xfd\xba\x01" in listing) == simd  # i32x4.dot_i16x8_s's opcode (0xfd 186, LEB128)
