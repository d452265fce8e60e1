"""Arena offsets: greedy by size with best fit, and the lower bound they are measured against."""
from __future__ import annotations

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


def assign_offsets(spans: dict[Hashable, list[int]], sizes: dict[Hashable, int], align: int):
    """Largest buffers first; each goes into the smallest gap (among already placed buffers whose
    lifetimes overlap its own) that fits it, else on top. Returns ({buffer: offset}, arena bytes)."""
    order = sorted(spans, key=lambda b: (-sizes[b], spans[b][0]))
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
