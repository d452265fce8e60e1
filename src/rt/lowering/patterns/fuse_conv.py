"""fuse-conv: what surrounds a convolution becomes part of it. A zero pad before it becomes its padding; a
per-channel scale and shift after it (an inference batch norm, as legalised) fold into its weights and
bias at compile time; then an activation and a residual add become its epilogue (oneDNN post-ops).
Benefits order them: pad, scale, shift, activation, residual."""
from __future__ import annotations

import numpy as np

from ...dialects.fused_ops import conv_out_channels
from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import Const, Match, N, Pattern, apply_patterns

CONV = "fused.conv2d"
CONVS = (CONV, "fused.conv_transpose2d")
ACTS = {"fused.relu": "relu", "fused.gelu_tanh": "gelu_tanh", "fused.gelu_erf": "gelu_erf", "fused.silu": "silu",
        "fused.hardswish": "hardswish", "fused.hardsigmoid": "hardsigmoid", "fused.sigmoid": "sigmoid",
        "fused.tanh": "tanh", "fused.clamp": "clamp"}


def _bare(m: Match) -> bool:
    """The matched conv has no epilogue yet (a scale or shift must come before it)."""
    c = m.op("c")
    return m.attr("c", "act") == "none" and (len(c.operands) < 4 or c.operands[3] is None)


def per_channel(m: Match, key: str) -> np.ndarray | None:
    """The constant `key` as one float64 value per output channel of conv "c", when it varies along the
    channels only and broadcasting it leaves the conv's result type as it is; else None."""
    arr, conv, root = m.array(key), m["c"].type, m.op("out").result.type
    if arr is None or root != conv or arr.ndim > conv.rank or arr.dtype != np.float32:
        return None
    axis = 1 if m.attr("c", "layout") == "nchw" else 3
    shape = (1,) * (conv.rank - arr.ndim) + arr.shape
    o = conv.shape[axis]
    if any(d != 1 for i, d in enumerate(shape) if i != axis) or shape[axis] not in (1, o):
        return None
    return np.broadcast_to(arr.astype(np.float64).reshape(-1), (o,))


def _weights(m: Match):
    """The conv's constant weight and bias (zeros when it has none) in float64, or None."""
    c = m.op("c")
    w = m.module.const_value(c.operands[1])
    bias = c.operands[2] if len(c.operands) > 2 else None
    o = conv_out_channels(c.name, c.operands[1].type.shape, m.attr("c", "groups"))
    b = np.zeros(o) if bias is None else m.module.const_value(bias)
    return None if w is None or b is None else (w.astype(np.float64), b.astype(np.float64))


def _scaled(m: Match, w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """w with output channel o scaled by s[o]: w's dim 0 ([O, C/G, ...]), or, transposed ([C, O/G, ...]),
    dim 1 within each group."""
    if m.op("c").name == CONV:
        return w * s[:, None, None, None]
    g = m.attr("c", "groups")
    wg = w.reshape(g, w.shape[0] // g, *w.shape[1:])
    return (wg * s.reshape(g, 1, -1, 1, 1)).reshape(w.shape)


def _fold_scale(m, b):
    s, wb = per_channel(m, "$s"), _weights(m)
    if s is None or wb is None:
        return None
    w, bias = wb
    return m.rebuild(b, "c", {1: b.const(_scaled(m, w, s).astype(np.float32), "conv_w"),
                              2: b.const((bias * s).astype(np.float32), "conv_b")})


def _fold_shift(m, b):
    s, c = per_channel(m, "$s"), m.op("c")
    bias = c.operands[2] if len(c.operands) > 2 else None
    old = None if s is None else np.zeros(s.shape) if bias is None else m.module.const_value(bias)
    if old is None:
        return None
    return m.rebuild(b, "c", {2: b.const((old.astype(np.float64) + s).astype(np.float32), "conv_b")})


def _fold_pad(m, b):
    """conv(pad(x)) with zeros added only around H and W (NCHW) -> the conv's own padding."""
    p = m.op("p")
    lo, hi = m.attr("p", "lo"), m.attr("p", "hi")
    if m.attr("p", "mode") != "constant" or m.attr("p", "value") != 0.0 or m.attr("c", "layout") != "nchw" \
            or any(lo[:2]) or any(hi[:2]):
        return None
    pt, pb, pl, pr = m.attr("c", "padding")
    return m.rebuild(b, "c", {0: p.operands[0]}, padding=[pt + lo[2], pb + hi[2], pl + lo[3], pr + hi[3]])


def _act(m, b):
    out = m.op("out")
    act = ACTS[out.name]
    extra = {"clamp_min": m.attr("out", "min"), "clamp_max": m.attr("out", "max")} if act == "clamp" else {}
    return m.rebuild(b, "c", act=act, **extra)


def _act_through_reshape(m, b):
    """act(reshape(conv)) -> reshape(conv {act}): a conv1d's activation (the conv runs as a 2-d one)."""
    return b.reshape(_act(m, b), m["out"].type.shape)


def _residual(m, b):
    r = m["$r"]
    if r.type != m["c"].type or m.module.const_value(r) is not None or r is m["c"]:
        return None
    return m.rebuild(b, "c", {3: r})


FUSE_CONV = [
    Pattern("conv-pad", "c", {"p": N("fused.pad", ["$x"]), "c": N(CONV, ["p", "$w", "$b?", "$r?"])}, _fold_pad,
            benefit=50),
    Pattern("conv-scale", "out", {"c": N(CONVS, ["$x", "$w", "$b?"]), "out": N("fused.mul", ["c", Const("$s")])},
            _fold_scale, where=_bare, benefit=40),
    Pattern("conv-shift", "out", {"c": N(CONVS, ["$x", "$w", "$b?"]), "out": N("fused.add", ["c", Const("$s")])},
            _fold_shift, where=_bare, benefit=30),
    Pattern("conv-act", "out", {"c": N(CONVS, ["$x", "$w", "$b?", "$r?"], act="none"), "out": N(tuple(ACTS), ["c"])},
            _act, benefit=20),
    Pattern("conv-act-through-reshape", "out", {"c": N(CONVS, ["$x", "$w", "$b?", "$r?"], act="none"),
                                                "v": N("fused.reshape", ["c"]), "out": N(tuple(ACTS), ["v"])},
            _act_through_reshape, benefit=20),
    Pattern("conv-residual", "out", {"c": N(CONVS, ["$x", "$w", "$b?"]), "out": N("fused.add", ["c", "$r"])},
            _residual, where=_bare, benefit=10),
]


@register_pass("fuse-conv", dialect="fused")
def fuse_conv(module: Module):
    """Zero pad -> conv padding; per-channel scale/shift (batch norm) -> conv weights/bias; activation
    and residual add -> conv epilogue."""
    apply_patterns(module, FUSE_CONV)
