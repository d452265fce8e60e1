"""channels-last: convolutions run in NHWC, the layout oneDNN's fast kernels take (brgconv; on NCHW it
falls back to im2col + GEMM, 1.2-3.8x slower on ResNet-50's convolutions, measured here), and chains of
them keep it: each convolution reads permute(x, NCHW->NHWC) and gives permute(y, NHWC->NCHW), and the
permutes are sunk through the ops between convolutions (elementwise math, pooling, resampling, padding,
concatenation, group norm) until they meet and cancel (canonicalize's permute-permute). What is left
are the conversions at a chain's ends: a permute view the next consumer reads by strides, or, where
it cannot, a copy the planner makes (an explicit planned op, in the arena plan)."""
from __future__ import annotations

import numpy as np

from ...abi import BINARY_OPS, UNARY_OPS
from ...dialects.fused_ops import NCHW_TO_NHWC, NHWC_TO_NCHW
from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import Const, N, Pattern, apply_patterns
from .canonicalize import CANONICALIZE

TO_NHWC, TO_NCHW = list(NCHW_TO_NHWC), list(NHWC_TO_NCHW)
CONVS = ("fused.conv2d", "fused.conv_transpose2d")
SPATIAL = ("fused.max_pool2d", "fused.avg_pool2d", "fused.adaptive_avg_pool2d", "fused.adaptive_max_pool2d",
           "fused.upsample2d")


def _view(x: str = "$x") -> N:
    """An NHWC value seen as NCHW (the permute each conv's result is read through)."""
    return N("fused.permute", [x], perm=TO_NCHW)


def _permute(b, x, perm):
    return b.op("fused.permute", [x], {"perm": list(perm)})


def _conv_nhwc(m, b):
    c = m.op("c")
    ops = list(c.operands) + [None] * (4 - len(c.operands))
    x, r = _permute(b, ops[0], TO_NHWC), None if ops[3] is None else _permute(b, ops[3], TO_NHWC)
    y = m.rebuild(b, "c", {0: x, 3: r}, layout="nhwc")
    return _permute(b, y, TO_NCHW)


def _spatial_nhwc(m, b):
    return _permute(b, m.rebuild(b, "op", {0: m["$x"]}, layout="nhwc"), TO_NCHW)


def _pad_nhwc(m, b):
    lo, hi = m.attr("op", "lo"), m.attr("op", "hi")
    y = m.rebuild(b, "op", {0: m["$x"]}, lo=[lo[i] for i in TO_NHWC], hi=[hi[i] for i in TO_NHWC])
    return _permute(b, y, TO_NCHW)


def _unary(m, b):
    return _permute(b, m.rebuild(b, "op", {0: m["$x"]}), TO_NCHW)


def _binary_both(m, b):
    """Both operands permuted alike (broadcasting, as a squeeze-and-excitation's channel scale, included)."""
    return _permute(b, b.op(m.op("op").name, [m["$x"], m["$y"]], dict(m.op("op").attrs)), TO_NCHW)


def _binary_const(left: bool):
    def rw(m, b):
        c = m.array("$c")
        if c.ndim > 4:
            return None
        cv = m["$c"] if c.ndim == 0 else b.const(
            np.ascontiguousarray(c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(TO_NHWC)), "nhwc")
        x = m["$x"]
        y = b.op(m.op("op").name, [x, cv] if left else [cv, x], dict(m.op("op").attrs))
        return _permute(b, y, TO_NCHW) if y.type.shape == x.type.shape else None
    return rw


def _cat(m, b):
    parts = [m[f"$x{i}"] for i in range(len(m.op("op").operands))]
    return _permute(b, b.op("fused.cat", parts, {"dim": TO_NCHW[m.attr("op", "dim")]}), TO_NCHW)


def _cat_pattern(n: int) -> Pattern:
    """cat of n NHWC tensors seen as NCHW -> the NHWC cat (a UNet's skip connections)."""
    views = {f"v{i}": _view(f"$x{i}") for i in range(n)}
    return Pattern(f"cat{n}-nhwc", "op", {**views, "op": N("fused.cat", list(views))}, _cat, shared=tuple(views))


_UNARY = tuple(f"fused.{n}" for n in UNARY_OPS) + ("fused.cast",)
_BINARY = tuple(f"fused.{n}" for n in BINARY_OPS)

CHANNELS_LAST = [
    Pattern("conv-nhwc", "c", {"c": N(CONVS, ["$x", "$w", "$b?", "$r?"], layout="nchw")}, _conv_nhwc),
    Pattern("spatial-nhwc", "op", {"v": _view(), "op": N(SPATIAL, ["v"], layout="nchw")}, _spatial_nhwc,
            shared=("v",)),
    Pattern("group-norm-nhwc", "op", {"v": _view(), "op": N("fused.group_norm", ["v", "$g?", "$b?"], layout="nchw")},
            _spatial_nhwc, shared=("v",)),
    Pattern("pad-nhwc", "op", {"v": _view(), "op": N("fused.pad", ["v"])}, _pad_nhwc, shared=("v",)),
    Pattern("unary-nhwc", "op", {"v": _view(), "op": N(_UNARY, ["v"])}, _unary, shared=("v",)),
    Pattern("binary-nhwc", "op", {"v": _view(), "u": _view(x="$y"), "op": N(_BINARY, ["v", "u"])}, _binary_both,
            shared=("v", "u")),
    Pattern("binary-const-nhwc", "op", {"v": _view(), "op": N(_BINARY, ["v", Const("$c")], commutative=False)},
            _binary_const(True), shared=("v",)),
    Pattern("const-binary-nhwc", "op", {"v": _view(), "op": N(_BINARY, [Const("$c"), "v"], commutative=False)},
            _binary_const(False), shared=("v",)),
    *(_cat_pattern(n) for n in (2, 3, 4)),
]


@register_pass("channels-last", dialect="fused")
def channels_last(module: Module):
    """Convolutions in NHWC; the layout permutes sunk through the ops between them until they cancel."""
    if any(op.name in CONVS for op in module.ops):
        apply_patterns(module, CHANNELS_LAST + CANONICALIZE)
