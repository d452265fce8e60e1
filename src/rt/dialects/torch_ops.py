"""The torch dialect: ops that mirror ATen overloads exactly.

Naming: `torch.<aten op>[.<overload>]` with the overload omitted when it is `default`
(aten.linear.default -> torch.linear, aten.add.Tensor -> torch.add.Tensor). Tensor arguments are
operands in schema order (an optional `Tensor?` is an optional operand, a `Tensor?[]` list is the
variadic last operand); every other argument is an attribute named as in the ATen schema. Shapes and
dtypes are static. Placement facts (device, layout, pin_memory, memory_format, non_blocking, copy) are
dropped; `dtype` is kept (a str attribute such as "f32" or "bool", or none = the default).

A Python scalar that ATen passes where the schema says `Tensor` (`add.Tensor(x, 0.5)`) becomes a 0-d
`const` operand: python float -> f32, int -> i64, bool -> bool. Result dtypes follow torch's promotion
(a 0-d operand only wins when it is of a higher category: bool < int < float).

Split-like ops (split, chunk, unbind) never appear: the frontend emits one `torch.slice.Tensor`
(or `torch.select.int`) per use. Ops with the FOLD_ONLY trait build masks and positions from
constants; constant folding must remove them before the fused dialect.
"""
from __future__ import annotations

import math

import numpy as np

from . import numerics
from .ir import DTYPES, TensorType, dtype_name, padded
from .strides import contiguous_strides, reshape_strides
from .registry import (COMMUTATIVE, ELEMENTWISE, FOLD_ONLY, SHAPE_ONLY, VIEW, Attr, broadcast_shapes, op,
                       same_as_first)

# ---- helpers --------------------------------------------------------------------------------
_CATEGORY = {"bool": 0, "i32": 1, "i64": 1, "f32": 2, "f64": 2}
_DTYPE_ATTR = Attr("str", None, optional=True)


def _np(dtype) -> np.dtype:
    return DTYPES[dtype] if isinstance(dtype, str) else np.dtype(dtype)


def promote_dtypes(types) -> str:
    """torch's result dtype for tensors of these types (0-d operands are 'wrapped numbers')."""
    present = [t for t in types if t is not None]

    def best(ts):
        return max(ts, key=lambda t: (_CATEGORY[t.dtype], _np(t.dtype).itemsize)).dtype if ts else None
    dim = best([t for t in present if t.rank > 0])
    zero = best([t for t in present if t.rank == 0])
    if dim is None:
        return zero
    if zero is None or _CATEGORY[zero] <= _CATEGORY[dim]:
        return dim
    return zero


def _norm_dim(d: int, rank: int) -> int:
    if rank == 0:
        rank = 1
    if not -rank <= d < rank:
        raise ValueError(f"dim {d} out of range for rank {rank}")
    return d % rank


def _resolve_shape(size, numel: int) -> tuple[int, ...]:
    size = [int(s) for s in size]
    if size.count(-1) > 1:
        raise ValueError("only one dimension can be -1")
    if -1 in size:
        known = int(np.prod([s for s in size if s != -1], dtype=np.int64))
        if known == 0 or numel % known:
            raise ValueError(f"shape {size} is invalid for {numel} elements")
        size[size.index(-1)] = numel // known
    if int(np.prod(size, dtype=np.int64)) != numel:
        raise ValueError(f"shape {size} is invalid for {numel} elements")
    return tuple(size)


def _cast(x, dtype: str) -> np.ndarray:
    return np.asarray(x).astype(_np(dtype), copy=False)


# ---- linear algebra -------------------------------------------------------------------------
def _linear_infer(types, attrs):
    x, w = types[0], types[1]
    if x.shape[-1] != w.shape[-1]:
        raise ValueError(f"linear: input {x} and weight {w} disagree on in_features")
    return x.with_shape(x.shape[:-1] + ((w.shape[0],) if w.rank == 2 else ()))


def _linear_ref(args, attrs):
    x, w, b = args
    y = np.matmul(x, w.T)
    return (y + b if b is not None else y).astype(x.dtype)


op("torch.linear", ("input", "weight", "bias?"), _linear_infer, _linear_ref)


def _addmm_infer(types, attrs):
    a, b = types[1], types[2]
    if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"addmm: cannot multiply {a} by {b}")
    return a.with_shape((a.shape[0], b.shape[1]))


def _addmm_ref(args, attrs):
    bias, a, b = args
    y = a @ b
    if attrs["alpha"] != 1:
        y = y * np.float32(attrs["alpha"])
    if attrs["beta"] != 0:
        y = y + (bias if attrs["beta"] == 1 else np.float32(attrs["beta"]) * bias)
    return y.astype(a.dtype)


op("torch.addmm", ("self", "mat1", "mat2"), _addmm_infer, _addmm_ref,
   attrs={"beta": Attr("scalar", 1), "alpha": Attr("scalar", 1)})


def matmul_shape(a: tuple, b: tuple) -> tuple:
    """torch.matmul's result shape (1-D operands are promoted then squeezed)."""
    if len(a) == 0 or len(b) == 0:
        raise ValueError("matmul: both operands need rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: contraction sizes differ: {a} x {b}")
    out = tuple(broadcast_shapes(a2[:-2], b2[:-2])) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


op("torch.matmul", ("self", "other"),
   lambda t, a: t[0].with_shape(matmul_shape(t[0].shape, t[1].shape)),
   lambda x, a: np.matmul(x[0], x[1]).astype(x[0].dtype))


def _mm_infer(rank):
    def infer(types, attrs):
        a, b = types[0], types[1]
        if a.rank != rank or b.rank != rank:
            raise ValueError(f"operands need rank {rank}, got {a} and {b}")
        if a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
            raise ValueError(f"cannot multiply {a} by {b}")
        return a.with_shape(a.shape[:-1] + (b.shape[-1],))
    return infer


op("torch.mm", ("self", "mat2"), _mm_infer(2), lambda x, a: np.matmul(x[0], x[1]).astype(x[0].dtype))
op("torch.bmm", ("self", "mat2"), _mm_infer(3), lambda x, a: np.matmul(x[0], x[1]).astype(x[0].dtype))


def _baddbmm_ref(args, attrs):
    bias, a, b = args
    y = np.matmul(a, b)
    if attrs["alpha"] != 1:
        y = y * np.float32(attrs["alpha"])
    if attrs["beta"] != 0:
        y = y + (bias if attrs["beta"] == 1 else np.float32(attrs["beta"]) * bias)
    return y.astype(a.dtype)


op("torch.baddbmm", ("self", "batch1", "batch2"),
   lambda t, a: _mm_infer(3)([t[1], t[2]], a), _baddbmm_ref,
   attrs={"beta": Attr("scalar", 1), "alpha": Attr("scalar", 1)})


# ---- elementwise: unary ---------------------------------------------------------------------
def _float_unary(fn):
    def ref(args, at):
        x = args[0]
        return np.asarray(fn(x, at)).astype(x.dtype)
    return ref


def _unary(name, fn, attrs=None, traits=(ELEMENTWISE,), infer=same_as_first):
    op(f"torch.{name}", ("self",), infer, _float_unary(fn), attrs=attrs, traits=traits)


def _f64(fn):
    """Evaluate in float64 and round once (transcendentals)."""
    return lambda x, at: fn(np.asarray(x, dtype=np.float64), at)


_unary("relu", lambda x, at: numerics.relu(x))
_unary("tanh", _f64(lambda x, at: np.tanh(x)))
_unary("sigmoid", lambda x, at: numerics.sigmoid(x))
_unary("gelu", lambda x, at: (numerics.gelu_tanh if at["approximate"] == "tanh" else numerics.gelu_erf)(x),
       attrs={"approximate": Attr("str", "none")})
_unary("silu", _f64(lambda x, at: x / (1.0 + np.exp(-x))))
_unary("erf", _f64(lambda x, at: numerics.erf(x)))
_unary("exp", _f64(lambda x, at: np.exp(x)))
_unary("log", _f64(lambda x, at: np.log(x)))
_unary("sqrt", _f64(lambda x, at: np.sqrt(x)))
_unary("rsqrt", _f64(lambda x, at: 1.0 / np.sqrt(x)))
_unary("reciprocal", _f64(lambda x, at: 1.0 / x))
_unary("neg", lambda x, at: -x)
_unary("abs", lambda x, at: np.abs(x))
_unary("pow.Tensor_Scalar", _f64(lambda x, at: np.power(x, at["exponent"])),
       attrs={"exponent": Attr("scalar")})
_unary("clamp", lambda x, at: np.clip(x, at["min"], at["max"]),
       attrs={"min": Attr("scalar", None, optional=True), "max": Attr("scalar", None, optional=True)})


# ---- elementwise: binary --------------------------------------------------------------------
def _promote_infer(types, attrs):
    present = [t for t in types if t is not None]
    return TensorType(broadcast_shapes(*(t.shape for t in present)), promote_dtypes(present))


def _bool_infer(types, attrs):
    return _promote_infer(types, attrs).with_dtype("bool")


def _binary_tensor(name, fn, commutative=False, alpha=False, result="promote", fold_only=False):
    attrs = {"alpha": Attr("scalar", 1)} if alpha else {}
    traits = (ELEMENTWISE,) + ((COMMUTATIVE,) if commutative else ()) + ((FOLD_ONLY,) if fold_only else ())
    infer = _bool_infer if result == "bool" else _promote_infer

    def ref(args, at):
        a, b = args
        out = infer([TensorType.of(np.asarray(a)), TensorType.of(np.asarray(b))], at).dtype
        if alpha and at["alpha"] != 1:
            b = b * at["alpha"]
        return np.asarray(fn(a, b)).astype(_np(out))
    op(f"torch.{name}", ("self", "other"), infer, ref, attrs=attrs, traits=traits)


_binary_tensor("add.Tensor", np.add, commutative=True, alpha=True)
_binary_tensor("sub.Tensor", np.subtract, alpha=True)
_binary_tensor("mul.Tensor", np.multiply, commutative=True)


def _true_divide(a, b):
    if a.dtype.kind in "biu" and b.dtype.kind in "biu":
        return np.true_divide(a, b).astype(np.float32)
    return np.true_divide(a, b)


def _div_infer(types, attrs):
    t = _promote_infer(types, attrs)
    return t.with_dtype("f32") if _CATEGORY[t.dtype] < 2 else t


op("torch.div.Tensor", ("self", "other"), _div_infer,
   lambda x, at: np.asarray(_true_divide(np.asarray(x[0]), np.asarray(x[1]))).astype(
       _np(_div_infer([TensorType.of(np.asarray(x[0])), TensorType.of(np.asarray(x[1]))], at).dtype)),
   traits=(ELEMENTWISE,))
_binary_tensor("maximum", np.maximum, commutative=True)
_binary_tensor("minimum", np.minimum, commutative=True)
_binary_tensor("pow.Tensor_Tensor", lambda a, b: np.power(a.astype(np.float64), b))


def _rsub_ref(args, at):
    x = args[0]
    dt = promote_dtypes([TensorType.of(x), TensorType.of(np.asarray(at["other"]))])
    return np.asarray(at["other"] - x * at["alpha"]).astype(_np(dt))


op("torch.rsub.Scalar", ("self",),
   lambda t, at: t[0].with_dtype(promote_dtypes([t[0], _scalar_type(at["other"])])), _rsub_ref,
   attrs={"other": Attr("scalar"), "alpha": Attr("scalar", 1)}, traits=(ELEMENTWISE,))


def _scalar_type(v) -> TensorType:
    return TensorType((), "bool" if isinstance(v, bool) else "i64" if isinstance(v, int) else "f32")


# comparisons and logic: mask building
for _name, _fn in (("eq", np.equal), ("ne", np.not_equal), ("lt", np.less), ("le", np.less_equal),
                   ("gt", np.greater), ("ge", np.greater_equal)):
    _binary_tensor(f"{_name}.Tensor", _fn, commutative=_name in ("eq", "ne"), result="bool", fold_only=True)
    op(f"torch.{_name}.Scalar", ("self",), lambda t, at: t[0].with_dtype("bool"),
       (lambda f: lambda x, at: np.asarray(f(x[0], at["other"])))(_fn),
       attrs={"other": Attr("scalar")}, traits=(ELEMENTWISE, FOLD_ONLY))




for _name, _fn in (("__and__.Tensor", np.bitwise_and), ("bitwise_and.Tensor", np.bitwise_and),
                   ("__or__.Tensor", np.bitwise_or), ("bitwise_or.Tensor", np.bitwise_or),
                   ("logical_and", np.logical_and), ("logical_or", np.logical_or)):
    _binary_tensor(_name, _fn, commutative=True, result="bool" if _name.startswith("logical") else "promote",
                   fold_only=True)
op("torch.bitwise_not", ("self",), same_as_first,
   lambda x, at: np.logical_not(x[0]) if x[0].dtype == np.bool_ else np.invert(x[0]),
   traits=(ELEMENTWISE, FOLD_ONLY))
op("torch.logical_not", ("self",), lambda t, at: t[0].with_dtype("bool"),
   lambda x, at: np.logical_not(x[0]), traits=(ELEMENTWISE, FOLD_ONLY))


# select by mask
def _where_ref(args, at):
    c, a, b = args
    dt = promote_dtypes([TensorType.of(a), TensorType.of(b)])
    return np.where(c, a, b).astype(_np(dt))


op("torch.where.self", ("condition", "self", "other"),
   lambda t, at: TensorType(broadcast_shapes(t[0].shape, t[1].shape, t[2].shape), promote_dtypes(t[1:])),
   _where_ref, traits=(ELEMENTWISE,))


def _masked_fill_infer(types, attrs):
    x, m = types[0], types[1]
    if broadcast_shapes(x.shape, m.shape) != x.shape:
        raise ValueError(f"mask {m} does not broadcast to {x}")
    return x


op("torch.masked_fill.Scalar", ("self", "mask"), _masked_fill_infer,
   lambda x, at: np.where(x[1], np.asarray(at["value"]).astype(x[0].dtype), x[0]),
   attrs={"value": Attr("scalar")}, traits=(ELEMENTWISE,))
op("torch.masked_fill.Tensor", ("self", "mask", "value"), _masked_fill_infer,
   lambda x, at: np.where(x[1], np.asarray(x[2]).astype(x[0].dtype), x[0]), traits=(ELEMENTWISE,))


# ---- normalisation, softmax, reductions -----------------------------------------------------
def softmax_ref(x: np.ndarray, dim: int) -> np.ndarray:
    """float32 softmax with max-subtraction (float64 for f64 input)."""
    x = np.asarray(x)
    xf = x if x.dtype == np.float64 else x.astype(np.float32)
    m = np.max(xf, axis=dim, keepdims=True)
    m = np.where(np.isneginf(m), 0, m)               # fully masked rows give 0/0 -> nan like torch
    e = np.exp(xf - m)
    return e / np.sum(e, axis=dim, keepdims=True)


def _softmax_infer(types, attrs):
    _norm_dim(attrs["dim"], types[0].rank)
    dt = attrs.get("dtype")
    return types[0].with_dtype(dt) if dt else types[0]


op("torch.softmax.int", ("self",), _softmax_infer,
   lambda x, at: softmax_ref(_cast(x[0], at["dtype"]) if at["dtype"] else x[0], at["dim"]).astype(
       _np(at["dtype"]) if at["dtype"] else x[0].dtype),
   attrs={"dim": Attr("int"), "dtype": _DTYPE_ATTR})
op("torch._softmax", ("self",), _softmax_infer,
   lambda x, at: softmax_ref(x[0], at["dim"]).astype(x[0].dtype),
   attrs={"dim": Attr("int"), "half_to_float": Attr("bool", False)})


def _log_softmax(x, dim):
    xf = x.astype(np.float64)
    m = np.max(xf, axis=dim, keepdims=True)
    return xf - m - np.log(np.sum(np.exp(xf - m), axis=dim, keepdims=True))


op("torch.log_softmax.int", ("self",), _softmax_infer,
   lambda x, at: _log_softmax(x[0], at["dim"]).astype(_np(at["dtype"]) if at["dtype"] else x[0].dtype),
   attrs={"dim": Attr("int"), "dtype": _DTYPE_ATTR})


def _layer_norm_verify(op_, types):
    x, w, b = types[0], types[1], types[2]
    ns = tuple(op_.attrs.get("normalized_shape", ()))
    if x.shape[len(x.shape) - len(ns):] != ns:
        return f"normalized_shape {list(ns)} does not end the input shape {x}"
    for t in (w, b):
        if t is not None and t.shape != ns:
            return f"weight/bias shape {t} does not match normalized_shape {list(ns)}"
    return None


def layer_norm_ref(args, at):
    x, w, b = args
    return numerics.layer_norm(x, w, b, at["eps"], len(at["normalized_shape"]))


op("torch.layer_norm", ("input", "weight?", "bias?"), same_as_first, layer_norm_ref,
   attrs={"normalized_shape": Attr("ints"), "eps": Attr("float", 1e-5), "cudnn_enable": Attr("bool", True)},
   verify=_layer_norm_verify)


def _reduce_infer(types, attrs):
    x = types[0]
    dims = attrs.get("dim")
    dims = range(x.rank) if dims is None or len(dims) == 0 else [_norm_dim(d, x.rank) for d in dims]
    dims = set(dims)
    shape = tuple((1 if i in dims else s) for i, s in enumerate(x.shape) if attrs["keepdim"] or i not in dims)
    dt = attrs.get("dtype") or (x.dtype if _CATEGORY[x.dtype] == 2 or attrs.get("_int_ok") else "i64")
    return TensorType(shape, dt)


def _axes(x, dim):
    return None if dim is None or len(dim) == 0 else tuple(d % max(x.ndim, 1) for d in dim)


op("torch.mean.dim", ("self",), _reduce_infer,
   lambda x, at: np.mean(x[0].astype(np.float64), axis=_axes(x[0], at["dim"]), keepdims=at["keepdim"]).astype(
       _np(at["dtype"] or x[0].dtype)),
   attrs={"dim": Attr("ints", None, optional=True), "keepdim": Attr("bool", False), "dtype": _DTYPE_ATTR})
op("torch.sum.dim_IntList", ("self",), _reduce_infer,
   lambda x, at: np.asarray(np.sum(x[0].astype(np.float64) if x[0].dtype.kind == "f" else x[0].astype(np.int64),
                                   axis=_axes(x[0], at["dim"]), keepdims=at["keepdim"])).astype(
       _np(_reduce_infer([TensorType.of(x[0])], at).dtype)),
   attrs={"dim": Attr("ints", None, optional=True), "keepdim": Attr("bool", False), "dtype": _DTYPE_ATTR})
op("torch.amax", ("self",), lambda t, at: _reduce_infer(t, {**at, "_int_ok": True}),
   lambda x, at: np.asarray(np.max(x[0], axis=_axes(x[0], at["dim"]), keepdims=at["keepdim"])),
   attrs={"dim": Attr("ints", []), "keepdim": Attr("bool", False)})


def _cumsum_infer(types, attrs):
    x = types[0]
    _norm_dim(attrs["dim"], x.rank)
    return x.with_dtype(attrs.get("dtype") or ("i64" if _CATEGORY[x.dtype] < 2 else x.dtype))


op("torch.cumsum", ("self",), _cumsum_infer,
   lambda x, at: np.cumsum(x[0], axis=at["dim"]).astype(_np(_cumsum_infer([TensorType.of(x[0])], at).dtype)),
   attrs={"dim": Attr("int"), "dtype": _DTYPE_ATTR}, traits=(FOLD_ONLY,))


def _diff_infer(types, attrs):
    x, pre, app = types
    d = _norm_dim(attrs["dim"], x.rank)
    n = x.shape[d] + (pre.shape[d] if pre is not None else 0) + (app.shape[d] if app is not None else 0)
    shape = list(x.shape)
    shape[d] = max(n - attrs["n"], 0)
    return TensorType(tuple(shape), x.dtype if x.dtype != "bool" else "bool")


def _diff_ref(args, at):
    x, pre, app = args
    kw = {}
    if pre is not None:
        kw["prepend"] = pre
    if app is not None:
        kw["append"] = app
    if x.dtype == np.bool_:
        parts = [p for p in (pre, x, app) if p is not None]
        y = np.concatenate(parts, axis=at["dim"])
        for _ in range(at["n"]):
            y = np.logical_xor(np.take(y, range(1, y.shape[at["dim"]]), axis=at["dim"]),
                               np.take(y, range(0, y.shape[at["dim"]] - 1), axis=at["dim"]))
        return y
    return np.diff(x, n=at["n"], axis=at["dim"], **kw).astype(x.dtype)


op("torch.diff", ("self", "prepend?", "append?"), _diff_infer, _diff_ref,
   attrs={"n": Attr("int", 1), "dim": Attr("int", -1)}, traits=(FOLD_ONLY,))


# ---- attention ------------------------------------------------------------------------------
def _sdpa_infer(types, attrs):
    q, k, v, mask = padded(types, 4)
    if q.rank < 2 or k.rank != q.rank or v.rank != q.rank:
        raise ValueError(f"query/key/value ranks differ: {q} {k} {v}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"query/key/value shapes disagree: {q} {k} {v}")
    L, S = q.shape[-2], k.shape[-2]
    if mask is not None and broadcast_shapes(mask.shape, q.shape[:-2] + (L, S)) != q.shape[:-2] + (L, S):
        raise ValueError(f"attn_mask {mask} does not broadcast to {q.shape[:-2] + (L, S)}")
    return q.with_shape(q.shape[:-1] + (v.shape[-1],))


def sdpa_ref(args, at):
    """torch.nn.functional.scaled_dot_product_attention in float32 (eval: dropout ignored)."""
    q, k, v, mask = padded(args, 4)
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    scale = at["scale"] if at["scale"] is not None else 1.0 / math.sqrt(E)
    if at["enable_gqa"] and k.shape[-3] != q.shape[-3]:
        rep = q.shape[-3] // k.shape[-3]
        k = np.repeat(k, rep, axis=-3)
        v = np.repeat(v, rep, axis=-3)
    scores = np.matmul(q.astype(np.float32), np.swapaxes(k.astype(np.float32), -1, -2)) * np.float32(scale)
    if at["is_causal"]:
        causal = np.tril(np.ones((L, S), dtype=bool))          # top-left aligned, like torch
        scores = np.where(causal, scores, np.float32(-np.inf))
    if mask is not None:
        if mask.dtype == np.bool_:
            scores = np.where(mask, scores, np.float32(-np.inf))
        else:
            scores = scores + mask.astype(np.float32)
    p = softmax_ref(scores, -1)
    return np.matmul(p, v.astype(np.float32)).astype(q.dtype)


op("torch.scaled_dot_product_attention", ("query", "key", "value", "attn_mask?"), _sdpa_infer, sdpa_ref,
   attrs={"dropout_p": Attr("float", 0.0), "is_causal": Attr("bool", False),
          "scale": Attr("float", None, optional=True), "enable_gqa": Attr("bool", False)})


# ---- embedding and gathers ------------------------------------------------------------------
def _embedding_infer(types, attrs):
    w, idx = types
    if w.rank != 2 or _CATEGORY[idx.dtype] != 1:
        raise ValueError(f"embedding needs a 2-D weight and integer indices, got {w} and {idx}")
    return w.with_shape(idx.shape + (w.shape[1],))


op("torch.embedding", ("weight", "indices"), _embedding_infer, lambda x, at: np.take(x[0], x[1], axis=0),
   attrs={"padding_idx": Attr("int", -1), "scale_grad_by_freq": Attr("bool", False),
          "sparse": Attr("bool", False)})


def _index_select_infer(types, attrs):
    x, idx = types
    d = _norm_dim(attrs["dim"], x.rank)
    return x.with_shape(x.shape[:d] + (idx.shape[0] if idx.rank else 1,) + x.shape[d + 1:])


op("torch.index_select", ("self", "index"), _index_select_infer,
   lambda x, at: np.take(x[0], np.atleast_1d(x[1]), axis=at["dim"]), attrs={"dim": Attr("int")})


def _gather_infer(types, attrs):
    x, idx = types
    _norm_dim(attrs["dim"], x.rank)
    return x.with_shape(idx.shape)


op("torch.gather", ("self", "index"), _gather_infer,
   lambda x, at: np.take_along_axis(x[0], x[1], axis=at["dim"]),
   attrs={"dim": Attr("int"), "sparse_grad": Attr("bool", False)}, traits=(FOLD_ONLY,))


def _index_infer(types, attrs):
    x, idx = types[0], list(types[1:])
    if len(idx) > x.rank:
        raise ValueError(f"too many indices ({len(idx)}) for {x}")
    pos = [i for i, t in enumerate(idx) if t is not None]
    if not pos:
        return x
    for i in pos:
        if idx[i].dtype == "bool":
            raise ValueError("boolean index tensors give data-dependent shapes (not supported)")
    bshape = tuple(broadcast_shapes(*(idx[i].shape for i in pos)))
    if pos == list(range(pos[0], pos[-1] + 1)):
        shape = x.shape[:pos[0]] + bshape + x.shape[pos[-1] + 1:]
    else:
        shape = bshape + tuple(s for i, s in enumerate(x.shape) if i not in pos)
    return x.with_shape(shape)


op("torch.index.Tensor", ("self", "indices*"), _index_infer,
   lambda x, at: np.asarray(x[0][tuple(slice(None) if i is None else i for i in x[1:])]),
   traits=(FOLD_ONLY,))


# ---- shape and view ops ---------------------------------------------------------------------
def _reshape_view(attrs, in_type, in_strides, out_type):
    s = reshape_strides(in_type.shape, tuple(in_strides), out_type.shape)
    return None if s is None else (0, s)


def _reshape_op(name, attr):
    op(name, ("self",), lambda t, at: t[0].with_shape(_resolve_shape(at[attr], t[0].numel)),
       lambda x, at: np.reshape(x[0], _resolve_shape(at[attr], x[0].size)),
       attrs={attr: Attr("ints")}, traits=(VIEW,), view=_reshape_view)


_reshape_op("torch.view", "size")
_reshape_op("torch.reshape", "shape")
_reshape_op("torch._unsafe_view", "size")


def _flatten_infer(types, attrs):
    x = types[0]
    if x.rank == 0:
        return x.with_shape((1,))
    s, e = _norm_dim(attrs["start_dim"], x.rank), _norm_dim(attrs["end_dim"], x.rank)
    return x.with_shape(x.shape[:s] + (int(np.prod(x.shape[s:e + 1], dtype=np.int64)),) + x.shape[e + 1:])


op("torch.flatten.using_ints", ("self",), _flatten_infer,
   lambda x, at: np.reshape(x[0], _flatten_infer([TensorType.of(x[0])], at).shape),
   attrs={"start_dim": Attr("int", 0), "end_dim": Attr("int", -1)}, traits=(VIEW,), view=_reshape_view)


def perm_of(attrs, rank):
    """The permutation a transpose.int / permute / t op applies (dims normalised)."""
    if "dims" in attrs:
        return [_norm_dim(d, rank) for d in attrs["dims"]]
    p = list(range(rank))
    if "dim0" in attrs:
        a, b = _norm_dim(attrs["dim0"], rank), _norm_dim(attrs["dim1"], rank)
        p[a], p[b] = p[b], p[a]
    elif rank == 2:      # t
        p = [1, 0]
    return p


def _permute_infer(types, attrs):
    x = types[0]
    p = perm_of(attrs, x.rank)
    if sorted(p) != list(range(x.rank)):
        raise ValueError(f"{p} is not a permutation of {x.rank} dims")
    return x.with_shape(tuple(x.shape[i] for i in p))


def _permute_view(attrs, in_type, in_strides, out_type):
    return 0, tuple(in_strides[i] for i in perm_of(attrs, in_type.rank))


def _permute_ref(x, at):
    return np.transpose(x[0], perm_of(at, x[0].ndim))


op("torch.transpose.int", ("self",), _permute_infer, _permute_ref,
   attrs={"dim0": Attr("int"), "dim1": Attr("int")}, traits=(VIEW,), view=_permute_view)
op("torch.permute", ("self",), _permute_infer, _permute_ref, attrs={"dims": Attr("ints")},
   traits=(VIEW,), view=_permute_view)
op("torch.t", ("self",), _permute_infer, _permute_ref, traits=(VIEW,), view=_permute_view)


def _unsqueeze_infer(types, attrs):
    x = types[0]
    d = _norm_dim(attrs["dim"], x.rank + 1)
    return x.with_shape(x.shape[:d] + (1,) + x.shape[d:])


def _unsqueeze_view(attrs, in_type, in_strides, out_type):
    d = _norm_dim(attrs["dim"], in_type.rank + 1)
    inner = in_strides[d] * in_type.shape[d] if d < in_type.rank else 1
    return 0, tuple(in_strides[:d]) + (inner,) + tuple(in_strides[d:])


op("torch.unsqueeze", ("self",), _unsqueeze_infer,
   lambda x, at: np.expand_dims(x[0], _norm_dim(at["dim"], x[0].ndim + 1)),
   attrs={"dim": Attr("int")}, traits=(VIEW,), view=_unsqueeze_view)


def _squeeze_dims(attrs, x):
    dims = [attrs["dim"]] if "dim" in attrs else attrs.get("dims")
    if dims is None:
        return [i for i, s in enumerate(x.shape) if s == 1]
    return [d for d in (_norm_dim(d, x.rank) for d in dims) if x.rank and x.shape[d] == 1]


def _squeeze_op(name, attrs):
    def infer(types, at):
        x = types[0]
        drop = _squeeze_dims(at, x)
        return x.with_shape(tuple(s for i, s in enumerate(x.shape) if i not in drop))

    def view(at, in_type, in_strides, out_type):
        drop = _squeeze_dims(at, in_type)
        return 0, tuple(s for i, s in enumerate(in_strides) if i not in drop)
    op(name, ("self",), infer,
       lambda x, at: np.reshape(x[0], infer([TensorType.of(x[0])], at).shape),
       attrs=attrs, traits=(VIEW,), view=view)


_squeeze_op("torch.squeeze.dim", {"dim": Attr("int")})
_squeeze_op("torch.squeeze.dims", {"dims": Attr("ints")})
_squeeze_op("torch.squeeze", {})


def _expand_shape(in_shape, size):
    size = list(size)
    if len(size) < len(in_shape):
        raise ValueError(f"expand: {list(size)} has fewer dims than {in_shape}")
    lead = len(size) - len(in_shape)
    out = []
    for i, s in enumerate(size):
        src = in_shape[i - lead] if i >= lead else None
        if s == -1:
            if src is None:
                raise ValueError("expand: -1 not allowed for a new leading dim")
            s = src
        if src is not None and src != 1 and src != s:
            raise ValueError(f"expand: cannot expand {in_shape} to {size}")
        out.append(int(s))
    return tuple(out)


def _expand_view(attrs, in_type, in_strides, out_type):
    lead = out_type.rank - in_type.rank
    strides = [0] * lead + [0 if (in_type.shape[i] == 1 and out_type.shape[i + lead] != 1) else in_strides[i]
                            for i in range(in_type.rank)]
    return 0, tuple(strides)


op("torch.expand", ("self",), lambda t, at: t[0].with_shape(_expand_shape(t[0].shape, at["size"])),
   lambda x, at: np.broadcast_to(x[0], _expand_shape(x[0].shape, at["size"])),
   attrs={"size": Attr("ints"), "implicit": Attr("bool", False)}, traits=(VIEW, FOLD_ONLY), view=_expand_view)


def slice_bounds(size: int, start, end, step) -> tuple[int, int, int]:
    """Clamp a slice like ATen: (start, length, step)."""
    start = 0 if start is None else start
    end = size if end is None else end
    if start < 0:
        start += size
    if end < 0:
        end += size
    start = min(max(start, 0), size)
    end = min(max(end, start), size)
    return start, (end - start + step - 1) // step, step


def _slice_infer(types, attrs):
    x = types[0]
    d = _norm_dim(attrs["dim"], x.rank)
    if attrs["step"] < 1:
        raise ValueError("slice step must be positive")
    _, n, _ = slice_bounds(x.shape[d], attrs["start"], attrs["end"], attrs["step"])
    return x.with_shape(x.shape[:d] + (n,) + x.shape[d + 1:])


def _slice_ref(x, at):
    a = x[0]
    d = _norm_dim(at["dim"], a.ndim)
    s, n, st = slice_bounds(a.shape[d], at["start"], at["end"], at["step"])
    idx = [slice(None)] * a.ndim
    idx[d] = slice(s, s + n * st, st) if n else slice(0, 0)
    return a[tuple(idx)]


def _slice_view(attrs, in_type, in_strides, out_type):
    d = _norm_dim(attrs["dim"], in_type.rank)
    s, _, st = slice_bounds(in_type.shape[d], attrs["start"], attrs["end"], attrs["step"])
    strides = list(in_strides)
    strides[d] *= st
    return s * in_strides[d], tuple(strides)


op("torch.slice.Tensor", ("self",), _slice_infer, _slice_ref,
   attrs={"dim": Attr("int", 0), "start": Attr("int", None, optional=True),
          "end": Attr("int", None, optional=True), "step": Attr("int", 1)},
   traits=(VIEW,), view=_slice_view)


def _select_infer(types, attrs):
    x = types[0]
    d = _norm_dim(attrs["dim"], x.rank)
    if not -x.shape[d] <= attrs["index"] < x.shape[d]:
        raise ValueError(f"select index {attrs['index']} out of range for dim {d} of {x}")
    return x.with_shape(x.shape[:d] + x.shape[d + 1:])


def _select_view(attrs, in_type, in_strides, out_type):
    d = _norm_dim(attrs["dim"], in_type.rank)
    i = attrs["index"] % in_type.shape[d]
    return i * in_strides[d], tuple(in_strides[:d]) + tuple(in_strides[d + 1:])


op("torch.select.int", ("self",), _select_infer,
   lambda x, at: np.take(x[0], at["index"], axis=_norm_dim(at["dim"], x[0].ndim)),
   attrs={"dim": Attr("int"), "index": Attr("int")}, traits=(VIEW,), view=_select_view)


def _cat_infer(types, attrs):
    ts = [t for t in types if not (t.rank == 1 and t.shape[0] == 0)] or types[:1]
    d = _norm_dim(attrs["dim"], ts[0].rank)
    for t in ts:
        if t.rank != ts[0].rank or t.shape[:d] + t.shape[d + 1:] != ts[0].shape[:d] + ts[0].shape[d + 1:]:
            raise ValueError(f"cat: shapes {ts[0]} and {t} disagree off dim {d}")
    shape = list(ts[0].shape)
    shape[d] = sum(t.shape[d] for t in ts)
    return TensorType(tuple(shape), promote_dtypes([t.with_shape((1,)) for t in ts]))


op("torch.cat", ("tensors*",), _cat_infer,
   lambda x, at: np.concatenate(x, axis=at["dim"]).astype(_np(_cat_infer([TensorType.of(a) for a in x], at).dtype)),
   attrs={"dim": Attr("int", 0)})


def _stack_infer(types, attrs):
    d = _norm_dim(attrs["dim"], types[0].rank + 1)
    if any(t.shape != types[0].shape for t in types):
        raise ValueError("stack: shapes differ")
    return TensorType(types[0].shape[:d] + (len(types),) + types[0].shape[d:],
                      promote_dtypes([t.with_shape((1,)) for t in types]))


op("torch.stack", ("tensors*",), _stack_infer,
   lambda x, at: np.stack(x, axis=at["dim"]).astype(_np(_stack_infer([TensorType.of(a) for a in x], at).dtype)),
   attrs={"dim": Attr("int", 0)})


# ---- creation and casts (fold-only: they build positions and masks from constants) ----------
def _default_dtype(*scalars) -> str:
    if any(isinstance(s, float) for s in scalars):
        return "f32"
    if all(isinstance(s, bool) for s in scalars):
        return "bool"
    return "i64"


def _arange_args(at):
    start = at.get("start", 0)
    step = at.get("step", 1)
    return start, at["end"], step


def _arange_infer(types, at):
    start, end, step = _arange_args(at)
    n = max(int(math.ceil((end - start) / step)), 0)
    return TensorType((n,), at.get("dtype") or _default_dtype(start, end, step))


def _arange_ref(x, at):
    start, end, step = _arange_args(at)
    dt = _arange_infer([], at).dtype
    return np.arange(start, end, step, dtype=np.float64 if _CATEGORY[dt] == 2 else np.int64).astype(_np(dt))


op("torch.arange", (), _arange_infer, _arange_ref,
   attrs={"end": Attr("scalar"), "dtype": _DTYPE_ATTR}, traits=(FOLD_ONLY,))
op("torch.arange.start", (), _arange_infer, _arange_ref,
   attrs={"start": Attr("scalar"), "end": Attr("scalar"), "dtype": _DTYPE_ATTR}, traits=(FOLD_ONLY,))
op("torch.arange.start_step", (), _arange_infer, _arange_ref,
   attrs={"start": Attr("scalar"), "end": Attr("scalar"), "step": Attr("scalar", 1), "dtype": _DTYPE_ATTR},
   traits=(FOLD_ONLY,))


def _fill_op(name, operands, fill, shape_of, dtype_of, extra_attrs):
    def infer(types, at):
        return TensorType(shape_of(types, at), at.get("dtype") or dtype_of(types, at))

    def ref(x, at):
        t = infer([None if a is None else TensorType.of(a) for a in x], at)
        return np.full(t.shape, fill(at), dtype=t.np_dtype)
    shape_only = (SHAPE_ONLY,) if operands else ()
    op(name, operands, infer, ref, attrs={**extra_attrs, "dtype": _DTYPE_ATTR}, traits=(FOLD_ONLY,) + shape_only)


_SIZE = {"size": Attr("ints")}
_FILL = {"fill_value": Attr("scalar")}
_fill_op("torch.ones", (), lambda at: 1, lambda t, at: tuple(at["size"]), lambda t, at: "f32", _SIZE)
_fill_op("torch.zeros", (), lambda at: 0, lambda t, at: tuple(at["size"]), lambda t, at: "f32", _SIZE)
_fill_op("torch.full", (), lambda at: at["fill_value"], lambda t, at: tuple(at["size"]),
         lambda t, at: _default_dtype(at["fill_value"]), {**_SIZE, **_FILL})
_fill_op("torch.new_ones", ("self",), lambda at: 1, lambda t, at: tuple(at["size"]), lambda t, at: t[0].dtype, _SIZE)
_fill_op("torch.new_zeros", ("self",), lambda at: 0, lambda t, at: tuple(at["size"]), lambda t, at: t[0].dtype, _SIZE)
_fill_op("torch.new_full", ("self",), lambda at: at["fill_value"], lambda t, at: tuple(at["size"]),
         lambda t, at: t[0].dtype, {**_SIZE, **_FILL})
_fill_op("torch.ones_like", ("self",), lambda at: 1, lambda t, at: t[0].shape, lambda t, at: t[0].dtype, {})
_fill_op("torch.zeros_like", ("self",), lambda at: 0, lambda t, at: t[0].shape, lambda t, at: t[0].dtype, {})
_fill_op("torch.full_like", ("self",), lambda at: at["fill_value"], lambda t, at: t[0].shape,
         lambda t, at: t[0].dtype, _FILL)
_fill_op("torch.scalar_tensor", (), lambda at: at["s"], lambda t, at: (), lambda t, at: "f32", {"s": Attr("scalar")})

for _name, _fn in (("triu", np.triu), ("tril", np.tril)):
    op(f"torch.{_name}", ("self",), same_as_first,
       (lambda f: lambda x, at: f(x[0], at["diagonal"]))(_fn),
       attrs={"diagonal": Attr("int", 0)}, traits=(FOLD_ONLY,))


def _cast_infer(types, at):
    return types[0].with_dtype(at.get("dtype") or types[0].dtype)


def _cast_ref(x, at):
    return np.array(x[0], dtype=_np(_cast_infer([TensorType.of(x[0])], at).dtype))


for _name in ("to.dtype", "to.dtype_layout", "to.device", "_to_copy"):
    op(f"torch.{_name}", ("self",), _cast_infer, _cast_ref,
       attrs={"dtype": Attr("str", None, optional=True)}, traits=(ELEMENTWISE, FOLD_ONLY))
op("torch.to.other", ("self", "other"), lambda t, at: t[0].with_dtype(t[1].dtype),
   lambda x, at: x[0].astype(x[1].dtype), traits=(ELEMENTWISE, FOLD_ONLY))

__all__ = ["promote_dtypes", "softmax_ref", "sdpa_ref", "layer_norm_ref", "matmul_shape", "slice_bounds",
           "reshape_strides", "contiguous_strides", "dtype_name"]
