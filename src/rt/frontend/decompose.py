"""The decomposition fallback: an ATen op rt has no converter for is rewritten by torch's own core-ATen
decomposition table (the one `ExportedProgram.run_decompositions` uses), for that op only, so every op
rt knows stays whole (linear, scaled_dot_product_attention, layer_norm, convolution, ...).

`decompose_unsupported` repeats until every live op has a converter or no decomposition is left: a
decomposition may itself produce ops rt lacks, which are decomposed in turn. What is left is reported
unsupported by the importer, and its error says which ops were decomposed on the way.
"""
from __future__ import annotations

import functools
import operator
from typing import Callable

import torch

MAX_ROUNDS = 8          # decompositions of decompositions; torch's table reaches core ATen in 2-3


@functools.lru_cache(maxsize=1)
def decomposition_table() -> dict:
    """torch's core-ATen decomposition table, {OpOverload: function} (built once: ~2 s)."""
    return dict(torch.export.default_decompositions().items())


def has_decomposition(target) -> bool:
    return isinstance(target, torch._ops.OpOverload) and target in decomposition_table()


def live_call_targets(graph) -> list:
    """The call_function targets of the nodes that reach the graph's output, in graph order."""
    out = [n for n in graph.nodes if n.op == "output"]
    live, stack = set(out), list(out)
    while stack:
        for a in stack.pop().all_input_nodes:
            if a not in live:
                live.add(a)
                stack.append(a)
    seen = {}
    for n in graph.nodes:
        if n in live and n.op == "call_function" and n.target is not operator.getitem:
            seen.setdefault(n.target, None)
    return list(seen)


def decompose_unsupported(ep: torch.export.ExportedProgram, supported: Callable[[object], bool],
                          force=()) -> tuple[torch.export.ExportedProgram, list[str]]:
    """(program, decomposed): `ep` with every live op that `supported` refuses (and every op in `force`:
    ops whose converter refused one use) decomposed by torch's table, repeatedly; `decomposed` names
    them ('aten.hardswish.default', ...) in the order they were decomposed."""
    decomposed: list[str] = []
    done: set = set()
    for _ in range(MAX_ROUNDS):
        missing = [t for t in live_call_targets(ep.graph_module.graph)
                   if t not in done and (t in force or not supported(t))]
        todo = {t: decomposition_table()[t] for t in missing if has_decomposition(t)}
        if not todo:
            break
        ep = ep.run_decompositions(todo)
        done.update(todo)
        decomposed.extend(str(t) for t in todo)
    return ep, decomposed
