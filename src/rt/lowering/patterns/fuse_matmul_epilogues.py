"""fuse-matmul-epilogues: a matmul's bias add, activation and residual add (also through the reshape
that restores its leading dims) become its epilogue; a residual add that only feeds a layer norm
becomes add_layer_norm. Benefits order them: bias, then activation, then residual."""
from __future__ import annotations

from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import ANY, N, Pattern, apply_patterns

MM = "fused.matmul"
ACTS = {"fused.relu": "relu", "fused.gelu_tanh": "gelu_tanh", "fused.gelu_erf": "gelu_erf", "fused.silu": "silu"}


def _bias(through: bool):
    def rw(m, b):
        mm = m.op("mm")
        bias = m["$b"]
        n = mm.result.type.shape[-1]
        out = m["out"].type
        src = m["src"].type if through else mm.result.type
        if bias.type.numel != n or bias.type.shape[-1:] != (n,) or out != src or bias.type.dtype != "f32":
            return None
        if through and src.shape[-1] != n:
            return None
        y = m.rebuild(b, "mm", {2: b.reshape(bias, [n])})
        return b.reshape(y, out.shape) if through else y
    return rw


def _act(through: bool):
    def rw(m, b):
        y = m.rebuild(b, "mm", act=ACTS[m.op("out").name])
        return b.reshape(y, m["out"].type.shape) if through else y
    return rw


def _residual(through: bool):
    def rw(m, b):
        mm = m.op("mm")
        r = m["$r"]
        out = m["out"].type
        src = m["src"] if through else mm.result
        if r.type != out or out != src.type or r is src:
            return None
        y = m.rebuild(b, "mm", {3: b.reshape(r, mm.result.type.shape)})
        return b.reshape(y, out.shape) if through else y
    return rw


def _add_layer_norm(m, b):
    x, r = m["$x"], m["$r"]
    if x.type != r.type or x.type.dtype != "f32":
        return None
    ln = m.op("out")
    return b.op("fused.add_layer_norm", [x, r] + list(ln.operands[1:]), dict(ln.attrs))


CHAINS = [
    Pattern("matmul-bias", "out", {"mm": N(MM, ["$a", "$w"], act="none"), "out": N("fused.add", ["mm", "$b"])},
            _bias(False), benefit=30),
    Pattern("matmul-bias-through-reshape", "out",
            {"mm": N(MM, ["$a", "$w"], act="none"), "src": N("fused.reshape", ["mm"]), "out": N("fused.add", ["src", "$b"])},
            _bias(True), benefit=30),
    Pattern("matmul-act", "out", {"mm": N(MM, ["$a", "$w", ANY, ANY], act="none"), "out": N(tuple(ACTS), ["mm"])},
            _act(False), benefit=20),
    Pattern("matmul-act-through-reshape", "out",
            {"mm": N(MM, ["$a", "$w", ANY, ANY], act="none"), "src": N("fused.reshape", ["mm"]), "out": N(tuple(ACTS), ["src"])},
            _act(True), benefit=20),
    Pattern("matmul-residual", "out", {"mm": N(MM, ["$a", "$w", ANY], act="none"), "out": N("fused.add", ["mm", "$r"])},
            _residual(False), benefit=10),
    Pattern("matmul-residual-through-reshape", "out",
            {"mm": N(MM, ["$a", "$w", ANY], act="none"), "src": N("fused.reshape", ["mm"]), "out": N("fused.add", ["src", "$r"])},
            _residual(True), benefit=10),
    Pattern("add-layer-norm", "out", {"s": N("fused.add", ["$x", "$r"]), "out": N("fused.layer_norm", ["s", "$g?", "$b?"])},
            _add_layer_norm, benefit=5),
]


@register_pass("fuse-matmul-epilogues", dialect="fused")
def fuse_matmul_epilogues(module: Module):
    """matmul + bias, + activation (relu/GELU), + residual add -> one matmul with an epilogue;
    a residual add that only feeds a layer norm -> add_layer_norm."""
    apply_patterns(module, CHAINS)
