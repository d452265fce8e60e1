"""The fused dialect: fewer, bigger ops; no fold-only op may appear here.

Every op here maps onto C kernels (rt/abi.py, encoded by rt.kernels.encode) or is a view (trait VIEW,
no kernel: the planner turns it into strided storage). Decomposed forms (layer norm, softmax, GELU as
a DAG of pow/mean/sum/...) are fused by the lowering where it recognises them, and run op by op
where it does not.

Compute ops
  fused.matmul a, b, bias?, residual? {transpose_a, transpose_b, alpha, act}
      act(alpha * op(a) @ op(b) + bias + residual); op() swaps the last two dims when its transpose
      flag is set; batch dims broadcast (numpy matmul). bias has shape [N]; residual has the result's
      shape. act in {none, relu, gelu_tanh, gelu_erf, silu}.
  fused.<unary> x {params}     elementwise, rt.abi.UNARY_OPS (relu, silu, sin, cos, pow {exponent},
                               clamp {min, max}, leaky_relu {negative_slope}, ...; UNARY_PARAMS)
  fused.<binary> a, b          elementwise with numpy broadcasting, rt.abi.BINARY_OPS (add, sub, mul,
                               div, maximum, minimum, pow_tensor, fmod, remainder, comparisons, logical
                               and bitwise ops, ...): a and b of one dtype the op takes; comparisons and
                               logical ops give bool (rt.abi.BOOL_RESULT)
  fused.where c, a, b / fused.clamp_tensor x, lo, hi / fused.lerp a, b, w
                               ternary, broadcasting (rt.abi.TERNARY_OPS): c bool, the rest one dtype
  fused.<reduce> x {dims, keepdim, correction}   rt.abi.REDUCE_OPS (sum, mean, amax, amin, prod,
                               argmax, argmin (int64), var, std, logsumexp) over any dims
  fused.cumsum / fused.cumprod x {dim}                               running sum / product
  fused.gather x, idx {dim}    out[i] = x[.., idx[i] along dim, ..] (idx int64 of out's shape, x's dims
                               other than dim at least as big): torch.gather, and index_select, flip,
                               roll, index.Tensor through a broadcast or constant idx
  fused.scatter x, idx, src {dim, reduce, include_self}   torch.scatter / scatter_reduce: x with src's
                               items written (or reduced: sum, prod, amax, amin) at idx along dim
  fused.sort x {descending, k, result}    stable sort of the last dim, its first k (topk); result 0 the
                               values, 1 their int64 positions
  fused.softmax x / fused.log_softmax x                              over the last dim
  fused.layer_norm x, gamma?, beta? {eps}                            over the last dim, biased var
  fused.rms_norm x, gamma? {eps}                                     x / sqrt(mean(x^2) + eps) * gamma
  fused.attention q, k, v, mask? {scale, causal, merge_heads, kv_group}
      q [B,H,Sq,D] (or [B,Sq,D]), k [..,Sk,D], v [..,Sk,Dv] (with kv_group g, k and v have H/g heads:
      query head h reads kv head h // g); mask additive float, broadcastable to
      [B,H,Sq,Sk]; causal: query i sees keys j <= i. Result [B,H,Sq,Dv]; with merge_heads (rank 4
      only) the result is [B,Sq,H*Dv] (= out.transpose(1,2).reshape(B,Sq,H*Dv)), i.e. the kernel
      writes out[b, s, h*Dv + d] (strides o_sb = Sq*H*Dv, o_sh = Dv, o_ss = H*Dv).
  fused.cache_write cache, x {dim, start}
      a persistent buffer (`state`) with x written over [start, start + x's size) along dim; the
      result is the cache itself, updated in place (a generator's KV cache: rt.lowering.kv_cache)
  fused.rope x, cos, sin {rot, interleaved}
      rotary embedding of x [B,H,S,D] with [S,D] tables (or [B,S,D], [B,1,S,D]): the first rot dims
      (-1: all) as x*cos + rotate_half(x)*sin (interleaved: pairs 2j, 2j+1), the rest unchanged
  fused.embedding table, idx                                         table[idx], idx int64 any shape
  fused.cast x {dtype}                                               f32/i64/i32/bool
  fused.cat xs* {dim}                                                concatenation
View ops (trait VIEW; extra["view"](attrs, in_type, in_strides, out_type) -> (elem_offset, strides) | None)
  fused.reshape x {shape}             numpy reshape; a strided view when torch's view rules allow
  fused.permute x {perm}              result dim i = operand dim perm[i]
  fused.slice x {dim, start, end, step}   start/end normalised: 0 <= start <= end <= size, step >= 1
  fused.expand x {shape}              numpy broadcast_to (new dims on the left, size-1 dims stride 0)
  fused.diagonal / fused.as_strided / fused.unfold   the torch dialect's views of those names
"""
from __future__ import annotations

import math
import numpy as np

from ..abi import BINARY_OPS, BOOL_RESULT, ENUMS, REDUCE_OPS, SCAN_OPS, TERNARY_OPS, UNARY_OPS, qweight_bytes
from ..weight_formats import reference as packed_matmul_reference
from . import numerics
from .ir import DTYPES, TensorType, padded
from .strides import contiguous_strides, reshape_strides
from .registry import COMMUTATIVE, ELEMENTWISE, VIEW, Attr, broadcast_infer, broadcast_shapes, normalize_dim, op, same_as_first

ACTIVATIONS = tuple(numerics.ACTIVATIONS)


# ---- matmul ---------------------------------------------------------------------------------
def _mat(t, transpose):
    return (t.shape[-1], t.shape[-2]) if transpose else (t.shape[-2], t.shape[-1])


def _matmul_infer(types, attrs):
    a, b = types[0], types[1]
    m, k = _mat(a, attrs["transpose_a"])
    k2, n = _mat(b, attrs["transpose_b"])
    if k != k2:
        raise ValueError(f"contraction sizes differ: {a} x {b}")
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.with_shape(tuple(batch) + (m, n))


def _matmul_verify(op, types):
    a, b, bias, res = padded(types, 4)
    if a.rank < 2 or b.rank < 2:
        return "operands a and b need rank >= 2"
    if op.attrs.get("act", "none") not in ACTIVATIONS:
        return f"unknown act {op.attrs['act']!r} (known: {', '.join(ACTIVATIONS)})"
    n = _mat(b, op.attrs.get("transpose_b", False))[1]
    if bias is not None and bias.shape != (n,):
        return f"bias must have shape ({n},), got {bias}"
    if res is not None and res.shape != op.result.type.shape:
        return f"residual must have the result's shape {op.result.type.shape}, got {res}"
    return None


def _matmul_ref(args, attrs):
    a, b, bias, res = padded(args, 4)
    if attrs["transpose_a"]:
        a = np.swapaxes(a, -1, -2)
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    y = np.matmul(a, b)
    if attrs["alpha"] != 1:
        y = y * np.float32(attrs["alpha"])
    if bias is not None:
        y = y + bias
    if res is not None:
        y = y + res
    return numerics.ACTIVATIONS[attrs["act"]](y.astype(np.float32))


op("fused.matmul", ("a", "b", "bias?", "residual?"), _matmul_infer, _matmul_ref,
   attrs={"transpose_a": Attr("bool", False), "transpose_b": Attr("bool", False),
          "alpha": Attr("float", 1.0), "act": Attr("str", "none")},
   verify=_matmul_verify)


def _packed_infer(types, attrs):
    a = types[0]
    if a.shape[-1] != attrs["k"]:
        raise ValueError(f"a has {a.shape[-1]} inputs per row, the packed weight {attrs['k']}")
    return a.with_shape(tuple(a.shape[:-1]) + (attrs["n"],))


def _packed_verify(op, types):
    a, w, bias, res = padded(types, 4)
    at = {"group": 0, "zero_point": False, **op.attrs}
    if at["format"] not in ENUMS["weight_format"]:
        return f"unknown weight format {at['format']!r}"
    if at.get("act", "none") not in ACTIVATIONS:
        return f"unknown act {at['act']!r} (known: {', '.join(ACTIVATIONS)})"
    want = qweight_bytes(at["format"], at["n"], at["k"], at["group"], at["zero_point"])
    if w.dtype != "u8" or w.shape != (want,):
        return f"w must be u8 [{want}] (a [{at['n']}, {at['k']}] weight in {at['format']}), got {w}"
    if bias is not None and bias.shape != (at["n"],):
        return f"bias must have shape ({at['n']},), got {bias}"
    if res is not None and res.shape != op.result.type.shape:
        return f"residual must have the result's shape {op.result.type.shape}, got {res}"
    return None


#   fused.matmul_packed a, w, bias?, residual? {format, n, k, group, zero_point, rotate, alpha, act}
# act(alpha * a @ W^T + bias + residual) with W a constant [n, k] weight packed in `format`
# (rt/weight_formats.py); group: inputs per scale of an int format (k itself: one per output);
# rotate: W was packed turned by a Hadamard transform per block of inputs, and a is turned alike.
op("fused.matmul_packed", ("a", "w", "bias?", "residual?"), _packed_infer,
   packed_matmul_reference,
   attrs={"format": Attr("str"), "n": Attr("int"), "k": Attr("int"), "group": Attr("int", 0),
          "zero_point": Attr("bool", False), "rotate": Attr("bool", False), "alpha": Attr("float", 1.0),
          "act": Attr("str", "none")},
   verify=_packed_verify)


# ---- elementwise ----------------------------------------------------------------------------
# Parameters of the unary ops that have them: attribute names (they fill the C record's alpha, beta)
# with their defaults (torch's).
UNARY_PARAMS: dict[str, tuple[tuple[str, float | None], ...]] = {
    "softplus": (("beta", 1.0), ("threshold", 20.0)),
    "elu": (("alpha", 1.0),),
    "leaky_relu": (("negative_slope", 0.01),),
    "clamp": (("min", -np.inf), ("max", np.inf)),
    "pow": (("exponent", None),),
}


def _unary(name: str) -> None:
    fn = numerics.UNARY[name]
    params = UNARY_PARAMS.get(name, ())

    def ref(a, at):
        x = a[0]
        with np.errstate(all="ignore"):
            y = fn(x.astype(np.float64), **{p: at[p] for p, _ in params})
        return np.asarray(y).astype(x.dtype)
    op(f"fused.{name}", ("x",), same_as_first, ref, traits=(ELEMENTWISE,),
       attrs={p: Attr("float") if default is None else Attr("float", default) for p, default in params},
       params=tuple(p for p, _ in params))


for _name in UNARY_OPS:
    _unary(_name)


def _gated(act):
    return lambda a, b: numerics.ACTIVATIONS[act](a.astype(np.float64)) * b


_BINARY = {"add": (np.add, True), "sub": (np.subtract, False), "mul": (np.multiply, True),
           "div": (np.divide, False), "maximum": (np.maximum, True), "minimum": (np.minimum, True),
           "pow_tensor": (np.power, False), "silu_mul": (_gated("silu"), False),
           "gelu_tanh_mul": (_gated("gelu_tanh"), False), "gelu_erf_mul": (_gated("gelu_erf"), False)}


def _floor_divide(a, b):
    if a.dtype.kind == "f":
        return np.floor_divide(a, b)
    return np.floor_divide(a, np.where(b == 0, 1, b)) * (b != 0)


def _trunc_divide(a, b):
    if a.dtype.kind == "f":
        return np.trunc(a / b)
    q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
    return np.where(b == 0, 0, np.where((a < 0) != (b < 0), -q, q))


def _int_safe(fn):
    """fn(a, b) for floats; for integers with a zero divisor giving 0 (the kernel's choice: torch raises)."""
    return lambda a, b: fn(a, b) if a.dtype.kind == "f" else np.where(b == 0, 0, fn(a, np.where(b == 0, 1, b)))


_BINARY.update({
    "fmod": (_int_safe(np.fmod), False), "remainder": (_int_safe(np.remainder), False),
    "floor_divide": (_floor_divide, False), "trunc_divide": (_trunc_divide, False),
    "atan2": (np.arctan2, False), "copysign": (np.copysign, False), "hypot": (np.hypot, True),
    "logaddexp": (np.logaddexp, True), "fmax": (np.fmax, True), "fmin": (np.fmin, True),
    "eq": (np.equal, True), "ne": (np.not_equal, True), "lt": (np.less, False), "le": (np.less_equal, False),
    "gt": (np.greater, False), "ge": (np.greater_equal, False),
    "logical_and": (np.logical_and, True), "logical_or": (np.logical_or, True),
    "logical_xor": (np.logical_xor, True),
    "bitwise_and": (np.bitwise_and, True), "bitwise_or": (np.bitwise_or, True),
    "bitwise_xor": (np.bitwise_xor, True), "nextafter": (np.nextafter, False),
})


def _binary_verify(name):
    def verify(o, types):
        a, b = types
        if a.dtype != b.dtype or a.dtype not in BINARY_OPS[name]:
            return f"operands {a} and {b}: {name} takes two of one dtype in {BINARY_OPS[name]}"
        return None
    return verify


def _binary(name, fn, commutative):
    traits = (ELEMENTWISE,) + ((COMMUTATIVE,) if commutative else ())
    infer = (lambda t, a: broadcast_infer(t, a).with_dtype("bool")) if name in BOOL_RESULT else broadcast_infer

    def ref(args, at):
        x, y = args
        with np.errstate(all="ignore"):
            if x.dtype.kind == "f" and name not in BOOL_RESULT:
                r = fn(x.astype(np.float64), y.astype(np.float64))
            else:
                r = fn(x, y)
            return np.asarray(r).astype(np.bool_ if name in BOOL_RESULT else np.result_type(x, y))
    op(f"fused.{name}", ("a", "b"), infer, ref, traits=traits, verify=_binary_verify(name))


for _name in BINARY_OPS:
    _binary(_name, *_BINARY[_name])


# ---- ternary --------------------------------------------------------------------------------
def _lerp(a, b, w):
    a, b, w = (v.astype(np.float64) for v in (a, b, w))
    return np.where(np.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


def _clamp_tensor(x, lo, hi):
    if x.dtype.kind != "f":
        return np.minimum(np.maximum(x, lo), hi)
    return np.where(np.isnan(lo) | np.isnan(hi), np.where(np.isnan(lo), lo, hi), np.minimum(np.maximum(x, lo), hi))


_TERNARY = {"where": (lambda c, a, b: np.where(c, a, b), ("c", "a", "b")),
            "clamp_tensor": (_clamp_tensor, ("x", "lo", "hi")),
            "lerp": (_lerp, ("a", "b", "w"))}


def _ternary(name, fn, operands):
    def infer(types, at):
        return broadcast_infer(types, at).with_dtype(types[1].dtype)

    def verify(o, types):
        first, b, c = types
        if b.dtype != c.dtype or b.dtype not in TERNARY_OPS[name] or \
                (first.dtype != ("bool" if name == "where" else b.dtype)):
            return f"{name}: operands {types} do not fit (dtypes {TERNARY_OPS[name]})"
        return None

    def ref(args, at):
        with np.errstate(all="ignore"):
            return np.asarray(fn(*args)).astype(args[1].dtype)
    op(f"fused.{name}", operands, infer, ref, traits=(ELEMENTWISE,), verify=verify)


for _name in TERNARY_OPS:
    _ternary(_name, *_TERNARY[_name])


# ---- normalisations -------------------------------------------------------------------------
def _softmax_ref(args, attrs):
    x = args[0].astype(np.float64)
    with np.errstate(invalid="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        e = np.exp(x - m)
        return (e / np.sum(e, axis=-1, keepdims=True)).astype(args[0].dtype)


op("fused.softmax", ("x",), same_as_first, _softmax_ref)


def _log_softmax_ref(args, attrs):
    x = args[0].astype(np.float64)
    with np.errstate(all="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        return (x - m - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))).astype(args[0].dtype)


op("fused.log_softmax", ("x",), same_as_first, _log_softmax_ref)


def _layer_norm_ref(args, attrs):
    x, g, b = padded(args, 3)
    return numerics.layer_norm(x, g, b, attrs["eps"])


def _layer_norm_verify(op, types):
    x, g, b = padded(types, 3)
    for name, t in (("gamma", g), ("beta", b)):
        if t is not None and t.shape != (x.shape[-1],):
            return f"{name} must have shape ({x.shape[-1]},), got {t}"
    return None


op("fused.layer_norm", ("x", "gamma?", "beta?"), same_as_first, _layer_norm_ref,
   attrs={"eps": Attr("float", 1e-5)}, verify=_layer_norm_verify)


def _add_layer_norm_ref(args, attrs):
    x, r, g, b = padded(args, 4)
    return _layer_norm_ref([x + r, g, b], attrs)


def _add_layer_norm_verify(op, types):
    if types[1] != types[0]:
        return f"residual {types[1]} must have x's type {types[0]}"
    return _layer_norm_verify(op, [types[0]] + list(types[2:]))


def _rms_norm_ref(args, attrs):
    x, g = padded(args, 2)
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + attrs["eps"])
    return (y if g is None else y * g).astype(x.dtype)


op("fused.rms_norm", ("x", "gamma?"), same_as_first, _rms_norm_ref, attrs={"eps": Attr("float", 1e-6)},
   verify=lambda o, t: _layer_norm_verify(o, list(t) + [None] * (3 - len(t))))


# layer_norm(x + residual) where the sum has no other use (e.g. BERT's embeddings)
op("fused.add_layer_norm", ("x", "residual", "gamma?", "beta?"), same_as_first, _add_layer_norm_ref,
   attrs={"eps": Attr("float", 1e-5)}, verify=_add_layer_norm_verify)


# ---- attention ------------------------------------------------------------------------------
def _kv_heads(q, attrs) -> tuple:
    """The batch dims k and v must have: q's, with q's heads / kv_group (grouped-query attention)."""
    g = attrs["kv_group"]
    if g == 1:
        return q.shape[:-2]
    if q.rank != 4 or g < 1 or q.shape[1] % g:
        raise ValueError(f"kv_group {g} needs rank-4 q with a multiple of {g} heads, got {q}")
    return (q.shape[0], q.shape[1] // g)


def _attention_infer(types, attrs):
    q, k, v = types[0], types[1], types[2]
    if q.rank not in (3, 4) or k.rank != q.rank or v.rank != q.rank:
        raise ValueError("q, k, v need the same rank, 3 or 4")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or not (
            _kv_heads(q, attrs) == k.shape[:-2] == v.shape[:-2]):
        raise ValueError(f"q {q}, k {k}, v {v} do not fit together (kv_group {attrs['kv_group']})")
    if attrs["merge_heads"]:
        if q.rank != 4:
            raise ValueError("merge_heads needs rank-4 q, k, v")
        b, h, s = q.shape[0], q.shape[1], q.shape[2]
        return q.with_shape((b, s, h * v.shape[-1]))
    return q.with_shape(q.shape[:-1] + (v.shape[-1],))


def _attention_verify(op, types):
    q, k, v, mask = padded(types, 4)
    if mask is not None:
        want = q.shape[:-2] + (q.shape[-2], k.shape[-2])
        try:
            if broadcast_shapes(mask.shape, want) != tuple(want):
                raise ValueError
        except ValueError:
            return f"mask {mask} does not broadcast to {want}"
        if mask.dtype != "f32":
            return "mask must be an additive f32 mask"
    return None


def attention_reference(q, k, v, mask, scale, causal):
    s = np.matmul(q.astype(np.float64), np.swapaxes(k, -1, -2).astype(np.float64)) * scale
    if mask is not None:
        s = s + mask
    sq, sk = s.shape[-2], s.shape[-1]
    if causal:
        s = np.where(np.tril(np.ones((sq, sk), dtype=bool)), s, -np.inf)
    m = np.max(s, axis=-1, keepdims=True)
    dead = ~np.isfinite(m)                # a row that sees no key gives zeros (as the kernel, torch SDPA)
    e = np.exp(s - np.where(dead, 0.0, m))
    den = np.sum(e, axis=-1, keepdims=True)
    p = np.where(dead | (den == 0), 0.0, e / np.where(den == 0, 1.0, den))
    return np.matmul(p, v.astype(np.float64)).astype(np.float32)


def _attention_ref(args, attrs):
    q, k, v, mask = padded(args, 4)
    if attrs["kv_group"] > 1:
        k, v = (np.repeat(t, attrs["kv_group"], axis=1) for t in (k, v))
    out = attention_reference(q, k, v, mask, attrs["scale"], attrs["causal"])
    if attrs["merge_heads"]:
        b, h, s, d = out.shape
        out = np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(b, s, h * d)
    return out


op("fused.attention", ("q", "k", "v", "mask?"), _attention_infer, _attention_ref,
   attrs={"scale": Attr("float", 1.0), "causal": Attr("bool", False), "merge_heads": Attr("bool", False),
          "kv_group": Attr("int", 1)},
   verify=_attention_verify)


# ---- KV cache writes ------------------------------------------------------------------------
def _cache_write_infer(types, attrs):
    cache, x = types
    d, start = attrs["dim"], attrs["start"]
    want = cache.shape[:d] + (x.shape[d],) + cache.shape[d + 1:] if 0 <= d < cache.rank else None
    if x.rank != cache.rank or x.shape != want or x.dtype != cache.dtype or not (
            0 <= start and start + x.shape[d] <= cache.shape[d]):
        raise ValueError(f"cannot write {x} at {start} along dim {d} of the cache {cache}")
    return cache


def _cache_write_ref(args, attrs):
    cache, x = args
    out = np.array(cache)
    idx = [slice(None)] * out.ndim
    idx[attrs["dim"]] = slice(attrs["start"], attrs["start"] + x.shape[attrs["dim"]])
    out[tuple(idx)] = x
    return out


op("fused.cache_write", ("cache", "x"), _cache_write_infer, _cache_write_ref,
   attrs={"dim": Attr("int"), "start": Attr("int")})


# ---- rotary embedding -----------------------------------------------------------------------
def rope_table_ok(t, x) -> bool:
    """cos/sin: [S, D], [B or 1, S, D] or [B or 1, 1, S, D] for x [B, H, S, D]."""
    shape = t.shape
    if len(shape) == 4 and shape[1] == 1:
        shape = (shape[0],) + shape[2:]
    if len(shape) == 3 and shape[0] in (1, x.shape[0]):
        shape = shape[1:]
    return shape == x.shape[2:]


def _rope_verify(op, types):
    x, c, s = types
    if x.rank != 4:
        return f"x must be [B, H, S, D], got {x}"
    if not (rope_table_ok(c, x) and rope_table_ok(s, x)) or c.shape != s.shape:
        return f"cos {c} and sin {s} must be [S, D] tables for x {x}"
    rot = op.attrs.get("rot", -1)
    rot = x.shape[-1] if rot < 0 else rot
    if rot % 2 or not 0 <= rot <= x.shape[-1]:
        return f"rot {rot} must be even and at most {x.shape[-1]}"
    return None


def rope_reference(x, cos, sin, rot, interleaved):
    x64 = x.astype(np.float64)
    c = np.asarray(cos, np.float64).reshape((-1, 1) + cos.shape[-2:]) if cos.ndim > 2 else cos.astype(np.float64)
    s = np.asarray(sin, np.float64).reshape((-1, 1) + sin.shape[-2:]) if sin.ndim > 2 else sin.astype(np.float64)
    r = x64[..., :rot]
    if interleaved:
        rotated = np.stack([-r[..., 1::2], r[..., 0::2]], axis=-1).reshape(r.shape)
    else:
        rotated = np.concatenate([-r[..., rot // 2:], r[..., :rot // 2]], axis=-1)
    out = x64.copy()
    out[..., :rot] = r * c[..., :rot] + rotated * s[..., :rot]
    return out.astype(x.dtype)


op("fused.rope", ("x", "cos", "sin"), same_as_first,
   lambda a, at: rope_reference(a[0], a[1], a[2], at["rot"] if at["rot"] >= 0 else a[0].shape[-1], at["interleaved"]),
   attrs={"rot": Attr("int", -1), "interleaved": Attr("bool", False)}, verify=_rope_verify)


# ---- gathers and casts ----------------------------------------------------------------------
def _embedding_verify(op, types):
    if types[0].rank != 2:
        return "table must be [vocab, dim]"
    if types[1].dtype not in ("i64", "i32"):
        return "indices must be i64 (or i32)"
    return None


op("fused.embedding", ("table", "idx"),
   lambda t, a: t[0].with_shape(t[1].shape + (t[0].shape[1],)),
   lambda args, at: numerics.gather_rows(args[0], args[1]), verify=_embedding_verify)


def _cast_ref(args, attrs):
    x, dt = args[0], DTYPES[attrs["dtype"]]
    if dt == np.bool_:
        return x != 0
    return x.astype(dt)


op("fused.cast", ("x",), lambda t, a: t[0].with_dtype(a["dtype"]), _cast_ref,
   attrs={"dtype": Attr("str")}, traits=(ELEMENTWISE,),
   verify=lambda o, t: None if o.attrs["dtype"] in DTYPES else f"unknown dtype {o.attrs['dtype']!r}")


# ---- views ----------------------------------------------------------------------------------
def _strides(in_type, in_strides):
    return contiguous_strides(in_type.shape) if in_strides is None else tuple(in_strides)


def _reshape_infer(types, attrs):
    shape = tuple(attrs["shape"])
    if math.prod(shape) != types[0].numel:
        raise ValueError(f"cannot reshape {types[0]} to {list(shape)}")
    return types[0].with_shape(shape)


def _reshape_view(attrs, in_type, in_strides, out_type):
    s = reshape_strides(in_type.shape, in_strides, out_type.shape)
    return None if s is None else (0, s)


op("fused.reshape", ("x",), _reshape_infer, lambda a, at: np.reshape(a[0], tuple(at["shape"])),
   attrs={"shape": Attr("ints")}, traits=(VIEW,), view=_reshape_view)


def _permute_infer(types, attrs):
    perm = list(attrs["perm"])
    if sorted(perm) != list(range(types[0].rank)):
        raise ValueError(f"perm {perm} is not a permutation of {types[0].rank} dims")
    return types[0].with_shape(tuple(types[0].shape[p] for p in perm))


def _permute_view(attrs, in_type, in_strides, out_type):
    s = _strides(in_type, in_strides)
    return 0, tuple(s[p] for p in attrs["perm"])


op("fused.permute", ("x",), _permute_infer, lambda a, at: np.transpose(a[0], tuple(at["perm"])),
   attrs={"perm": Attr("ints")}, traits=(VIEW,), view=_permute_view)


def _slice_infer(types, attrs):
    t = types[0]
    d, start, end, step = attrs["dim"], attrs["start"], attrs["end"], attrs["step"]
    if not (0 <= d < t.rank and 0 <= start <= end <= t.shape[d] and step >= 1):
        raise ValueError(f"bad slice dim={d} [{start}:{end}:{step}] of {t}")
    shape = list(t.shape)
    shape[d] = (end - start + step - 1) // step
    return t.with_shape(shape)


def _slice_ref(args, attrs):
    idx = [slice(None)] * args[0].ndim
    idx[attrs["dim"]] = slice(attrs["start"], attrs["end"], attrs["step"])
    return args[0][tuple(idx)]


def _slice_view(attrs, in_type, in_strides, out_type):
    s = list(_strides(in_type, in_strides))
    d = attrs["dim"]
    offset = attrs["start"] * s[d]
    s[d] *= attrs["step"]
    return offset, tuple(s)


op("fused.slice", ("x",), _slice_infer, _slice_ref,
   attrs={"dim": Attr("int"), "start": Attr("int"), "end": Attr("int"), "step": Attr("int", 1)},
   traits=(VIEW,), view=_slice_view)


def _expand_infer(types, attrs):
    shape = tuple(attrs["shape"])
    if broadcast_shapes(types[0].shape, shape) != shape:
        raise ValueError(f"cannot expand {types[0]} to {list(shape)}")
    return types[0].with_shape(shape)


def _expand_view(attrs, in_type, in_strides, out_type):
    s = _strides(in_type, in_strides)
    out = []
    lead = out_type.rank - in_type.rank
    for i, d in enumerate(out_type.shape):
        j = i - lead
        out.append(0 if j < 0 or (in_type.shape[j] == 1 and d != 1) else s[j])
    return 0, tuple(out)


op("fused.expand", ("x",), _expand_infer, lambda a, at: np.broadcast_to(a[0], tuple(at["shape"])),
   attrs={"shape": Attr("ints")}, traits=(VIEW,), view=_expand_view)


# Views whose torch dialect op already says how they read their operand (diagonal, as_strided, unfold):
# the fused op is the same declaration under the fused name.
def _view_twin(torch_name: str) -> None:
    from . import torch_ops  # noqa: F401  (the torch dialect's declarations)
    from .registry import REGISTRY, OpDef
    t = REGISTRY[torch_name]
    REGISTRY.register(OpDef("fused." + torch_name.split(".", 1)[1], t.operands, t.infer, t.reference, dict(t.attrs),
                            t.traits, t.verify, {"view": t.extra["view"]}))


for _name in ("torch.diagonal", "torch.as_strided", "torch.unfold"):
    _view_twin(_name)


# ---- reductions -----------------------------------------------------------------------------
INDEX_REDUCE = ("argmax", "argmin")     # reductions whose result is an int64 position
INT_REDUCE = ("sum", "prod", "amax", "amin", "argmax", "argmin")    # the ones that also take int64


def _reduce_infer_for(name):
    def infer(types, attrs):
        t = types[0]
        dims = {normalize_dim(d, t.rank) for d in attrs["dims"]} if t.rank else set()
        if attrs["keepdim"]:
            t = t.with_shape(tuple(1 if i in dims else s for i, s in enumerate(t.shape)))
        else:
            t = t.with_shape(tuple(s for i, s in enumerate(t.shape) if i not in dims))
        return t.with_dtype("i64") if name in INDEX_REDUCE else t
    return infer


def _arg(f):
    """argmax / argmin over several axes: the position in those axes flattened (NaN the largest)."""
    def fn(x, axis, keepdims, correction):
        axes = axis if axis is not None else tuple(range(x.ndim))
        kept = [d for d in range(x.ndim) if d not in axes]
        moved = np.transpose(x, kept + list(axes)).reshape([x.shape[d] for d in kept] + [-1])
        nan = np.isnan(moved)
        r = np.where(nan.any(-1), np.argmax(nan, axis=-1), f(np.where(nan, 0, moved), axis=-1))
        if keepdims:
            r = r.reshape([1 if d in axes else x.shape[d] for d in range(x.ndim)])
        return r
    return fn


def _var_of(x, axis, keepdims, correction):
    n = int(np.prod([x.shape[a] for a in axis], dtype=np.int64)) if axis is not None else x.size
    m = np.mean(x, axis=axis, keepdims=True)
    return np.sum((x - m) ** 2, axis=axis, keepdims=keepdims) / max(n - correction, 0)


def _logsumexp_of(x, axis, keepdims, correction):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axis)


_REDUCE = {"sum": np.sum, "mean": np.mean, "amax": np.max, "amin": np.min, "prod": np.prod,
           "argmax": _arg(np.argmax), "argmin": _arg(np.argmin), "var": _var_of,
           "std": lambda *a: np.sqrt(_var_of(*a)), "logsumexp": _logsumexp_of}


def _reduce(name, fn):
    two = name in ("argmax", "argmin", "var", "std", "logsumexp")

    def ref(args, attrs):
        x = args[0]
        axes = tuple(sorted(normalize_dim(d, x.ndim) for d in attrs["dims"])) if x.ndim else None
        out = _reduce_infer_for(name)([TensorType.of(x)], attrs)
        with np.errstate(all="ignore"):
            x64 = x.astype(np.float64) if x.dtype.kind == "f" else x
            r = fn(x64, axes, attrs["keepdim"], attrs["correction"]) if two else \
                fn(x64, axis=axes, keepdims=attrs["keepdim"])
            return np.asarray(r).astype(out.np_dtype).reshape(out.shape)
    dtypes = ("f32", "i64") if name in INT_REDUCE else ("f32",)
    op(f"fused.{name}", ("x",), _reduce_infer_for(name), ref,
       attrs={"dims": Attr("ints"), "keepdim": Attr("bool", False), "correction": Attr("float", 0.0)},
       verify=lambda o, t: None if t[0].dtype in dtypes else f"{name} takes {dtypes}, got {t[0]}")


for _name in REDUCE_OPS:
    _reduce(_name, _REDUCE[_name])


def _scan(name, fn):
    dtypes = ("f32",) if name == "logcumsumexp" else ("f32", "i64")

    def ref(args, attrs):
        x = args[0]
        return fn(x.astype(np.float64) if x.dtype.kind == "f" else x, axis=attrs["dim"]).astype(x.dtype)
    op(f"fused.{name}", ("x",), same_as_first, ref, attrs={"dim": Attr("int")},
       verify=lambda o, t: None if t[0].dtype in dtypes and 0 <= o.attrs["dim"] < max(t[0].rank, 1)
       else f"{name} takes {dtypes} and a dim in range, got {t[0]} dim {o.attrs['dim']}")


def _logcumsumexp(x, axis):
    return np.logaddexp.accumulate(x, axis=axis)


for _name, _fn in zip(SCAN_OPS, (np.cumsum, np.cumprod, _logcumsumexp)):
    _scan(_name, _fn)


# ---- index and data movement ----------------------------------------------------------------
def _gather_verify(o, types):
    x, idx = types
    d = o.attrs["dim"]
    if idx.dtype != "i64" or x.rank != idx.rank or not 0 <= d < max(x.rank, 1) or any(
            i > s for k, (i, s) in enumerate(zip(idx.shape, x.shape)) if k != d):
        return f"gather of {x} by {idx} along {d}: idx must be int64 of x's rank, within x off the dim"
    return None


def gather_reference(x, idx, dim):
    idx = np.where(idx < 0, idx + x.shape[dim], idx)
    sl = tuple(slice(0, n) if k != dim else slice(None) for k, n in enumerate(idx.shape))
    return np.take_along_axis(x[sl], idx, axis=dim)


op("fused.gather", ("x", "idx"), lambda t, at: t[1].with_dtype(t[0].dtype),
   lambda a, at: gather_reference(a[0], a[1], at["dim"]), attrs={"dim": Attr("int")}, verify=_gather_verify)

SCATTER_REDUCE = ("none", "sum", "prod", "amax", "amin")


def scatter_reference(x, idx, src, dim, reduce, include_self):
    out = x.copy()
    idx = np.where(idx < 0, idx + x.shape[dim], idx)
    coords = list(np.indices(idx.shape))
    coords[dim] = idx
    targets = tuple(c.ravel() for c in coords)
    vals = src[tuple(slice(0, n) for n in idx.shape)].ravel()
    if reduce == "none":
        out[targets] = vals
        return out
    ufunc = {"sum": np.add, "prod": np.multiply, "amax": np.maximum, "amin": np.minimum}[reduce]
    if not include_self:
        out[targets] = {"sum": 0, "prod": 1, "amax": -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min,
                        "amin": np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).max}[reduce]
    ufunc.at(out, targets, vals)
    return out


def _scatter_verify(o, types):
    x, idx, src = types
    at = _attrs_of(o)
    d = at["dim"]
    if idx.dtype != "i64" or src.dtype != x.dtype or x.rank != idx.rank or src.rank != idx.rank or \
            not 0 <= d < max(x.rank, 1) or any(i > s for i, s in zip(idx.shape, src.shape)) or any(
            i > s for k, (i, s) in enumerate(zip(idx.shape, x.shape)) if k != d):
        return f"scatter of {src} into {x} at {idx} along {d} does not fit"
    if at["reduce"] not in SCATTER_REDUCE or (x.dtype == "bool" and at["reduce"] != "none"):
        return f"unknown or bool scatter reduce {at['reduce']!r}"
    return None


op("fused.scatter", ("x", "idx", "src"), same_as_first,
   lambda a, at: scatter_reference(a[0], a[1], a[2], at["dim"], at["reduce"], at["include_self"]),
   attrs={"dim": Attr("int"), "reduce": Attr("str", "none"), "include_self": Attr("bool", True)},
   verify=_scatter_verify)


def sort_reference(x, descending, k, result):
    """Stable sort of the last dim, NaN the largest; the first k of each row (values or positions)."""
    key = np.where(np.isnan(x), np.inf, x)
    nan = np.isnan(x)
    if descending:
        order = np.lexsort((np.broadcast_to(np.arange(x.shape[-1]), x.shape), -key, ~nan), axis=-1)
    else:
        order = np.lexsort((np.broadcast_to(np.arange(x.shape[-1]), x.shape), key, nan), axis=-1)
    order = order[..., :k]
    return order.astype(np.int64) if result else np.take_along_axis(x, order, axis=-1)


def _sort_infer(types, at):
    x = types[0]
    k = at["k"] if at["k"] >= 0 else x.shape[-1]
    if not 0 <= k <= x.shape[-1]:
        raise ValueError(f"k {k} out of range for {x}")
    t = x.with_shape(x.shape[:-1] + (k,))
    return t.with_dtype("i64") if at["result"] else t


op("fused.sort", ("x",), _sort_infer,
   lambda a, at: sort_reference(a[0], at["descending"], at["k"] if at["k"] >= 0 else a[0].shape[-1], at["result"]),
   attrs={"descending": Attr("bool", False), "k": Attr("int", -1), "result": Attr("int", 0)},
   verify=lambda o, t: None if t[0].dtype == "f32" and t[0].rank >= 1 else f"sort takes f32 of rank >= 1, got {t[0]}")


# ---- concatenation --------------------------------------------------------------------------
def _cat_infer(types, attrs):
    first, d = types[0], attrs["dim"]
    if not 0 <= d < first.rank:
        raise ValueError(f"dim {d} out of range for {first}")
    for t in types[1:]:
        if t.rank != first.rank or t.dtype != first.dtype or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != d):
            raise ValueError(f"cannot concatenate {t} with {first} along dim {d}")
    shape = list(first.shape)
    shape[d] = sum(t.shape[d] for t in types)
    return first.with_shape(tuple(shape))


op("fused.cat", ("xs*",), _cat_infer, lambda a, at: np.concatenate(a, axis=at["dim"]), attrs={"dim": Attr("int")})


# ---- vision: convolution, pooling, resampling, padding ----------------------------------------
# Spatial ops take a `layout`: "nchw" (operands and result [N, C, H, W]) or "nhwc" ([N, H, W, C]); the
# lowering picks it (lowering/patterns/channels_last.py), the kernels see only strides.
#   fused.conv2d x, w, bias?, residual? {stride, padding, dilation, groups, act, clamp_min, clamp_max, layout}
#       act(conv(x, w) + bias + residual): w [O, C/groups, KH, KW] (torch's), padding [top, bottom, left,
#       right] (zeros), act one of CONV_ACTS (clamp: to [clamp_min, clamp_max])
#   fused.conv_transpose2d x, w, bias?, residual? {..., output_padding}   torch's conv_transpose2d: w
#       [C, O/groups, KH, KW], the padding crops the result
#   fused.max_pool2d / fused.avg_pool2d x {kernel, stride, padding, dilation, ceil_mode, count_include_pad,
#       divisor, layout}                                     torch's pooling, padding [top, bottom, left, right]
#   fused.adaptive_avg_pool2d / fused.adaptive_max_pool2d x {size, layout}
#   fused.upsample2d x {mode, size, scales, align_corners, layout}   torch's upsample_{nearest,
#       _nearest_exact,bilinear}2d; scales: torch's scale factors ([] when the size was given)
#   fused.pad x {lo, hi, mode, value}       lo[d] / hi[d] >= 0 items before / after dim d: value, reflect
#                                           or replicate
LAYOUTS = ("nchw", "nhwc")
CONV_ACTS = ENUMS["eltwise"]      # a convolution's epilogue activations (oneDNN eltwise post-ops)
NCHW_TO_NHWC, NHWC_TO_NCHW = (0, 2, 3, 1), (0, 3, 1, 2)


def _attrs_of(o) -> dict:
    """An op's attributes with the registry's defaults filled in."""
    from .registry import REGISTRY
    return REGISTRY[o.name].with_defaults(o.attrs)


def to_nchw(shape_or_array, layout: str):
    """An [N, H, W, C] shape or array in NCHW order when layout is nhwc (else unchanged)."""
    if layout == "nchw":
        return shape_or_array
    if isinstance(shape_or_array, np.ndarray):
        return shape_or_array.transpose(NHWC_TO_NCHW)
    return tuple(shape_or_array[i] for i in NHWC_TO_NCHW)


def from_nchw(shape_or_array, layout: str):
    if layout == "nchw":
        return shape_or_array
    if isinstance(shape_or_array, np.ndarray):
        return shape_or_array.transpose(NCHW_TO_NHWC)
    return tuple(shape_or_array[i] for i in NCHW_TO_NHWC)


def conv_act(name: str, x: np.ndarray, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    """A convolution epilogue's activation in float64 (numerics.UNARY's references)."""
    if name == "none":
        return x
    if name == "clamp":
        return numerics.UNARY["clamp"](x, min=lo, max=hi)
    return numerics.UNARY[name](x)


def _spatial_out(size, k, s, lo, hi, d, ceil_mode=False) -> int:
    """Output extent of a window of k (dilation d, stride s) over size items padded by lo and hi (torch's rule
    for ceil mode: the last window starts inside the input or its leading padding)."""
    span = d * (k - 1) + 1
    out = (size + lo + hi - span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + lo:
        out -= 1
    return out


def _x_nchw(t, attrs):
    if t.rank != 4:
        raise ValueError(f"expected a rank-4 input, got {t}")
    return to_nchw(t.shape, attrs["layout"])


def conv_out_channels(op_name: str, w_shape, groups: int) -> int:
    """A convolution's output channels: w [O, C/G, KH, KW], or [C, O/G, KH, KW] when transposed."""
    return w_shape[1] * groups if op_name.endswith("conv_transpose2d") else w_shape[0]


def _transposed_out(size, k, s, lo, hi, d, extra) -> int:
    """Output extent of a transposed convolution (torch's: the padding crops, `extra` is output_padding)."""
    return (size - 1) * s + d * (k - 1) + 1 + extra - lo - hi


def _conv_infer_for(transposed: bool):
    def infer(types, attrs):
        x, w = types[0], types[1]
        n, c, h, wd = _x_nchw(x, attrs)
        kh, kw = w.shape[2], w.shape[3]
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
        if transposed:
            oph, opw = attrs["output_padding"]
            out = (n, w.shape[1] * attrs["groups"], _transposed_out(h, kh, sh, pt, pb, dh, oph),
                   _transposed_out(wd, kw, sw, pl, pr, dw, opw))
        else:
            out = (n, w.shape[0], _spatial_out(h, kh, sh, pt, pb, dh), _spatial_out(wd, kw, sw, pl, pr, dw))
        if min(out[2:]) <= 0:
            raise ValueError(f"convolution of {x} with {w} gives an empty output {out}")
        return x.with_shape(from_nchw(out, attrs["layout"]))
    return infer


def _conv_verify(op, types):
    x, w, bias, res = padded(types, 4)
    at = _attrs_of(op)
    if at["layout"] not in LAYOUTS:
        return f"unknown layout {at['layout']!r}"
    if at["act"] not in CONV_ACTS:
        return f"unknown act {at['act']!r} (known: {', '.join(CONV_ACTS)})"
    if w.rank != 4 or x.rank != 4:
        return f"x {x} and w {w} must be rank 4"
    g = at["groups"]
    c = to_nchw(x.shape, at["layout"])[1]
    o = conv_out_channels(op.name, w.shape, g)
    c_of_w = w.shape[0] if op.name.endswith("conv_transpose2d") else w.shape[1] * g
    if g < 1 or c != c_of_w or o % g or c % g:
        return f"{c} input channels do not fit weight {w} with {g} groups"
    if [len(at["stride"]), len(at["padding"]), len(at["dilation"])] != [2, 4, 2] \
            or min(at["stride"] + at["dilation"]) < 1 or min(at["padding"]) < 0:
        return "stride and dilation need two values >= 1, padding four >= 0"
    if bias is not None and bias.shape != (o,):
        return f"bias must have shape ({o},), got {bias}"
    if res is not None and res.shape != op.result.type.shape:
        return f"residual must have the result's shape {op.result.type.shape}, got {res}"
    return None


def conv2d_reference(x, w, stride, padding, dilation, groups) -> np.ndarray:
    """Cross-correlation of x [N, C, H, W] with w [O, C/groups, KH, KW], zero padding [top, bottom, left,
    right], in float64."""
    pt, pb, pl, pr = padding
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), (pt, pb), (pl, pr)])
    (sh, sw), (dh, dw), (o, cg, kh, kw) = stride, dilation, w.shape
    win = np.lib.stride_tricks.sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    win = win[:, :, ::sh, ::sw, ::dh, ::dw]                               # [N, C, OH, OW, KH, KW]
    n, c, oh, ow = win.shape[:4]
    win = win.reshape(n, groups, cg, oh, ow, kh, kw)
    wg = w.astype(np.float64).reshape(groups, o // groups, cg, kh, kw)
    return np.einsum("ngcijkl,gpckl->ngpij", win, wg, optimize=True).reshape(n, o, oh, ow)


def conv_transpose2d_reference(x, w, stride, padding, dilation, groups, output_padding) -> np.ndarray:
    """torch's conv_transpose2d of x [N, C, H, W] with w [C, O/groups, KH, KW] in float64: every input
    pixel scatters its kernel-weighted channels; the padding then crops the result."""
    n, c, h, wd = x.shape
    (sh, sw), (dh, dw), (pt, pb, pl, pr), (oph, opw) = stride, dilation, padding, output_padding
    _, og, kh, kw = w.shape
    full = np.zeros((n, groups, og, (h - 1) * sh + dh * (kh - 1) + 1 + oph, (wd - 1) * sw + dw * (kw - 1) + 1 + opw))
    xg = x.astype(np.float64).reshape(n, groups, c // groups, h, wd)
    wg = w.astype(np.float64).reshape(groups, c // groups, og, kh, kw)
    for i in range(kh):
        for j in range(kw):
            full[:, :, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += \
                np.einsum("ngchw,gco->ngohw", xg, wg[:, :, :, i, j])
    full = full.reshape(n, groups * og, *full.shape[3:])
    return full[:, :, pt:full.shape[2] - pb, pl:full.shape[3] - pr]


def _conv_ref(args, at):
    x, w, bias, res = padded(args, 4)
    xn = to_nchw(x, at["layout"])
    if "output_padding" in at:          # fused.conv_transpose2d
        y = conv_transpose2d_reference(xn, w, at["stride"], at["padding"], at["dilation"], at["groups"],
                                       at["output_padding"])
    else:
        y = conv2d_reference(xn, w, at["stride"], at["padding"], at["dilation"], at["groups"])
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    if res is not None:
        y = y + to_nchw(res, at["layout"])
    y = conv_act(at["act"], y, at["clamp_min"], at["clamp_max"])
    return np.ascontiguousarray(from_nchw(y, at["layout"])).astype(x.dtype)


_LAYOUT = {"layout": Attr("str", "nchw")}
_CONV = {"stride": Attr("ints", [1, 1]), "padding": Attr("ints", [0, 0, 0, 0]), "dilation": Attr("ints", [1, 1]),
         "groups": Attr("int", 1), "act": Attr("str", "none"), "clamp_min": Attr("float", -np.inf),
         "clamp_max": Attr("float", np.inf), **_LAYOUT}
op("fused.conv2d", ("x", "w", "bias?", "residual?"), _conv_infer_for(False), _conv_ref, attrs=_CONV,
   verify=_conv_verify)
op("fused.conv_transpose2d", ("x", "w", "bias?", "residual?"), _conv_infer_for(True), _conv_ref,
   attrs={**_CONV, "output_padding": Attr("ints", [0, 0])}, verify=_conv_verify)


# ---- pooling ----
def _pool_infer(types, attrs):
    x = types[0]
    n, c, h, w = _x_nchw(x, attrs)
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["stride"], attrs["dilation"]
    pt, pb, pl, pr = attrs["padding"]
    out = (n, c, _spatial_out(h, kh, sh, pt, pb, dh, attrs["ceil_mode"]),
           _spatial_out(w, kw, sw, pl, pr, dw, attrs["ceil_mode"]))
    if min(out[2:]) <= 0:
        raise ValueError(f"pooling {x} gives an empty output {out}")
    return x.with_shape(from_nchw(out, attrs["layout"]))


def pool_windows(size, out, k, s, lo, hi, d):
    """Per output position: the input positions of its window inside [0, size), and its extent clipped to
    the padded input (an average's divisor when the padding counts)."""
    res = []
    for i in range(out):
        start = i * s - lo
        pos = [start + j * d for j in range(k) if 0 <= start + j * d < size]
        res.append((pos, min(start + k, size + hi) - start))
    return res


def _pool_ref(is_max):
    def ref(args, at):
        x = to_nchw(args[0], at["layout"]).astype(np.float64)
        (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = at["kernel"], at["stride"], at["padding"], at["dilation"]
        h, w = x.shape[2:]
        rows = pool_windows(h, _spatial_out(h, kh, sh, pt, pb, dh, at["ceil_mode"]), kh, sh, pt, pb, dh)
        cols = pool_windows(w, _spatial_out(w, kw, sw, pl, pr, dw, at["ceil_mode"]), kw, sw, pl, pr, dw)
        y = np.empty(x.shape[:2] + (len(rows), len(cols)))
        for i, (ri, rc) in enumerate(rows):
            for j, (ci, cc) in enumerate(cols):
                win = x[:, :, ri][:, :, :, ci].reshape(x.shape[:2] + (-1,))
                if is_max:
                    y[:, :, i, j] = np.where(np.isnan(win).any(-1), np.nan, win.max(-1, initial=-np.inf))
                else:
                    div = at["divisor"] or (rc * cc if at["count_include_pad"] else len(ri) * len(ci))
                    y[:, :, i, j] = win.sum(-1) / div
        return np.ascontiguousarray(from_nchw(y, at["layout"])).astype(args[0].dtype)
    return ref


_POOL = {"kernel": Attr("ints"), "stride": Attr("ints"), "padding": Attr("ints", [0, 0, 0, 0]),
         "dilation": Attr("ints", [1, 1]), "ceil_mode": Attr("bool", False), **_LAYOUT}
op("fused.max_pool2d", ("x",), _pool_infer, _pool_ref(True), attrs=_POOL)
op("fused.avg_pool2d", ("x",), _pool_infer, _pool_ref(False),
   attrs={**_POOL, "count_include_pad": Attr("bool", True), "divisor": Attr("int", 0)},
   verify=lambda o, t: None if _attrs_of(o)["dilation"] == [1, 1] else "average pooling has no dilation")


def adaptive_windows(size: int, out: int):
    """torch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_infer(types, attrs):
    n, c, _, _ = _x_nchw(types[0], attrs)
    oh, ow = attrs["size"]
    if oh < 1 or ow < 1:
        raise ValueError(f"adaptive pooling to {attrs['size']}")
    return types[0].with_shape(from_nchw((n, c, oh, ow), attrs["layout"]))


def _adaptive_ref(reduce):
    def ref(args, at):
        x = to_nchw(args[0], at["layout"]).astype(np.float64)
        oh, ow = at["size"]
        y = np.empty(x.shape[:2] + (oh, ow))
        for i, (a, b) in enumerate(adaptive_windows(x.shape[2], oh)):
            for j, (c, d) in enumerate(adaptive_windows(x.shape[3], ow)):
                y[:, :, i, j] = reduce(x[:, :, a:b, c:d], axis=(2, 3))
        return np.ascontiguousarray(from_nchw(y, at["layout"])).astype(args[0].dtype)
    return ref


op("fused.adaptive_avg_pool2d", ("x",), _adaptive_infer, _adaptive_ref(np.mean),
   attrs={"size": Attr("ints"), **_LAYOUT})
op("fused.adaptive_max_pool2d", ("x",), _adaptive_infer, _adaptive_ref(np.max),
   attrs={"size": Attr("ints"), **_LAYOUT})


# ---- resampling ----
UPSAMPLE_MODES = ("nearest", "nearest_exact", "bilinear")


def upsample_scale(in_len: int, out_len: int, scale: float | None, align_corners: bool) -> float:
    """Input pixels per output pixel, as ATen computes it (area_pixel_compute_scale)."""
    if align_corners:
        return (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else in_len / out_len


def upsample_taps(in_len, out_len, scale, mode, align_corners):
    """(i0, i1, l1) per output position, in float32 as ATen's CPU kernels (and csrc/resample.c) do."""
    f = np.float32(upsample_scale(in_len, out_len, scale, align_corners and mode == "bilinear"))
    i = np.arange(out_len, dtype=np.float32)
    if mode == "nearest":
        if out_len == in_len:
            return np.arange(out_len), np.arange(out_len), np.zeros(out_len)
        if out_len == 2 * in_len:
            return np.arange(out_len) // 2, np.arange(out_len) // 2, np.zeros(out_len)
        src = np.floor(i * f)
    elif mode == "nearest_exact":
        src = np.floor((i + np.float32(0.5)) * f)
    else:
        src = f * i if align_corners else np.maximum(f * (i + np.float32(0.5)) - np.float32(0.5), np.float32(0))
    i0 = np.minimum(np.floor(src), in_len - 1).astype(np.int64)
    if mode != "bilinear":
        return i0, i0, np.zeros(out_len)
    l1 = np.clip(src - i0, 0, 1).astype(np.float32)
    return i0, np.where(i0 < in_len - 1, i0 + 1, i0), l1


def _upsample_infer(types, attrs):
    n, c, _, _ = _x_nchw(types[0], attrs)
    if attrs["mode"] not in UPSAMPLE_MODES:
        raise ValueError(f"unknown upsample mode {attrs['mode']!r}")
    return types[0].with_shape(from_nchw((n, c) + tuple(attrs["size"]), attrs["layout"]))


def _upsample_ref(args, at):
    x = to_nchw(args[0], at["layout"]).astype(np.float64)
    scales = list(at["scales"]) or [None, None]
    for axis, out_len, sc in ((2, at["size"][0], scales[0]), (3, at["size"][1], scales[1])):
        i0, i1, l1 = upsample_taps(x.shape[axis], out_len, sc, at["mode"], at["align_corners"])
        shape = [1, 1, 1, 1]
        shape[axis] = out_len
        lam = l1.astype(np.float64).reshape(shape)
        a, b = np.take(x, i0, axis=axis), np.take(x, i1, axis=axis)
        x = a if at["mode"] != "bilinear" else a * (1 - lam) + b * lam
    return np.ascontiguousarray(from_nchw(x, at["layout"])).astype(args[0].dtype)


op("fused.upsample2d", ("x",), _upsample_infer, _upsample_ref,
   attrs={"mode": Attr("str"), "size": Attr("ints"), "scales": Attr("floats", []),
          "align_corners": Attr("bool", False), **_LAYOUT})


# ---- padding ----
PAD_MODES = ("constant", "reflect", "replicate")


def _pad_infer(types, attrs):
    x, lo, hi = types[0], attrs["lo"], attrs["hi"]
    if len(lo) != x.rank or len(hi) != x.rank or min(list(lo) + list(hi), default=0) < 0:
        raise ValueError(f"pad lo {lo} / hi {hi} must give {x.rank} widths >= 0")
    if attrs["mode"] not in PAD_MODES:
        raise ValueError(f"unknown pad mode {attrs['mode']!r}")
    return x.with_shape(tuple(s + a + b for s, a, b in zip(x.shape, lo, hi)))


def _pad_ref(args, at):
    widths = list(zip(at["lo"], at["hi"]))
    if at["mode"] == "constant":
        return np.pad(args[0], widths, constant_values=np.asarray(at["value"]).astype(args[0].dtype))
    return np.pad(args[0], widths, mode={"reflect": "reflect", "replicate": "edge"}[at["mode"]])


op("fused.pad", ("x",), _pad_infer, _pad_ref,
   attrs={"lo": Attr("ints"), "hi": Attr("ints"), "mode": Attr("str", "constant"), "value": Attr("float", 0.0)})


# ---- group norm ----
def _group_norm_verify(op, types):
    x, g, b = padded(types, 3)
    at = _attrs_of(op)
    c = to_nchw(x.shape, at["layout"])[1] if x.rank == 4 else -1
    if x.rank != 4 or at["groups"] < 1 or c % at["groups"]:
        return f"group norm of {x} ({at['layout']}) in {at['groups']} groups"
    for name, t in (("gamma", g), ("beta", b)):
        if t is not None and t.shape != (c,):
            return f"{name} must have shape ({c},), got {t}"
    return None


def _group_norm_ref(args, at):
    x, g, b = padded(args, 3)
    xn = to_nchw(x, at["layout"]).astype(np.float64)
    n, c = xn.shape[:2]
    grouped = xn.reshape(n, at["groups"], -1)
    mean = grouped.mean(axis=2, keepdims=True)
    y = ((grouped - mean) / np.sqrt(((grouped - mean) ** 2).mean(axis=2, keepdims=True) + at["eps"])).reshape(xn.shape)
    y = y * (1.0 if g is None else g.reshape(1, c, 1, 1)) + (0.0 if b is None else b.reshape(1, c, 1, 1))
    return np.ascontiguousarray(from_nchw(y, at["layout"])).astype(x.dtype)


#   fused.group_norm x, gamma?, beta? {groups, eps, layout}      torch's group_norm of [N, C, H, W]
op("fused.group_norm", ("x", "gamma?", "beta?"), same_as_first, _group_norm_ref,
   attrs={"groups": Attr("int"), "eps": Attr("float", 1e-5), **_LAYOUT}, verify=_group_norm_verify)
