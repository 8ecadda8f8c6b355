import numpy as np
from tinygrad import Tensor, TinyJit

from edgevit import internals
from edgevit.data import normalize
from edgevit.device import usable_cores
from edgevit.graph import inference_graph
from edgevit.quant.schemes import inference_layout
from edgevit.replay.replay import CPUReplay
from edgevit.runtime import Classifier
from edgevit.runtime.tinygrad import LANE_BATCH
from edgevit.weights import ModelFile


def test_direct_cpu_replay_is_bit_identical_to_tinygrads_own(tiny_weights, tmp_path, mnist):
    images = mnist.test.images[:40].astype(np.float32)  # 3 graphs of LANE_BATCH, the last padded
    fast = Classifier(tiny_weights, cache_dir=tmp_path, device="CPU")
    got_single = np.concatenate([fast.predict(images[i : i + 1]).probs for i in range(3)])
    got_batch = fast.predict(images)
    assert isinstance(fast.backend.replay(1), CPUReplay)
    # one graph a core, each replayed on one thread: the lanes run at the same time
    lanes = [fast.backend.replay(LANE_BATCH, lane) for lane in range(1, fast.backend.lanes + 1)]
    assert len(lanes) == min(3, usable_cores())
    assert all(replay.threads == 1 for replay in lanes)
    assert len({replay.outputs[0].ctypes.data for replay in lanes}) == len(lanes)  # buffers of their own

    slow = Classifier(tiny_weights, cache_dir=None, device="CPU", replay=False)  # tinygrad's own replay only
    np.testing.assert_array_equal(got_single, np.concatenate([slow.predict(images[i : i + 1]).probs for i in range(3)]))
    expected = slow.predict(images)
    assert slow.backend.replay(LANE_BATCH, lane=1) is None
    np.testing.assert_array_equal(got_batch.probs, expected.probs)
    np.testing.assert_array_equal(got_batch.attention, expected.attention)


def test_one_graph_of_a_big_batch_runs_the_kernels_tinygrad_split_over_cores_in_parallel(tiny_weights, mnist):
    clf = Classifier(tiny_weights, cache_dir=None, device="CPU")
    x = normalize(mnist.test.images[:64].astype(np.float32), clf.model.mean, clf.model.std).reshape(64, 1, 28, 28)
    for _ in range(3):  # eager, capture, then the direct replay
        got = clf.forward(x)
    assert clf.backend.replay(64).threads > 1  # kernels tinygrad split over the cores, run at once
    expected = Classifier(tiny_weights, cache_dir=None, device="CPU", replay=False).forward(x)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_replay_that_would_not_reproduce_tinygrads_outputs_is_never_used(tiny_weights, mnist):
    model = ModelFile.open(tiny_weights)
    jit = TinyJit(inference_graph(inference_layout(model.build())))
    x = Tensor.empty(1, 1, 28, 28).contiguous().realize()
    internals.host_view(x)[:] = normalize(mnist.test.images[:1], model.mean, model.std)
    for _ in range(2):  # eager, then capture
        outputs = jit(x)
    right = tuple(t.numpy() for t in outputs)
    assert CPUReplay.build(jit, x, right) is not None
    assert CPUReplay.build(jit, x, tuple(np.ones_like(a) for a in right)) is None


def test_profile_times_every_launch_and_leaves_an_inference_replay_working(tiny_weights, mnist):
    clf = Classifier(tiny_weights, cache_dir=None, device="CPU")
    images = mnist.test.images[:1].astype(np.float32)
    before = clf.predict(images).probs
    replay = clf.backend.replay(1)
    profile = replay.profile(repeats=2)
    assert set(profile) == {launch.name for launch in replay.launches}
    assert sum(count for _, count in profile.values()) == len(replay.launches)
    assert all(seconds > 0 for seconds, _ in profile.values())
    np.testing.assert_array_equal(clf.predict(images).probs, before)
