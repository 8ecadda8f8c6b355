"""The WebAssembly build and its math.h shim, without a browser: exp2f's accuracy, the module's
imports and exports. Needs clang and wasm-ld (`make setup` installs clang-19 and lld-19 as root)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from edgevit.errors import EdgeViTError
from edgevit.export.wasm import EXPORTS, SHIM, build_wasm, find_toolchain

WASM_SECTION_IMPORT, WASM_SECTION_EXPORT = 2, 7
EXP2F_SAMPLES = 1_000_003  # spread over the whole range where exp2f is neither 0 nor infinity
# a stand-in for an exported model: the header's macros and every math.h name the real export uses
FAKE_HEADER = """#include <stdint.h>
#define EDGEVIT_PIXELS 784
#define EDGEVIT_NUM_CLASSES 10
#define EDGEVIT_ATTENTION_SIZE 4624
#define EDGEVIT_NOT_A_DIGIT 10
int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention);
int edgevit_answer(const float probs[EDGEVIT_NUM_CLASSES], float *confidence);
"""
FAKE_MODEL = """#include <math.h>
#include <stddef.h>
#include "edgevit_model.h"
int edgevit_classify_pixels(const float pixels[EDGEVIT_PIXELS], float probs[EDGEVIT_NUM_CLASSES], float *attention) {
  int i;
  for (i = 0; i < EDGEVIT_NUM_CLASSES; i++) probs[i] = exp2f(-pixels[i]) + sqrtf(pixels[i]) + truncf(pixels[i]);
  if (attention != NULL) attention[0] = pixels[0] > 0 ? INFINITY : NAN;
  return 0;
}
int edgevit_answer(const float probs[EDGEVIT_NUM_CLASSES], float *confidence) {
  if (confidence != NULL) *confidence = probs[0];
  return 0;
}
"""
EXP2F_CHECK = r"""#include <stdio.h>
#include <stdlib.h>
#include "%s/math.h"
#undef exp2f
float exp2f(float); /* glibc's, from -lm */
int main(int argc, char **argv) {
  long n = atol(argv[1]), i, worst = 0;
  for (i = 0; i < n; i++) {
    float x = -150.0f + 278.0f * (float)i / (float)n;
    union { float f; int i; } ours = { edgevit_exp2f(x) }, libm = { exp2f(x) };
    long ulps = labs((long)ours.i - (long)libm.i);
    if (ulps > worst) worst = ulps;
  }
  printf("%%ld\n", worst);
  return 0;
}
"""


def leb128(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def sections(module: bytes) -> dict[int, bytes]:
    """A WebAssembly binary's sections by id (custom sections, id 0, overwrite each other: unused here)."""
    assert module[:4] == b"\0asm", "not a WebAssembly module"
    found, pos = {}, 8
    while pos < len(module):
        section, pos = module[pos], pos + 1
        size, pos = leb128(module, pos)
        found[section] = module[pos : pos + size]
        pos += size
    return found


def export_names(payload: bytes) -> set[str]:
    count, pos = leb128(payload, 0)
    names = set()
    for _ in range(count):
        length, pos = leb128(payload, pos)
        names.add(payload[pos : pos + length].decode())
        pos += length + 1  # the kind byte
        _, pos = leb128(payload, pos)  # the index
    return names


def test_module_imports_nothing_and_exports_what_the_page_calls(tmp_path):
    (tmp_path / "edgevit_model.h").write_text(FAKE_HEADER)
    (tmp_path / "edgevit_model.c").write_text(FAKE_MODEL)
    found = sections(build_wasm(tmp_path / "edgevit_model.c", tmp_path / "out" / "m.wasm").read_bytes())
    assert WASM_SECTION_IMPORT not in found  # exp2f is compiled in, not imported from JavaScript
    assert export_names(found[WASM_SECTION_EXPORT]) == {"memory", *EXPORTS}


def test_compile_errors_name_the_file_and_leave_no_output(tmp_path):
    (tmp_path / "edgevit_model.h").write_text(FAKE_HEADER)
    (tmp_path / "edgevit_model.c").write_text(FAKE_MODEL.replace("return 0;", "return undeclared;"))
    with pytest.raises(EdgeViTError, match="undeclared"):
        build_wasm(tmp_path / "edgevit_model.c", tmp_path / "m.wasm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgevit_model.c", "edgevit_model.h"]


def test_shim_exp2f_is_within_one_ulp_of_libm(tmp_path):
    source = tmp_path / "check.c"
    source.write_text(EXP2F_CHECK % SHIM)
    subprocess.run(["cc", "-std=c99", "-O2", "-o", tmp_path / "check", source, "-lm"], check=True)
    worst = int(subprocess.run([tmp_path / "check", str(EXP2F_SAMPLES)], capture_output=True, text=True).stdout)
    assert worst <= 1


def c_float(x: float) -> str:
    """A float as a C expression; the specials through the shim's own macros."""
    if np.isnan(x):
        return "NAN"
    if np.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return f"{x!r}f"


def test_shim_exp2f_edges_match_ieee(tmp_path):
    """Overflow, underflow, subnormals and NaN, checked against exp2 in double rounded to float."""
    xs = np.float32([128.0, 200.0, -150.5, -151.0, -149.0, -126.5, 0.0, -0.0, 1.0, np.nan, -np.inf, np.inf])
    program = tmp_path / "edges.c"
    values = ", ".join(c_float(float(x)) for x in xs)
    program.write_text(
        f'#include <stdio.h>\n#include "{SHIM}/math.h"\n'
        f"int main(void) {{ float xs[] = {{{values}}}; unsigned i;\n"
        '  for (i = 0; i < sizeof xs / sizeof *xs; i++) printf("%.9g\\n", edgevit_exp2f(xs[i])); return 0; }\n'
    )
    subprocess.run(["cc", "-std=c99", "-O2", "-o", tmp_path / "edges", program, "-lm"], check=True)  # gcc may call nearbyintf
    got = np.float32(subprocess.run([tmp_path / "edges"], capture_output=True, text=True).stdout.split())
    with np.errstate(over="ignore", under="ignore"):
        expected = np.exp2(xs.astype(np.float64)).astype(np.float32)  # float32's own exp2 is 1 ulp off for subnormals
    np.testing.assert_array_equal(got, expected)


def test_the_toolchain_is_installed():
    find_toolchain()  # make setup installs it; a missing one is a failure here, not a skip


def test_newest_versioned_toolchain_is_preferred(monkeypatch):
    installed = {"clang", "wasm-ld", "clang-14", "wasm-ld-14", "clang-19", "wasm-ld-19", "clang-22"}  # 22 without its linker
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name in installed else None)
    assert find_toolchain() == ("/usr/bin/clang-19", "/usr/bin/wasm-ld-19")
