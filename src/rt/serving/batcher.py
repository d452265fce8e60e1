"""Dynamic batching's arithmetic: requests' rows stacked along dim 0 into calls of at most `limit` rows,
each call run once and its outputs split back by request. Requests whose other dims differ (another
sequence length) go into calls of their own; a call that fails runs its requests one by one, so a bad
request fails alone. Nothing here knows of Ray (rt.serving.replica queues the requests)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import RtError

Arrays = list[np.ndarray]


def rows(request: Arrays) -> int:
    """A request's rows: dim 0 of its inputs (the batch dim, the same for all of them)."""
    return request[0].shape[0]


def run_batched(run: Callable[[Arrays], Arrays], requests: list[Arrays], limit: int) -> list[Arrays | RtError]:
    """Each request's outputs (or the rt error it alone raised), running `run` on stacked calls."""
    results: list[Arrays | RtError] = [[] for _ in requests]
    for call in _calls(requests, limit):
        together = _run_stacked(run, [requests[i] for i in call]) if len(call) > 1 else None
        for i, outs in zip(call, together or [_run_alone(run, requests[i]) for i in call]):
            results[i] = outs
    return results


def _run_stacked(run, requests: list[Arrays]) -> list[Arrays] | None:
    """The requests' outputs from one call on their stacked rows; None when that call fails (one of them
    is bad: each then runs alone and gets its own answer)."""
    stacked = [np.concatenate(parts) for parts in zip(*requests)]
    try:
        outs = run(stacked)
    except RtError:
        return None
    cuts = np.cumsum([rows(r) for r in requests])[:-1]
    return [list(parts) for parts in zip(*(np.split(o, cuts) for o in outs))]


def _run_alone(run, request: Arrays) -> Arrays | RtError:
    try:
        return run(request)
    except RtError as e:
        return e


def _calls(requests: list[Arrays], limit: int) -> list[list[int]]:
    """The requests' indices grouped into calls: same dims past dim 0, at most `limit` rows each, in
    arrival order."""
    calls: list[list[int]] = []
    open_calls: dict[tuple, tuple[list[int], int]] = {}      # dims past dim 0 -> (call, its rows)
    for i, request in enumerate(requests):
        key = tuple(a.shape[1:] for a in request)
        call, n = open_calls.get(key, (None, 0))
        if call is None or n + rows(request) > limit:
            call, n = [], 0
            calls.append(call)
        call.append(i)
        open_calls[key] = (call, n + rows(request))
    return calls
