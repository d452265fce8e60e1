"""One declarative rewrite engine for every legalisation, fusion and simplification.

A pattern is data: a dict of named op nodes (`N`), one of which is the anchor (the root: the op whose
result the rewrite replaces), and a rewrite function that builds the replacement with a `Builder`.

    GELU = Pattern("gelu_tanh", root="out", nodes={
        "half": N("fused.mul", ["$x", Scalar(0.5)]),
        "cube": N("fused.pow", ["$x"], exponent=Approx(3.0)),
        ...
        "out":  N("fused.mul", ["half", "onep"]),
    }, rewrite=lambda m, b: b.op("fused.gelu_tanh", [m["$x"]]))

Operand patterns (positional; operands the pattern does not list must be absent):
    "name"        the value produced by the pattern node `name` (a DAG: a node may be used several times)
    "$x"          any present value, captured; a capture used twice must bind the same value (GELU's x)
    "$x?"         any value or an absent operand
    Scalar(v)     a constant whose elements all equal v within tolerance (`capture=` to keep it)
    Const("$w")   any constant, captured
    None          an absent optional operand
    ANY           anything, not captured
Attribute constraints (keyword arguments of N): a literal (compared with defaults filled in; floats
with tolerance), `Approx(v, tol)`, or a predicate `lambda value: bool`.
Commutative ops (registry trait, or `N(..., commutative=True)`) try both orders of their first two
operands. Every matched value except the root's must have no user outside the match (and must not be
a module output) unless its node is listed in `shared`. `where(m)` adds constraints the data cannot say.

`apply_patterns` applies patterns by benefit (default: number of nodes) until nothing changes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from ..dialects.builder import Builder, same_attr
from ..dialects.ir import Module, Operation, Value, padded, replace_all_uses
from ..dialects.registry import COMMUTATIVE, REGISTRY
from ..errors import LoweringError


# ---- pattern data ---------------------------------------------------------------------------
class _Any:
    def __repr__(self):
        return "ANY"


ANY = _Any()


@dataclass(frozen=True)
class Approx:
    value: float
    rel: float = 1e-5
    abs: float = 1e-7

    def ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return False
        return math.isclose(float(v), self.value, rel_tol=self.rel, abs_tol=self.abs)


@dataclass(frozen=True)
class Scalar:
    """A constant operand whose every element equals `value` (within tolerance); value None = any scalar."""
    value: float | None = None
    rel: float = 1e-5
    abs: float = 1e-7
    capture: str | None = None


@dataclass(frozen=True)
class Const:
    """Any constant operand, captured under `capture` ('$name')."""
    capture: str | None = None


@dataclass
class N:
    ops: tuple[str, ...]
    args: list
    attrs: dict[str, Any]
    commutative: bool | None

    def __init__(self, ops, args=(), commutative=None, **attrs):
        self.ops = (ops,) if isinstance(ops, str) else tuple(ops)
        self.args = list(args)
        self.attrs = attrs
        self.commutative = commutative


@dataclass
class Pattern:
    name: str
    root: str
    nodes: dict[str, N]
    rewrite: Callable[["Match", "Builder"], Value]
    where: Callable[["Match"], bool] | None = None
    benefit: int | None = None
    shared: tuple[str, ...] = ()

    def __post_init__(self):
        if self.root not in self.nodes:
            raise ValueError(f"pattern {self.name}: root {self.root!r} is not a node")
        if self.benefit is None:
            self.benefit = len(self.nodes)
        for nid, node in self.nodes.items():
            for a in node.args:
                if isinstance(a, str) and not a.startswith("$") and a not in self.nodes:
                    raise ValueError(f"pattern {self.name}: node {nid} uses unknown node {a!r}")


# ---- matches --------------------------------------------------------------------------------
class Match:
    """What a pattern bound: m["node"] / m["$x"] -> Value, m.op("node"), m.attr("node", key), m.array("$w")."""

    def __init__(self, module: Module, ops=None, vals=None):
        self.module = module
        self.ops: dict[str, Operation] = dict(ops or {})
        self.vals: dict[str, Value | None] = dict(vals or {})

    def copy(self) -> "Match":
        return Match(self.module, self.ops, self.vals)

    def __getitem__(self, key: str) -> Value | None:
        if key.startswith("$"):
            return self.vals[key.rstrip("?")]
        return self.ops[key].result

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def op(self, nid: str) -> Operation:
        return self.ops[nid]

    def attr(self, nid: str, key: str):
        op = self.ops[nid]
        return REGISTRY[op.name].with_defaults(op.attrs)[key]

    def array(self, key: str) -> np.ndarray | None:
        return self.module.const_value(self[key])

    def scalar(self, key: str) -> float:
        return float(np.asarray(self.array(key)).reshape(-1)[0])

    def rebuild(self, b: Builder, nid: str, operands: dict[int, Value | None] | None = None, **attrs) -> Value:
        """The matched op `nid` built again with `b`, some operands (by position) and attributes
        changed: the usual replacement when a fusion folds a neighbour into an op's operands/flags."""
        op = self.ops[nid]
        ops = padded(op.operands, max(len(op.operands), len(REGISTRY[op.name].operands)))
        for i, v in (operands or {}).items():
            ops[i] = v
        return b.op(op.name, ops, {**op.attrs, **attrs})


def scalar_of(module: Module, v: Value | None) -> float | None:
    """The single value of a constant whose elements are all equal, else None."""
    arr = module.const_value(v)
    if arr is None or arr.size == 0 or arr.dtype == np.bool_:
        return None
    flat = np.asarray(arr).reshape(-1)
    first = flat[0]
    if flat.size > 1 and not np.all(flat == first):
        return None
    return float(first)


def _attr_ok(constraint, value) -> bool:
    if isinstance(constraint, Approx):
        return constraint.ok(value)
    if callable(constraint):
        return bool(constraint(value))
    return same_attr(constraint, value, rel=1e-6)


def _capture(m, name, v):
    """Bind capture `name` to v in a copy of match m (or check an earlier binding is the same value)."""
    if not name:
        yield m
    elif name in m.vals:
        if m.vals[name] is v:
            yield m
    else:
        m = m.copy()
        m.vals[name] = v
        yield m


class Matcher:
    def __init__(self, pattern: Pattern, module: Module):
        self.p = pattern
        self.module = module

    def match_root(self, op: Operation) -> Iterator[Match]:
        yield from self._node(self.p.root, op.result, Match(self.module))

    def _node(self, nid: str, value: Value | None, m: Match) -> Iterator[Match]:
        if value is None:
            return
        op = value.producer
        node = self.p.nodes[nid]
        if op is None or op.name not in node.ops:
            return
        if nid in m.ops:
            if m.ops[nid] is op:
                yield m
            return
        if any(o is op for o in m.ops.values()):
            return
        opdef = REGISTRY.get(op.name)
        attrs = opdef.with_defaults(op.attrs) if opdef is not None else op.attrs
        for k, c in node.attrs.items():
            if k not in attrs or not _attr_ok(c, attrs[k]):
                return
        operands = list(op.operands)
        if len(node.args) < len(operands) and any(v is not None for v in operands[len(node.args):]):
            return
        operands += [None] * (len(node.args) - len(operands))
        if len(operands) > len(node.args):
            operands = operands[:len(node.args)]
        orders = [operands]
        comm = node.commutative if node.commutative is not None else (opdef is not None and opdef.has(COMMUTATIVE))
        if comm and len(operands) >= 2:
            orders.append([operands[1], operands[0]] + operands[2:])
        for order in orders:
            m2 = m.copy()
            m2.ops[nid] = op
            yield from self._args(node.args, order, 0, m2)

    def _args(self, pats, vals, i, m: Match) -> Iterator[Match]:
        if i == len(pats):
            yield m
            return
        for m2 in self._arg(pats[i], vals[i], m):
            yield from self._args(pats, vals, i + 1, m2)

    def _arg(self, pat, v: Value | None, m: Match) -> Iterator[Match]:
        if pat is ANY:
            yield m
        elif pat is None:
            if v is None:
                yield m
        elif isinstance(pat, str) and pat.startswith("$"):
            if v is not None or pat.endswith("?"):
                yield from _capture(m, pat.rstrip("?"), v)
        elif isinstance(pat, str):
            yield from self._node(pat, v, m)
        elif isinstance(pat, Scalar):
            s = scalar_of(self.module, v)
            if s is None:
                return
            if pat.value is not None and not math.isclose(s, pat.value, rel_tol=pat.rel, abs_tol=pat.abs):
                return
            yield from _capture(m, pat.capture, v)
        elif isinstance(pat, Const):
            if self.module.const_value(v) is None and not (v is not None and v.producer is not None
                                                           and v.producer.name == "const"):
                return
            yield from _capture(m, pat.capture, v)
        else:
            raise TypeError(f"bad operand pattern {pat!r}")


# ---- driver ---------------------------------------------------------------------------------
def apply_at(module: Module, pattern: Pattern, op: Operation, users, names: set[str]) -> bool:
    """Try `pattern` anchored at `op`; apply the first legal match. Returns True if it rewrote."""
    outputs = set(module.outputs)
    for m in Matcher(pattern, module).match_root(op):
        matched = set(m.ops.values())
        legal = True
        for nid, mop in m.ops.items():
            if nid == pattern.root or nid in pattern.shared:
                continue
            if mop.result in outputs or any(u not in matched for u in users.get(mop.result, ())):
                legal = False
                break
        if not legal:
            continue
        if pattern.where is not None and not pattern.where(m):
            continue
        b = Builder(module, names, op.result.name)
        new = pattern.rewrite(m, b)
        if new is None:           # the rewrite declined
            for nop in b.new_ops:
                names.discard(nop.result.name)
            continue
        b.rename(new, op.result.name)      # the replacement takes the anchor's name (the anchor goes)
        _commit(module, op, new, b.new_ops, m, pattern.shared)
        return True
    return False


def _commit(module: Module, root: Operation, new: Value, new_ops: list[Operation], m: Match, shared) -> None:
    idx = next(i for i, o in enumerate(module.ops) if o is root)
    module.ops[idx:idx] = new_ops
    if new is not root.result:
        replace_all_uses(module, root.result, new)
        module.ops.remove(root)
    # internal ops are now unused (checked); shared ones stay until dead-code elimination
    dead = {o for nid, o in m.ops.items() if o is not root and nid not in shared}
    if dead:
        module.ops = [o for o in module.ops if o not in dead]
    module.invalidate_names()


def apply_patterns(module: Module, patterns: list[Pattern], max_rounds: int = 100) -> int:
    """Apply patterns, highest benefit first, until nothing changes. Returns the number of rewrites."""
    ordered = sorted(patterns, key=lambda p: -p.benefit)
    names = {v.name for v in module.values()}     # shared by every Builder of this run
    count = 0
    for _ in range(max_rounds):
        changed = False
        for p in ordered:
            roots = set(p.nodes[p.root].ops)
            candidates = [o for o in module.ops if o.name in roots]
            if not candidates:
                continue
            users = module.users()
            alive = set(module.ops)
            for op in candidates:
                if op not in alive:
                    continue
                if apply_at(module, p, op, users, names):
                    count += 1
                    changed = True
                    users = module.users()
                    alive = set(module.ops)
        if not changed:
            return count
    raise LoweringError(f"patterns did not converge after {max_rounds} rounds")
