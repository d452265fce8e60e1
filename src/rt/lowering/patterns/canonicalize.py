"""canonicalize: identity views and casts vanish, view chains merge, broadcasts sink below the
elementwise math done on a mask, constant additions merge."""
from __future__ import annotations

import numpy as np

from ...dialects.ir import Module
from ...dialects.registry import broadcast_shapes
from ..passmanager import register_pass
from ..rewrite import Const, N, Pattern, Scalar, apply_patterns


def _reshape_identity(m, b):
    x = m["$x"]
    return x if x.type.shape == m["r"].type.shape else None


def _compose_perm(m, b):
    inner, outer = m.attr("p1", "perm"), m.attr("p2", "perm")
    perm = [inner[i] for i in outer]
    x = m["$x"]
    return x if perm == list(range(len(perm))) else b.op("fused.permute", [x], {"perm": perm})


def _sink_expand_unary(m, b):
    inner = m.rebuild(b, "u", {0: m["$x"]})
    return b.op("fused.expand", [inner], dict(m.op("e").attrs))


def _sink_expand_binary(first: bool):
    def rw(m, b):
        x, s = m["$x"], m["$s"]
        if s.type.rank != 0:
            return None
        inner = b.op(m.op("u").name, [x, s] if first else [s, x])
        if inner.type.dtype != m["u"].type.dtype:
            return None
        return b.op("fused.expand", [inner], dict(m.op("e").attrs))
    return rw


_UNARY = ("fused.cast", "fused.relu", "fused.neg", "fused.exp", "fused.sqrt", "fused.rsqrt", "fused.tanh",
          "fused.sigmoid")
_BINARY = ("fused.add", "fused.sub", "fused.mul", "fused.div")


def _add_consts(m, b):
    a, c = m.array("$a"), m.array("$b")
    x, out = m["$x"], m["o"].type
    if a is None or c is None or x.producer is not None and x.producer.name == "const":
        return None
    s = (a + c).astype(out.np_dtype)
    if tuple(broadcast_shapes(x.type.shape, s.shape)) != out.shape:
        return None
    return b.op("fused.add", [x, b.const(s, "fold.add")])


def _same_type_as(root):
    """x itself, when dropping the op leaves the type unchanged (x * 1 with a broadcasting 1 does not)."""
    return lambda m, b: m["$x"] if m["$x"].type == m[root].type else None


CANONICALIZE = [
    # (x + c1) + c2 -> x + (c1 + c2): BERT's token-type and position embeddings become one add
    Pattern("add-const-const", "o", {"i": N("fused.add", ["$x", Const("$a")]), "o": N("fused.add", ["i", Const("$b")])},
            _add_consts),
    Pattern("reshape-identity", "r", {"r": N("fused.reshape", ["$x"])}, _reshape_identity),
    Pattern("reshape-reshape", "r2", {"r1": N("fused.reshape", ["$x"]), "r2": N("fused.reshape", ["r1"])},
            lambda m, b: b.reshape(m["$x"], m["r2"].type.shape), shared=("r1",)),
    Pattern("permute-permute", "p2", {"p1": N("fused.permute", ["$x"]), "p2": N("fused.permute", ["p1"])},
            _compose_perm, shared=("p1",)),
    Pattern("permute-identity", "p", {"p": N("fused.permute", ["$x"])},
            lambda m, b: m["$x"] if list(m.attr("p", "perm")) == sorted(m.attr("p", "perm")) else None),
    Pattern("expand-identity", "e", {"e": N("fused.expand", ["$x"])},
            lambda m, b: m["$x"] if m["$x"].type.shape == m["e"].type.shape else None),
    Pattern("expand-expand", "e2", {"e1": N("fused.expand", ["$x"]), "e2": N("fused.expand", ["e1"])},
            lambda m, b: m.rebuild(b, "e2", {0: m["$x"]}), shared=("e1",)),
    Pattern("cast-identity", "c", {"c": N("fused.cast", ["$x"])},
            lambda m, b: m["$x"] if m["$x"].type.dtype == m.attr("c", "dtype") else None),
    # the attention kernel broadcasts its mask itself
    Pattern("attention-mask-expand", "a", {"e": N("fused.expand", ["$m"]), "a": N("fused.attention", ["$q", "$k", "$v", "e"])},
            lambda m, b: m.rebuild(b, "a", {3: m["$m"]}), shared=("e",)),
    # elementwise work on a broadcast mask is done before the broadcast
    Pattern("sink-expand-unary", "u", {"e": N("fused.expand", ["$x"]), "u": N(_UNARY, ["e"])}, _sink_expand_unary),
    Pattern("sink-expand-binary-l", "u", {"e": N("fused.expand", ["$x"]), "u": N(_BINARY, ["e", Const("$s")], commutative=False)},
            _sink_expand_binary(True)),
    Pattern("sink-expand-binary-r", "u", {"e": N("fused.expand", ["$x"]), "u": N(_BINARY, [Const("$s"), "e"], commutative=False)},
            _sink_expand_binary(False)),
    Pattern("mul-one", "u", {"u": N("fused.mul", ["$x", Scalar(1.0)])}, _same_type_as("u")),
    Pattern("div-one", "u", {"u": N("fused.div", ["$x", Scalar(1.0)])}, _same_type_as("u")),
    Pattern("add-zero", "u", {"u": N("fused.add", ["$x", Scalar(0.0)])}, _same_type_as("u")),
    Pattern("sub-zero", "u", {"u": N("fused.sub", ["$x", Scalar(0.0)])}, _same_type_as("u")),
]


@register_pass("canonicalize", dialect="fused")
def canonicalize(module: Module):
    """Remove identity views/casts, merge view chains, sink broadcasts below elementwise mask math."""
    apply_patterns(module, CANONICALIZE)
