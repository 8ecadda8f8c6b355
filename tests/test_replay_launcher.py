"""edgevit.replay.launcher: a table of launches run by one C call, in order, with every argument
count up to MAX_ARGS, pointers and ints alike; and a replay that keeps working without it."""

import ctypes

import numpy as np
import pytest

from edgevit.cache import Cache
from edgevit.errors import EdgeViTError
from edgevit.internals import Launch
from edgevit.replay import launcher, native
from edgevit.runtime import Classifier
from edgevit.runtime.tinygrad import LANE_BATCH

N = launcher.MAX_ARGS
KERNELS = f"""
#include <stdint.h>
/* out[0] = the sum of n-1 int arguments */
void sum_ints({", ".join(["int32_t *out"] + [f"int a{i}" for i in range(N - 1)])}) {{
  out[0] = {" + ".join(f"a{i}" for i in range(N - 1))};
}}
/* out[i] = in[i] * k for i < count: reads what an earlier launch wrote */
void scale(float *out, const float *in, int k, int count) {{
  for (int i = 0; i < count; i++) out[i] = in[i] * (float)k;
}}
void fill(float *out, int count) {{
  for (int i = 0; i < count; i++) out[i] = (float)(i + 1);
}}
/* fill, after about 10 ms of spinning: a lane that does not wait for it reads zeros */
void slow_fill(float *out, int count) {{
  for (volatile long i = 0; i < 20000000; i++) {{}}
  for (int i = 0; i < count; i++) out[i] = (float)(i + 1);
}}
void copy(float *out, const float *in, int count) {{
  for (int i = 0; i < count; i++) out[i] = in[i];
}}
"""


@pytest.fixture(scope="module")
def kernels():
    return native.library("launcher-test", KERNELS, Cache(None))


def ptr(array: np.ndarray, offset: int = 0) -> ctypes.c_uint64:
    return ctypes.c_uint64(array.ctypes.data + offset)


def ints(*values: int) -> tuple:
    return tuple(ctypes.c_int(v) for v in values)


def test_a_run_calls_every_launch_in_order_with_all_its_arguments(kernels):
    total = np.zeros(1, np.int32)
    a, b = np.zeros(8, np.float32), np.zeros(8, np.float32)
    terms = list(range(1, N))
    split = [(ptr(b), ptr(a), *ints(3, 4)), (ptr(b, 16), ptr(a, 16), *ints(5, 4))]  # a launch split in two parts
    launches = [
        Launch(kernels.fill, [(ptr(a), *ints(8))], "fill", [], ()),
        Launch(kernels.scale, split, "scale", [], ()),
        Launch(kernels.sum_ints, [(ptr(total), *ints(*terms))], "sum_ints", [], ()),
    ]
    run = launcher.Run(launches, Cache(None))
    assert run.count == 4  # the parts of the split launch run one after another
    run()
    np.testing.assert_array_equal(a, np.arange(1, 9))
    np.testing.assert_array_equal(b, np.float32([3, 6, 9, 12, 25, 30, 35, 40]))
    assert total[0] == sum(terms)


def test_a_launch_with_more_arguments_than_the_launcher_takes_is_refused(kernels):
    wide = Launch(kernels.fill, [ints(*[0] * (N + 1))], "wide", [], ())
    assert not launcher.launchable(wide)
    with pytest.raises(ValueError, match="more than"):
        launcher.Run([wide], Cache(None))


def test_without_a_launcher_the_replay_calls_the_kernels_from_python(tiny_weights, mnist, monkeypatch):
    images = mnist.test.images[:20].astype(np.float32)
    expected = Classifier(tiny_weights, cache_dir=None, device="CPU", replay=False).predict(images)

    def no_compiler(*args):
        raise EdgeViTError("compiling C for this machine failed (cc ...): not this machine's compiler")

    monkeypatch.setattr(native, "library", no_compiler)  # as with $CC a cross compiler
    clf = Classifier(tiny_weights, cache_dir=None, device="CPU")
    got = clf.predict(images)
    assert clf.backend.replay(LANE_BATCH, lane=1) is not None
    np.testing.assert_array_equal(got.probs, expected.probs)
    np.testing.assert_array_equal(got.attention, expected.attention)


def test_lanes_run_at_once_and_wait_for_what_they_read(kernels):
    a, b, c = np.zeros(8, np.float32), np.zeros(8, np.float32), np.zeros(8, np.float32)
    split = [(ptr(b), ptr(a), *ints(3, 4)), (ptr(b, 16), ptr(a, 16), *ints(5, 4))]
    launches = [
        Launch(kernels.slow_fill, [(ptr(a), *ints(8))], "slow_fill", [], ()),
        Launch(kernels.scale, split, "scale", [], ()),  # a part in each lane, both reading a
        Launch(kernels.copy, [(ptr(c), ptr(b), *ints(8))], "copy", [], ()),  # needs both parts
    ]
    plan = [[(0, 0), (1, 0)], [(1, 1), (2, 0)]]
    lanes = launcher.Lanes(launches, plan, {(1, 1): [0], (2, 0): [1]}, Cache(None))
    for _ in range(3):  # again and again: each call starts with nothing finished
        a[:], b[:], c[:] = 0, 0, 0
        lanes()
        np.testing.assert_array_equal(a, np.arange(1, 9))
        np.testing.assert_array_equal(b, np.float32([3, 6, 9, 12, 25, 30, 35, 40]))
        np.testing.assert_array_equal(c, b)
