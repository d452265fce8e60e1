"""fuse-dag: GELU (tanh and erf forms), layer norm and softmax as a model writes them out, in their
usual association orders, each become one fused op."""
from __future__ import annotations

import math

import numpy as np

from ...dialects.fused_ops import rope_table_ok
from ...dialects.ir import Module, padded
from ...dialects.registry import normalize_dim
from ..passmanager import register_pass
from ..rewrite import Approx, Match, N, Pattern, Scalar, apply_patterns

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TOL = dict(rel=1e-4, abs=1e-6)


# ---- GELU ------------------------------------------------------------------------------------
def _gelu(kind):
    return lambda m, b: b.op(f"fused.gelu_{kind}", [m["$x"]]) if m["$x"].type.dtype == "f32" else None


def _half_x_times(name, kind, inner):
    """0.5 * x * p1 (p1 the node "p1" of `inner`) in its three usual association orders."""
    orders = {
        "a": {"half": N("fused.mul", ["$x", Scalar(0.5)]), "out": N("fused.mul", ["half", "p1"])},
        "b": {"xp": N("fused.mul", ["$x", "p1"]), "out": N("fused.mul", ["xp", Scalar(0.5)])},
        "c": {"hp": N("fused.mul", ["p1", Scalar(0.5)]), "out": N("fused.mul", ["$x", "hp"])},
    }
    return [Pattern(f"{name}-{o}", "out", {**inner, **nodes}, _gelu(kind)) for o, nodes in orders.items()]


def _gelu_tanh_patterns():
    out = []
    cubes = {
        "pow": {"cube": N("fused.pow", ["$x"], exponent=Approx(3.0))},
        "mul": {"sq": N("fused.mul", ["$x", "$x"]), "cube": N("fused.mul", ["sq", "$x"])},
    }
    for cname, cube in cubes.items():
        inner = {
            **cube,
            "c1": N("fused.mul", ["cube", Scalar(0.044715, **_TOL)]),
            "in": N("fused.add", ["$x", "c1"]),
            "c2": N("fused.mul", ["in", Scalar(_SQRT_2_OVER_PI, **_TOL)]),
            "th": N("fused.tanh", ["c2"]),
            "p1": N("fused.add", ["th", Scalar(1.0)]),
        }
        out += _half_x_times(f"gelu-tanh-{cname}", "tanh", inner)     # 0.5 * x * (1 + tanh(...))
    return out


def _gelu_erf_patterns():
    out = []
    scaled = {
        "mul": {"e": N("fused.mul", ["$x", Scalar(1 / math.sqrt(2), **_TOL)])},
        "div": {"e": N("fused.div", ["$x", Scalar(math.sqrt(2), **_TOL)], commutative=False)},
    }
    for sname, sc in scaled.items():
        inner = {**sc, "erf": N("fused.erf", ["e"]), "p1": N("fused.add", ["erf", Scalar(1.0)])}
        out += _half_x_times(f"gelu-erf-{sname}", "erf", inner)       # 0.5 * x * (1 + erf(x / sqrt 2))
    return out


# ---- layer norm and softmax: reductions over the last dim only (what the kernels do) ----------
def _last_dim(nid):
    def ok(m):
        op = m.op(nid)
        rank = op.operands[0].type.rank
        return [normalize_dim(d, rank) for d in m.attr(nid, "dims")] == [rank - 1] and m.attr(nid, "keepdim")
    return ok


def _ln_where(m: Match) -> bool:
    return (_last_dim("mean")(m) and _last_dim("var")(m) and m["$x"].type.dtype == "f32"
            and m["$eps"].type.numel == 1)


def _ln(m, b):
    eps = float(str(np.float32(m.scalar("$eps"))))   # the f32 constant, shortest decimal
    g = m.get("$g")
    if g is not None:
        n = m["$x"].type.shape[-1]
        if g.type.numel != n or g.type.shape[-1:] != (n,) or m["out"].type != m["$x"].type:
            return None
        g = b.reshape(g, [n])
    return b.op("fused.layer_norm", [m["$x"], g], {"eps": float(eps)})


def _layer_norm_patterns():
    core = {
        "mean": N("fused.mean", ["$x"]),
        "d": N("fused.sub", ["$x", "mean"]),
        "var": N("fused.mean", ["sq"]),
        "ve": N("fused.add", ["var", Scalar(capture="$eps")]),
    }
    squares = {"pow": N("fused.pow", ["d"], exponent=Approx(2.0)), "mul": N("fused.mul", ["d", "d"])}
    out = []
    for sqn, sq in squares.items():
        base = {**core, "sq": sq}
        out.append(Pattern(f"layer-norm-sqrt-{sqn}", "out", {**base, "sd": N("fused.sqrt", ["ve"]),
                                                              "out": N("fused.div", ["d", "sd"])}, _ln, where=_ln_where))
        out.append(Pattern(f"layer-norm-rsqrt-{sqn}", "out", {**base, "rs": N("fused.rsqrt", ["ve"]),
                                                               "out": N("fused.mul", ["d", "rs"])}, _ln, where=_ln_where))
        out.append(Pattern(f"layer-norm-gamma-first-{sqn}", "out",
                           {**base, "sd": N("fused.sqrt", ["ve"]), "gd": N("fused.mul", ["$g", "d"]),
                            "out": N("fused.div", ["gd", "sd"])}, _ln, where=_ln_where))
    return out


def _ln_affine(kind):
    def rw(m, b):
        ln = m.op("ln")
        ops = padded(ln.operands, 3)
        p = m["$p"]
        n = ln.result.type.shape[-1]
        if p.type.numel != n or p.type.shape[-1:] != (n,) or m["out"].type != ln.result.type:
            return None
        if kind == "gamma":
            if ops[1] is not None or ops[2] is not None:
                return None
            return b.op("fused.layer_norm", [ops[0], b.reshape(p, [n])], dict(ln.attrs))
        if ops[2] is not None:
            return None
        return b.op("fused.layer_norm", [ops[0], ops[1], b.reshape(p, [n])], dict(ln.attrs))
    return rw


def _softmax_where(m: Match) -> bool:
    ok = _last_dim("s")(m) and m["$x"].type.dtype == "f32"
    if "mx" in m.ops:
        ok = ok and _last_dim("mx")(m)
    return ok


# ---- RMS norm (Llama's, in float32): x * rsqrt(mean(x^2) + eps), then times the weight ---------
def _rms_where(m: Match) -> bool:
    return _last_dim("ms")(m) and m["$x"].type.dtype == "f32" and m["$eps"].type.numel == 1


def _rms(m, b):
    eps = float(str(np.float32(m.scalar("$eps"))))
    return b.op("fused.rms_norm", [m["$x"]], {"eps": eps})


def _rms_norm_patterns():
    squares = {"pow": N("fused.pow", ["$x"], exponent=Approx(2.0)), "mul": N("fused.mul", ["$x", "$x"])}
    out = []
    for sqn, sq in squares.items():
        base = {"sq": sq, "ms": N("fused.mean", ["sq"]), "ve": N("fused.add", ["ms", Scalar(capture="$eps")])}
        out.append(Pattern(f"rms-norm-rsqrt-{sqn}", "out", {**base, "rs": N("fused.rsqrt", ["ve"]),
                                                             "out": N("fused.mul", ["$x", "rs"])}, _rms, where=_rms_where))
        out.append(Pattern(f"rms-norm-sqrt-{sqn}", "out", {**base, "sd": N("fused.sqrt", ["ve"]),
                                                            "out": N("fused.div", ["$x", "sd"])}, _rms, where=_rms_where))
    return out


def _rms_weight(m, b):
    norm, w = m.op("norm"), m["$w"]
    n = norm.result.type.shape[-1]
    if len(norm.operands) > 1 or w.type.numel != n or w.type.shape[-1:] != (n,) or m["out"].type != norm.result.type:
        return None
    return b.op("fused.rms_norm", [norm.operands[0], b.reshape(w, [n])], dict(norm.attrs))


# ---- gates: silu(x) = x * sigmoid(x); act(gate) * up as one op (SwiGLU, GeGLU) ----------------
def _gated(kind):
    return lambda m, b: b.op(f"fused.{kind}_mul", [m["$g"], m["$u"]])


GATES = {"silu": "fused.silu", "gelu_tanh": "fused.gelu_tanh", "gelu_erf": "fused.gelu_erf"}


# ---- rotary embedding: x * cos + rotate_half(x) * sin, rotate_half = cat(-x2, x1) on the last dim --
def _rope_where(m: Match, unit_cos: bool = False) -> bool:
    x = m["$x"]
    cos = m["$sin"] if unit_cos else m["$cos"]
    d = x.type.rank - 1
    h = x.type.shape[-1] // 2
    return (x.type.rank == 4 and x.type.shape[-1] % 2 == 0 and m.attr("cat", "dim") == d
            and m.attr("hi", "dim") == d and m.attr("hi", "start") == h and m.attr("hi", "end") == 2 * h
            and m.attr("lo", "dim") == d and m.attr("lo", "start") == 0 and m.attr("lo", "end") == h
            and m.attr("hi", "step") == 1 and m.attr("lo", "step") == 1 and m["out"].type == x.type
            and cos.type.shape == m["$sin"].type.shape and m["$sin"].type.dtype == "f32"
            and rope_table_ok(cos.type, x.type) and rope_table_ok(m["$sin"].type, x.type))


def _rope(m, b):
    return b.op("fused.rope", [m["$x"], m["$cos"], m["$sin"]])


def _rope_unit_cos(m, b):
    """At position 0 alone cos is all ones and x * cos was folded away: the tables are (1, sin)."""
    sin = m["$sin"]
    return b.op("fused.rope", [m["$x"], b.const(np.ones(sin.type.shape, np.float32), "cos"), sin])


_ROTATE_HALF = {"hi": N("fused.slice", ["$x"]), "lo": N("fused.slice", ["$x"]), "neg": N("fused.neg", ["hi"]),
                "cat": N("fused.cat", ["neg", "lo"]), "rs": N("fused.mul", ["cat", "$sin"])}
ROPE = [
    Pattern("rope-rotate-half", "out", {**_ROTATE_HALF, "xc": N("fused.mul", ["$x", "$cos"]),
                                        "out": N("fused.add", ["xc", "rs"])}, _rope, where=_rope_where),
    Pattern("rope-rotate-half-unit-cos", "out", {**_ROTATE_HALF, "out": N("fused.add", ["$x", "rs"])},
            _rope_unit_cos, where=lambda m: _rope_where(m, unit_cos=True)),
]


DAG = _gelu_tanh_patterns() + _gelu_erf_patterns() + _layer_norm_patterns() + _rms_norm_patterns() + [
    Pattern("rms-norm-weight", "out", {"norm": N("fused.rms_norm", ["$x"]), "out": N("fused.mul", ["norm", "$w"])},
            _rms_weight),
    Pattern("silu", "out", {"sg": N("fused.sigmoid", ["$x"]), "out": N("fused.mul", ["$x", "sg"])},
            lambda m, b: b.op("fused.silu", [m["$x"]]) if m["$x"].type.dtype == "f32" else None),
    *[Pattern(f"{kind}-gate", "out", {"act": N(op, ["$g"]), "out": N("fused.mul", ["act", "$u"])}, _gated(kind),
              where=lambda m: m["out"].type == m["$g"].type == m["$u"].type)
      for kind, op in GATES.items()],
    *ROPE,
    Pattern("layer-norm-gamma", "out", {"ln": N("fused.layer_norm", ["$x", "$g?", "$b?"]),
                                        "out": N("fused.mul", ["ln", "$p"])}, _ln_affine("gamma")),
    Pattern("layer-norm-beta", "out", {"ln": N("fused.layer_norm", ["$x", "$g?", "$b?"]),
                                       "out": N("fused.add", ["ln", "$p"])}, _ln_affine("beta")),
    Pattern("softmax-stable", "out", {"mx": N("fused.amax", ["$x"]), "sh": N("fused.sub", ["$x", "mx"]),
                                      "e": N("fused.exp", ["sh"]), "s": N("fused.sum", ["e"]),
                                      "out": N("fused.div", ["e", "s"])},
            lambda m, b: b.op("fused.softmax", [m["$x"]]), where=_softmax_where),
    Pattern("softmax-plain", "out", {"e": N("fused.exp", ["$x"]), "s": N("fused.sum", ["e"]),
                                     "out": N("fused.div", ["e", "s"])},
            lambda m, b: b.op("fused.softmax", [m["$x"]]), where=_softmax_where),
]


@register_pass("fuse-dag", dialect="fused")
def fuse_dag(module: Module):
    """GELU (tanh and erf forms), layer norm and softmax written out by the model -> one op each."""
    apply_patterns(module, DAG)
