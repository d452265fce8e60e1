"""The fused dialect's rewrites, as pattern declarations grouped into passes.

Each pass is a list of patterns handed to the one rewrite engine (rewrite.py). A new fusion is a new
`Pattern(...)` in the right list (and a kernel), not a new pass.
"""
from __future__ import annotations

import math

import numpy as np

from ..dialects.ir import Module, padded
from .passmanager import register_pass
from .rewrite import ANY, Approx, Const, Match, N, Pattern, Scalar, apply_patterns

MM = "fused.matmul"
ACTS = {"fused.relu": "relu", "fused.gelu_tanh": "gelu_tanh", "fused.gelu_erf": "gelu_erf"}


def _mm_attrs(m: Match, nid: str, **changes) -> dict:
    op = m.op(nid)
    attrs = dict(op.attrs)
    attrs.update(changes)
    return attrs


def _mm_rebuild(m: Match, b, nid: str, operands=None, **changes):
    op = m.op(nid)
    ops = padded(op.operands, 4)
    if operands:
        for i, v in operands.items():
            ops[i] = v
    return b.op(MM, ops, _mm_attrs(m, nid, **changes))


def _swap_last_two(perm) -> bool:
    n = len(perm)
    return n >= 2 and list(perm) == list(range(n - 2)) + [n - 1, n - 2]


# =============================================================================================
# canonicalize: identities and view chains
# =============================================================================================
def _reshape_identity(m, b):
    x = m["$x"]
    return x if x.type.shape == m["r"].type.shape else None


def _compose_perm(m, b):
    inner, outer = m.attr("p1", "perm"), m.attr("p2", "perm")
    perm = [inner[i] for i in outer]
    x = m["$x"]
    return x if perm == list(range(len(perm))) else b.op("fused.permute", [x], {"perm": perm})


def _sink_expand_unary(m, b):
    e = m.op("e")
    inner = b.op(m.op("u").name, [m["$x"]], dict(m.op("u").attrs))
    return b.op("fused.expand", [inner], dict(e.attrs))


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
    if tuple(np.broadcast_shapes(x.type.shape, s.shape)) != out.shape:
        return None
    return b.op("fused.add", [x, b.const(s, "fold.add")])


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
            lambda m, b: b.op("fused.expand", [m["$x"]], dict(m.op("e2").attrs)), shared=("e1",)),
    Pattern("cast-identity", "c", {"c": N("fused.cast", ["$x"])},
            lambda m, b: m["$x"] if m["$x"].type.dtype == m.attr("c", "dtype") else None),
    Pattern("attention-mask-expand", "a", {"e": N("fused.expand", ["$m"]), "a": N("fused.attention", ["$q", "$k", "$v", "e"])},
            lambda m, b: b.op("fused.attention", [m["$q"], m["$k"], m["$v"], m["$m"]], dict(m.op("a").attrs)),
            shared=("e",)),
    # elementwise work on a broadcast mask is done before the broadcast
    Pattern("sink-expand-unary", "u", {"e": N("fused.expand", ["$x"]), "u": N(_UNARY, ["e"])}, _sink_expand_unary),
    Pattern("sink-expand-binary-l", "u", {"e": N("fused.expand", ["$x"]), "u": N(_BINARY, ["e", Const("$s")], commutative=False)},
            _sink_expand_binary(True)),
    Pattern("sink-expand-binary-r", "u", {"e": N("fused.expand", ["$x"]), "u": N(_BINARY, [Const("$s"), "e"], commutative=False)},
            _sink_expand_binary(False)),
    Pattern("mul-one", "u", {"u": N("fused.mul", ["$x", Scalar(1.0)])},
            lambda m, b: m["$x"] if m["$x"].type == m["u"].type else None),
    Pattern("div-one", "u", {"u": N("fused.div", ["$x", Scalar(1.0)])},
            lambda m, b: m["$x"] if m["$x"].type == m["u"].type else None),
    Pattern("add-zero", "u", {"u": N("fused.add", ["$x", Scalar(0.0)])},
            lambda m, b: m["$x"] if m["$x"].type == m["u"].type else None),
    Pattern("sub-zero", "u", {"u": N("fused.sub", ["$x", Scalar(0.0)])},
            lambda m, b: m["$x"] if m["$x"].type == m["u"].type else None),
]


@register_pass("canonicalize", dialect="fused")
def canonicalize(module: Module):
    """Remove identity views/casts, merge view chains, sink broadcasts below elementwise mask math."""
    apply_patterns(module, CANONICALIZE)


# =============================================================================================
# absorb transposes and scalar multiplies into matmul attributes
# =============================================================================================
def _absorb_transpose(which: int):
    flag = "transpose_a" if which == 0 else "transpose_b"

    def rw(m, b):
        if not _swap_last_two(m.attr("t", "perm")):
            return None
        return _mm_rebuild(m, b, "mm", {which: m["$x"]}, **{flag: not m.attr("mm", flag)})
    return rw


def _scale_out(divide: bool, through_reshape: bool):
    def rw(m, b):
        s = m.scalar("$s")
        if divide and s == 0:
            return None
        src = m["src"] if through_reshape else m["mm"]
        if m["$s"].type.dtype != "f32" or m["u"].type.shape != src.type.shape:
            return None
        alpha = m.attr("mm", "alpha") * (1.0 / s if divide else s)
        y = _mm_rebuild(m, b, "mm", alpha=float(alpha))
        return b.reshape(y, m["u"].type.shape) if through_reshape else y
    return rw


def _scale_in(which: int, divide: bool):
    def rw(m, b):
        s = m.scalar("$s")
        x = m["$x"]
        if (divide and s == 0) or m["sc"].type != x.type:
            return None
        alpha = m.attr("mm", "alpha") * (1.0 / s if divide else s)
        return _mm_rebuild(m, b, "mm", {which: x}, alpha=float(alpha))
    return rw


ABSORB_MATMUL = [
    Pattern("transpose-into-matmul-a", "mm", {"t": N("fused.permute", ["$x"]), "mm": N(MM, ["t", "$b", "$c?", "$r?"])},
            _absorb_transpose(0), shared=("t",)),
    Pattern("transpose-into-matmul-b", "mm", {"t": N("fused.permute", ["$x"]), "mm": N(MM, ["$a", "t", "$c?", "$r?"])},
            _absorb_transpose(1), shared=("t",)),
]
for _div, _op in ((False, "fused.mul"), (True, "fused.div")):
    _n = _op[len("fused."):]
    ABSORB_MATMUL += [
        Pattern(f"{_n}-scalar-into-matmul", "u",
                {"mm": N(MM, ["$a", "$b"], act="none"), "u": N(_op, ["mm", Scalar(capture="$s")], commutative=not _div)},
                _scale_out(_div, False)),
        Pattern(f"{_n}-scalar-into-matmul-through-reshape", "u",
                {"mm": N(MM, ["$a", "$b"], act="none"), "src": N("fused.reshape", ["mm"]),
                 "u": N(_op, ["src", Scalar(capture="$s")], commutative=not _div)},
                _scale_out(_div, True)),
        Pattern(f"{_n}-scalar-into-matmul-a", "mm",
                {"sc": N(_op, ["$x", Scalar(capture="$s")], commutative=not _div), "mm": N(MM, ["sc", "$b"], act="none")},
                _scale_in(0, _div), shared=("sc",)),
        Pattern(f"{_n}-scalar-into-matmul-b", "mm",
                {"sc": N(_op, ["$x", Scalar(capture="$s")], commutative=not _div), "mm": N(MM, ["$a", "sc"], act="none")},
                _scale_in(1, _div), shared=("sc",)),
    ]


@register_pass("absorb-matmul-operands", dialect="fused")
def absorb_matmul(module: Module):
    """Transposes of matmul operands -> transpose flags; scalar mul/div around a matmul -> alpha."""
    apply_patterns(module, ABSORB_MATMUL)


# =============================================================================================
# DAG fusions: GELU (tanh and erf forms), layer norm, softmax written out
# =============================================================================================
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TOL = dict(rel=1e-4, abs=1e-6)


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


def _last_dim(nid):
    def ok(m):
        op = m.op(nid)
        rank = op.operands[0].type.rank
        return list(m.attr(nid, "dims")) == [rank - 1] and m.attr(nid, "keepdim")
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


DAG = _gelu_tanh_patterns() + _gelu_erf_patterns() + _layer_norm_patterns() + [
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


# =============================================================================================
# attention: matmul -> (scale) -> [mask] -> softmax -> matmul, and causal mask absorption
# =============================================================================================
def _attention(mask_kind: str):
    def rw(m, b):
        q, k, v = m["$q"], m["$k"], m["$v"]
        if not m.attr("sc", "transpose_b"):
            perm = list(range(k.type.rank))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            k = b.op("fused.permute", [k], {"perm": perm})
        if q.type.rank not in (3, 4) or not (q.type.shape[:-2] == k.type.shape[:-2] == v.type.shape[:-2]):
            return None
        if any(t.type.dtype != "f32" for t in (q, k, v)):
            return None
        mask = None
        scores = m["sc"].type.shape
        if mask_kind == "add":
            mask = m["$mask"]
        elif mask_kind == "fill":
            keep, fill = m.array("$keep"), m.array("$fill")
            if keep is None or fill is None:
                return None
            kb = np.broadcast_to(keep, np.broadcast_shapes(keep.shape, fill.shape))
            fb = np.broadcast_to(fill, kb.shape)
            if not (np.all((kb == 0) | (kb == 1)) and np.all(fb[kb == 1] == 0) and np.all(fb[kb == 0] <= -1e4)):
                return None
            mask = b.const(np.where(kb == 1, 0.0, -np.inf).astype(np.float32), "mask")
        if mask is not None:
            if mask.type.dtype != "f32":
                return None
            try:
                if tuple(np.broadcast_shapes(mask.type.shape, scores)) != tuple(scores):
                    return None
            except ValueError:
                return None
        return b.op("fused.attention", [q, k, v, mask], {"scale": float(m.attr("sc", "alpha"))})
    return rw


# scores = q @ k^T (k^T as a flag or not: the rewrite permutes k when not) times alpha; out = p @ v
_SCORES = {"sc": N(MM, ["$q", "$k"], transpose_a=False, act="none")}
_PV = N(MM, ["p", "$v"], transpose_a=False, transpose_b=False, alpha=1.0, act="none")
ATTENTION = [
    Pattern("attention", "pv", {**_SCORES, "p": N("fused.softmax", ["sc"]), "pv": _PV},
            _attention("none")),
    Pattern("attention-mask", "pv", {**_SCORES, "ms": N("fused.add", ["sc", "$mask"]), "p": N("fused.softmax", ["ms"]),
                                     "pv": _PV}, _attention("add")),
    # masked_fill(scores, const mask, -1e9) lowered as scores * keep + fill: under softmax, additive
    Pattern("attention-fill-mask", "pv", {**_SCORES, "k": N("fused.mul", ["sc", Const("$keep")]),
                                          "ms": N("fused.add", ["k", Const("$fill")]),
                                          "p": N("fused.softmax", ["ms"]), "pv": _PV},
            _attention("fill")),
]


@register_pass("fuse-attention", dialect="fused")
def fuse_attention(module: Module):
    """matmul(q, k^T) -> scale -> [+ mask] -> softmax -> matmul(., v)  =>  fused.attention."""
    apply_patterns(module, ATTENTION)


def is_causal_mask(arr: np.ndarray, sq: int, sk: int, big: float = -1e4) -> bool:
    """True if the additive mask is exactly 'query i sees keys j <= i' for every broadcast slice."""
    if arr is None or arr.dtype != np.float32 or arr.shape[-2:] not in ((sq, sk), (1, sk)) or arr.ndim < 2:
        return False
    a = np.broadcast_to(arr, arr.shape[:-2] + (sq, sk))
    open_ = np.tril(np.ones((sq, sk), dtype=bool))
    return bool(np.all(a[..., open_] == 0) and np.all(a[..., ~open_] <= big))


def _absorb_causal(m, b):
    a = m.op("a")
    q, k = m["$q"], m["$k"]
    if not is_causal_mask(m.array("$mask"), q.type.shape[-2], k.type.shape[-2]):
        return None
    return b.op("fused.attention", [q, k, m["$v"]], {**a.attrs, "causal": True})


CAUSAL = [Pattern("absorb-causal-mask", "a", {"a": N("fused.attention", ["$q", "$k", "$v", Const("$mask")])},
                  _absorb_causal)]


@register_pass("absorb-causal-mask", dialect="fused")
def absorb_causal_mask(module: Module):
    """An attention whose constant mask is the causal pattern becomes causal = true, no mask."""
    apply_patterns(module, CAUSAL)


# =============================================================================================
# chain fusions into matmul epilogues: bias, activation, residual
# =============================================================================================
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
        y = _mm_rebuild(m, b, "mm", {2: b.reshape(bias, [n])})
        return b.reshape(y, out.shape) if through else y
    return rw


def _act(through: bool):
    def rw(m, b):
        y = _mm_rebuild(m, b, "mm", act=ACTS[m.op("out").name])
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
        y = _mm_rebuild(m, b, "mm", {3: b.reshape(r, mm.result.type.shape)})
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
def fuse_chains(module: Module):
    """matmul + bias, + activation (relu/GELU), + residual add -> one matmul with an epilogue;
    a residual add that only feeds a layer norm -> add_layer_norm."""
    apply_patterns(module, CHAINS)


# =============================================================================================
# views around attention: write [B, S, H*D] directly
# =============================================================================================
def _merge_heads(m, b):
    a = m.op("a")
    if m.attr("a", "merge_heads") or a.result.type.rank != 4 or list(m.attr("t", "perm")) != [0, 2, 1, 3]:
        return None
    y = b.op("fused.attention", list(a.operands), {**a.attrs, "merge_heads": True})
    return b.reshape(y, m["t"].type.shape)


VIEWS = [Pattern("attention-merge-heads", "t", {"a": N("fused.attention", ["$q", "$k", "$v", "$m?"]),
                                                "t": N("fused.permute", ["a"])}, _merge_heads)]


@register_pass("fuse-attention-views", dialect="fused")
def fuse_attention_views(module: Module):
    """attention -> transpose(1, 2) -> reshape  =>  attention{merge_heads} writing [B, S, H*D]."""
    apply_patterns(module, VIEWS)
    apply_patterns(module, CANONICALIZE)


# =============================================================================================
# composites left over after fusion -> kernels
# =============================================================================================
def _pow_lower(m, b):
    e = m.attr("p", "exponent")
    x = m["$x"]
    if e == 1.0:
        return x
    if e == 2.0:
        return b.op("fused.mul", [x, x])
    if e == 3.0:
        return b.op("fused.mul", [b.op("fused.mul", [x, x]), x])
    if e == 0.5:
        return b.op("fused.sqrt", [x])
    if e == -0.5:
        return b.op("fused.rsqrt", [x])
    if e == -1.0:
        return b.op("fused.div", [b.const(np.array(1, x.type.np_dtype), "scalar"), x])
    return None


def _reduce_lower(m, b):
    """mean/sum over the last dim = x[M, N] @ ones[N, 1] (alpha = 1/N for mean): a GEMV."""
    r = m.op("r")
    x = m["$x"]
    if x.type.dtype != "f32" or list(m.attr("r", "dims")) != [x.type.rank - 1] or x.type.rank < 1:
        return None
    n = x.type.shape[-1]
    rows = int(np.prod(x.type.shape[:-1], dtype=np.int64))
    ones = b.const(np.ones((n, 1), np.float32), "ones")
    alpha = 1.0 / n if r.name == "fused.mean" else 1.0
    y = b.op(MM, [b.reshape(x, [rows, n]), ones], {"alpha": alpha})
    return b.reshape(y, r.result.type.shape)


LOWER_COMPOSITES = [
    Pattern("pow-to-kernels", "p", {"p": N("fused.pow", ["$x"])}, _pow_lower),
    Pattern("mean-sum-to-matmul", "r", {"r": N(("fused.mean", "fused.sum"), ["$x"])}, _reduce_lower),
]


@register_pass("lower-composites", dialect="fused")
def lower_composites(module: Module):
    """pow with small exponents -> mul/sqrt/rsqrt; last-dim mean/sum -> matmul with a ones vector."""
    apply_patterns(module, LOWER_COMPOSITES)
