"""Execution order: several topological orders, keep the one with the lowest peak of live bytes."""
from __future__ import annotations

from typing import Callable

from ..dialects.ir import ROOT_OPS, Module, Operation, Value
from ..dialects.symbolic import at_largest


def _peak(order: list[Operation], root: Callable[[Value], Value], outputs: set[Value]) -> int:
    last: dict[Value, int] = {}
    for s, op in enumerate(order):
        for v in op.present_operands():
            last[root(v)] = s
    live = peak = 0
    for s, op in enumerate(order):
        r = op.result
        owns = op.name not in ROOT_OPS and root(r) is r and r not in outputs
        if owns:
            live += at_largest(r.type.nbytes)
        peak = max(peak, live)
        for v in {root(v) for v in op.present_operands()}:
            if last.get(v) == s and v.producer is not None and v.producer.name not in ROOT_OPS and v not in outputs:
                live -= at_largest(v.type.nbytes)
        if owns and r not in last:
            live -= at_largest(r.type.nbytes)
    return peak


def _greedy(m: Module, root: Callable[[Value], Value]) -> list[Operation]:
    """List scheduling: among ready ops, run the one that frees the most bytes net of what it allocates."""
    index = {op: i for i, op in enumerate(m.ops)}
    users: dict[Value, list[Operation]] = {}
    for op in m.ops:
        for v in set(op.present_operands()):
            users.setdefault(v, []).append(op)
    pending = {op: len({v for v in op.present_operands() if v.producer is not None}) for op in m.ops}
    remaining_uses = {v: len(us) for v, us in users.items()}
    ready = [op for op, n in pending.items() if n == 0]
    order = []
    while ready:
        def net(op):
            alloc = 0 if op.name in ROOT_OPS or root(op.result) is not op.result else at_largest(op.result.type.nbytes)
            freed = sum(at_largest(v.type.nbytes) for v in set(op.present_operands())
                        if remaining_uses.get(v) == 1 and v.producer is not None and root(v) is v
                        and v.producer.name not in ROOT_OPS)
            return (alloc - freed, index[op])
        op = min(ready, key=net)
        ready.remove(op)
        order.append(op)
        for v in set(op.present_operands()):
            remaining_uses[v] -= 1
        for u in users.get(op.result, []):
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    return order


STRATEGIES: dict[str, Callable[[Module, Callable[[Value], Value]], list[Operation]]] = {
    "program": lambda m, root: list(m.ops),
    "greedy": _greedy,
}


def choose_order(m: Module, layout_root: Callable[[Value], Value], outputs: set[Value]) -> list[Operation]:
    best, best_peak = None, None
    for name, strategy in STRATEGIES.items():
        order = strategy(m, layout_root)
        peak = _peak(order, layout_root, outputs)
        if best_peak is None or peak < best_peak:
            best, best_peak = order, peak
            m.meta["order_strategy"] = name
    return best
