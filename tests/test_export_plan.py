import numpy as np

from edgevit.export.plan import Buffer, Graph, plan_memory


def test_memory_plan_never_overlaps_live_buffers():
    rng = np.random.default_rng(0)
    bufs = []
    for i in range(60):
        first = int(rng.integers(0, 40))
        dtype = np.dtype(np.float32 if i % 3 else np.int8)
        last = first + int(rng.integers(0, 8))
        bufs.append(Buffer(f"b{i}", dtype, int(rng.integers(1, 500)), "scratch", first=first, last=last))
    graph = Graph({}, [], bufs)
    plan_memory(graph)
    for a in bufs:
        assert a.offset + a.count <= graph.arenas[a.dtype]
        for b in bufs:
            if a is not b and a.dtype == b.dtype and a.first <= b.last and b.first <= a.last:
                assert a.offset + a.count <= b.offset or b.offset + b.count <= a.offset
    # sharing must actually happen: far less than the sum of all buffers
    assert sum(graph.arenas.values()) < 0.6 * sum(b.count for b in bufs)
