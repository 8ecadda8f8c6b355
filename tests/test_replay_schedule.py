"""edgevit.replay.schedule: what each launch waits for, from the memory it reads and writes, and a
placement of launches on lanes that keeps those waits."""

import numpy as np

from edgevit.internals import HostBuffer, Launch
from edgevit.replay.schedule import assign, dependencies

F32 = np.dtype(np.float32)


def buffer(start: int, floats: int) -> HostBuffer:
    return HostBuffer(F32, floats, start, True)


A, B, D, E = buffer(0, 16), buffer(64, 16), buffer(200, 16), buffer(300, 16)
C = buffer(32, 16)  # bytes 32-96: the second half of A and the first of B, as the memory planner may reuse them


def launch(name: str, writes: list[HostBuffer], reads: list[HostBuffer], parts: int = 1) -> Launch:
    return Launch(None, [()] * parts, name, [*writes, *reads], tuple(range(len(writes))))


def test_a_launch_waits_for_writers_of_what_it_touches_and_readers_of_what_it_writes():
    launches = [
        launch("write A", [A], [D]),
        launch("A to B", [B], [A]),  # reads what launch 0 wrote
        launch("D to E", [E], [D]),  # only reads what nobody wrote: free to run at once
        launch("write D", [D], []),  # overwrites what 0 and 2 read
        launch("read C", [E], [C]),  # C overlaps A and B; E was written by 2
        launch("write A again", [A], []),  # after its readers: 1 (A) and 4 (C, overlapping)
    ]
    assert dependencies(launches) == [set(), {0}, set(), {0, 2}, {0, 1, 2}, {0, 1, 4}]


def test_independent_launches_go_to_different_lanes_and_dependent_ones_wait():
    launches = [launch("x", [A], []), launch("y", [B], []), launch("x and y", [D], [A, B])]
    deps = dependencies(launches)
    plan, waits = assign(launches, [1.0, 1.0, 1.0], deps, lanes=2)
    assert plan == [[(0, 0), (2, 0)], [(1, 0)]]
    assert waits == {(0, 0): [], (1, 0): [], (2, 0): [1]}  # 0 ran before it in its own lane


def test_a_split_launch_has_a_part_on_every_lane_and_is_waited_for_whole():
    launches = [launch("split", [A], [], parts=2), launch("after", [B], [A]), launch("alone", [D], [])]
    plan, waits = assign(launches, [2.0, 1.0, 1.0], dependencies(launches), lanes=2)
    assert plan == [[(0, 0), (1, 0)], [(0, 1), (2, 0)]]
    assert waits[(1, 0)] == [0]  # its own lane's part is not enough: the other part must be done too
    assert waits[(2, 0)] == []


def test_every_lane_keeps_the_launch_order():
    rng = np.random.default_rng(0)
    pool = [buffer(64 * i, 16) for i in range(6)]
    launches = [
        launch(str(i), [pool[rng.integers(6)]], [pool[j] for j in rng.choice(6, 2, replace=False)], parts=1 + (i % 5 == 0))
        for i in range(40)
    ]
    plan, waits = assign(launches, list(rng.uniform(0.1, 1.0, 40)), dependencies(launches), lanes=2)
    for lane in plan:
        assert [i for i, _ in lane] == sorted(i for i, _ in lane)
    assert sorted(node for lane in plan for node in lane) == sorted(
        (i, p) for i, one in enumerate(launches) for p in range(len(one.per_core))
    )
    assert all(j < i for (i, _), js in waits.items() for j in js)
