import numpy as np
from tinygrad import Context, Tensor, nn
from tinygrad.nn.state import get_parameters

from edgevit import internals
from edgevit.device import select_device, usable_cores
from edgevit.training.step import CompiledStep


def make_step(direct: bool, dropout: float) -> CompiledStep:
    Tensor.manual_seed(1)
    layer, head = nn.Linear(16, 32), nn.Linear(32, 4)
    params = get_parameters([layer, head])
    opt = nn.optim.AdamW(params, lr=1e-2)

    def fn(x, y, lr):
        with Context(TRAINING=1):
            opt.lr.assign(lr)
            opt.zero_grad()
            logits = head(layer(x.reshape(x.shape[0], -1)).gelu().dropout(dropout))
            loss = logits.sparse_categorical_crossentropy(y).backward()
            correct = (logits.argmax(-1) == y).sum()
            Tensor.realize(loss, correct, *opt.schedule_step())
        return loss, correct

    return CompiledStep(fn, lambda: [*params, *opt.m, *opt.v, opt.b1_t, opt.b2_t, *internals.random_state()], direct=direct)


def run(step: CompiledStep, n: int = 8) -> list[tuple[float, int]]:
    rng = np.random.default_rng(0)
    return [
        step(rng.standard_normal((8, 1, 4, 4)).astype(np.float32), rng.integers(0, 4, 8).astype(np.int32), 1e-2)
        for _ in range(n)
    ]


def test_direct_replay_trains_exactly_as_tinygrads_replay():
    select_device("CPU")
    for dropout in (0.0, 0.2):  # dropout: the random stream is state the check must save and restore too
        # one after the other: tinygrad draws a lazy tensor's random values when it is realized
        fast_steps = run(fast := make_step(True, dropout))
        slow_steps = run(slow := make_step(False, dropout))
        assert fast.replay is not None and slow.replay is None
        # its launches spread over the cores where there are several, and still bit for bit
        assert fast.replay.spread_over_cores == (usable_cores() > 1)
        assert fast_steps == slow_steps  # bit for bit: the same losses and counts, step after step
        assert len({loss for loss, _ in fast_steps}) > 1  # it really trained
