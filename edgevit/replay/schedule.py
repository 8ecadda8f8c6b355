"""Which launches of a captured graph may run at the same time, and on which core each one runs.

tinygrad splits some kernels over the cores and runs every other one on a single core, one after
another: in the training step most of the time is in kernels that were not split (measured: 63 of
90 ms), so one core idles. Many of those kernels do not depend on each other (a layer's weight
gradient and its input gradient, the three projections of the attention). Here each launch gets the
earlier launches it must wait for (`dependencies`, from the memory each one reads and writes: the
memory planner reuses memory, so overlapping ranges count, not buffer identity), and a list schedule
places the launches on lanes, one a core, from their measured times (`assign`). Pure functions.
"""

from __future__ import annotations

from collections import defaultdict

from edgevit.internals import Launch

Range = tuple[int, int]  # [start, end) bytes


def _ranges(launch: Launch) -> tuple[set[Range], set[Range]]:
    """(read, written) byte ranges of a launch."""
    spans = [(b.address, b.address + b.count * b.dtype.itemsize) for b in launch.buffers]
    written = {spans[i] for i in launch.writes}
    return set(spans) - written, written


def dependencies(launches: list[Launch]) -> list[set[int]]:
    """For each launch, the earlier launches it must wait for: those that wrote memory it touches, and
    those that read memory it writes."""
    accesses = [_ranges(launch) for launch in launches]
    distinct = sorted({r for reads, writes in accesses for r in reads | writes})
    overlapping = {r: [o for o in distinct if o[0] < r[1] and r[0] < o[1]] for r in distinct}
    last_writer: dict[Range, int] = {}
    readers: dict[Range, list[int]] = defaultdict(list)
    deps = []
    for i, (reads, writes) in enumerate(accesses):
        before = set()
        for r in reads | writes:
            before.update(last_writer[o] for o in overlapping[r] if o in last_writer)
        for r in writes:
            for o in overlapping[r]:
                before.update(readers[o])
        before.discard(i)
        deps.append(before)
        for r in reads:
            readers[r].append(i)
        for r in writes:
            last_writer[r], readers[r] = i, []
    return deps


def assign(
    launches: list[Launch], seconds: list[float], deps: list[set[int]], lanes: int
) -> tuple[list[list[tuple[int, int]]], dict[tuple[int, int], list[int]]]:
    """A list schedule in the launches' order: each launch starts on the lane where it can start first;
    a split one has its parts on lanes 0, 1, ... Returns the plan (lane -> (launch, part), in order) and
    each (launch, part)'s waits: for every other lane, the latest launch it depends on that has a part
    there (the lanes run in order, so that one finished means every earlier one there finished too)."""
    plan: list[list[tuple[int, int]]] = [[] for _ in range(lanes)]
    free, finish = [0.0] * lanes, [0.0] * len(launches)
    where: list[set[int]] = []  # the lanes each launch has a part on
    for i, launch in enumerate(launches):
        ready = max((finish[j] for j in deps[i]), default=0.0)
        parts = len(launch.per_core)
        if parts > 1:
            for part in range(parts):
                lane = part % lanes
                free[lane] = max(free[lane], ready) + seconds[i] / parts
                plan[lane].append((i, part))
            used = {part % lanes for part in range(parts)}
            finish[i] = max(free[lane] for lane in used)
        else:
            lane = min(range(lanes), key=lambda n: max(free[n], ready))
            free[lane] = finish[i] = max(free[lane], ready) + seconds[i]
            plan[lane].append((i, 0))
            used = {lane}
        where.append(used)
    waits = {}
    for lane, nodes in enumerate(plan):
        for i, part in nodes:
            latest = {}
            for j in deps[i]:
                for other in where[j] - {lane}:
                    latest[other] = max(latest.get(other, -1), j)
            # a split launch j with a part in this lane also has one in another: it is waited for there
            waits[(i, part)] = sorted(set(latest.values()))
    return plan, waits
