"""Arena offsets: greedy by size with best fit, and the lower bound they are measured against."""
from __future__ import annotations

import random
from typing import Hashable


def lower_bound(spans: dict[Hashable, list[int]], sizes: dict[Hashable, int]) -> int:
    """The largest total of bytes live at any one step."""
    if not spans:
        return 0
    events: dict[int, int] = {}
    for b, (start, end) in spans.items():
        events[start] = events.get(start, 0) + sizes[b]
        events[end + 1] = events.get(end + 1, 0) - sizes[b]
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


# orders in which buffers are placed; the smallest arena wins (best fit is a heuristic: no one
# order is best for every graph, e.g. kernel scratch living one step favours "longest-lived first")
_PLACEMENT_ORDERS = {
    "largest first": lambda spans, sizes: lambda b: (-sizes[b], spans[b][0]),
    "largest area first": lambda spans, sizes: lambda b: (-sizes[b] * (spans[b][1] - spans[b][0] + 1), spans[b][0]),
    "longest-lived first": lambda spans, sizes: lambda b: (-(spans[b][1] - spans[b][0]), -sizes[b], spans[b][0]),
    "earliest first": lambda spans, sizes: lambda b: (spans[b][0], -sizes[b]),
    "latest end first": lambda spans, sizes: lambda b: (-spans[b][1], -sizes[b]),
}


# Placements tried by the local search after the fixed orders: about this many buffer placements in
# all (each try costs one per buffer and per overlapping one), so big programs stay fast to plan.
_SEARCH_BUDGET = 400_000


def assign_offsets(spans: dict[Hashable, list[int]], sizes: dict[Hashable, int], align: int):
    """Place every buffer by best fit (the smallest gap among already placed buffers whose lifetimes
    overlap its own, else on top), in each of a few orders; then, while the arena is above the lower
    bound, a seeded local search swaps two buffers in the best order and keeps what is no worse.
    Returns ({buffer: offset}, arena bytes)."""
    best, best_order = None, None
    for key in _PLACEMENT_ORDERS.values():
        order = sorted(spans, key=key(spans, sizes))
        placed = _best_fit(order, spans, sizes, align)
        if best is None or placed[1] < best[1]:
            best, best_order = placed, order
    bound = (lower_bound(spans, sizes) + align - 1) // align * align
    rng = random.Random(0)
    tries = _SEARCH_BUDGET // max(1, len(spans)) ** 2
    for _ in range(tries):
        if best[1] <= bound or len(best_order) < 2:
            break
        i, j = rng.sample(range(len(best_order)), 2)
        order = list(best_order)
        order[i], order[j] = order[j], order[i]
        placed = _best_fit(order, spans, sizes, align)
        if placed[1] <= best[1]:
            best, best_order = placed, order
    return best


def _best_fit(order, spans, sizes, align):
    placed: list[tuple[int, int, int, int]] = []     # (offset, size, start, end)
    offsets: dict[Hashable, int] = {}
    arena = 0
    for b in order:
        start, end = spans[b]
        size = sizes[b]
        busy = sorted((o, o + s) for o, s, st, en in placed if st <= end and start <= en)
        best, best_gap, cursor = None, None, 0
        for lo, hi in busy:
            gap = lo - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, hi)
        if best is None:
            best = cursor
        best = (best + align - 1) // align * align
        offsets[b] = best
        placed.append((best, size, start, end))
        arena = max(arena, best + size)
    return offsets, arena
