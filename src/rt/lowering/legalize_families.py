"""torch -> fused converters onto the general kernel families: typed elementwise ops (comparisons, logic,
integer arithmetic, the math functions), the ternary ops (where, clamp by tensors, lerp), reductions and
scans, gathers and scatters (gather, index_select, index.Tensor, index_put, scatter*, slice/select,
diagonal and as_strided scatters, flip, roll), repeat, tril/triu, stack, sort/topk, and the ops built
from those: batch / group norm statistics, pooling of any rank through a gather of its windows (max
pool indices, 3-d pools), col2im, embedding bags, pairwise distances, circular pads. Registered into
legalize.CONVERTERS, like legalize.py's own; each names the family it lands on, and none knows a model.

Operands are cast to the dtype torch computes in (`promote_dtypes`), so every fused op sees one dtype.
"""
from __future__ import annotations

import math

import numpy as np

from ..abi import BINARY_OPS
from ..dialects.builder import Builder
from ..dialects.ir import DTYPES, Value, padded
from ..dialects.registry import normalize_dim
from ..dialects.torch_ops import _with_scalars, promote_dtypes, reduce_axes
from ..errors import LoweringError
from .legalize import CONVERTERS, converts


# ---- helpers --------------------------------------------------------------------------------
def typed_binary(b: Builder, name: str, x: Value, y: Value, dtype: str) -> Value:
    """fused.<name> of x and y cast to `dtype`, which the op's kernel must take."""
    if dtype not in BINARY_OPS[name]:
        raise LoweringError(f"{name} has no kernel for {dtype} (it takes {', '.join(BINARY_OPS[name])})")
    return b.op(f"fused.{name}", [b.cast(x, dtype), b.cast(y, dtype)])


def const_like(b: Builder, value, dtype_np) -> Value:
    return b.const(np.array(value, dtype=dtype_np), "scalar")


def _full(b: Builder, value, like: Value) -> Value:
    """A 0-d constant of like's dtype."""
    return const_like(b, value, like.type.np_dtype)


def where(b: Builder, c: Value, x: Value, y: Value) -> Value:
    dt = promote_dtypes([x.type, y.type])
    return b.op("fused.where", [b.cast(c, "bool"), b.cast(x, dt), b.cast(y, dt)])


# ---- binary ---------------------------------------------------------------------------------
_PROMOTED = {"torch.maximum": "maximum", "torch.minimum": "minimum", "torch.fmax": "fmax", "torch.fmin": "fmin",
             "torch.fmod.Tensor": "fmod", "torch.remainder.Tensor": "remainder", "torch.atan2": "atan2",
             "torch.hypot": "hypot", "torch.copysign.Tensor": "copysign", "torch.logaddexp": "logaddexp",
             "torch.bitwise_xor.Tensor": "bitwise_xor", "torch.__xor__.Tensor": "bitwise_xor",
             "torch.nextafter": "nextafter"}


def _promoted(name):
    def conv(b, op, at, m):
        x, y = op.operands
        return typed_binary(b, name, x, y, op.result.type.dtype)
    return conv


for _t, _f in _PROMOTED.items():
    CONVERTERS[_t] = _promoted(_f)

_COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def _compare(name, scalar: bool):
    def conv(b, op, at, m):
        x = op.operands[0]
        if scalar:
            dt = _with_scalars(x.type.dtype, at["other"])
            y = const_like(b, at["other"], DTYPES[dt])
        else:
            y = op.operands[1]
            dt = promote_dtypes([x.type, y.type])
        return typed_binary(b, name, x, y, dt)
    return conv


for _n in _COMPARE:
    CONVERTERS[f"torch.{_n}.Tensor"] = _compare(_n, False)
    CONVERTERS[f"torch.{_n}.Scalar"] = _compare(_n, True)

def _and_or(logical: str, bitwise: str, identity: bool):
    """and / or: on bools the logical kernel, skipped when the other side is a constant of the identity
    (every corner of it: a mask that keeps everything, as models build them); on ints the bitwise one."""
    def conv(b, op, at, m):
        x, y = op.operands
        if op.result.type.dtype != "bool" and bitwise:
            return typed_binary(b, bitwise, x, y, op.result.type.dtype)
        for keep, other in ((x, y), (y, x)):
            arr = m.corner_of(other)
            if arr is not None and np.all(arr.astype(bool) == identity):
                v = b.cast(keep, "bool")
                return v if v.type.shape == op.result.type.shape else \
                    b.op("fused.expand", [v], {"shape": list(op.result.type.shape)})
        return typed_binary(b, logical, x, y, "bool")
    return conv


for _n in ("torch.__and__.Tensor", "torch.bitwise_and.Tensor", "torch.logical_and"):
    CONVERTERS[_n] = _and_or("logical_and", "" if "logical" in _n else "bitwise_and", True)
for _n in ("torch.__or__.Tensor", "torch.bitwise_or.Tensor", "torch.logical_or"):
    CONVERTERS[_n] = _and_or("logical_or", "" if "logical" in _n else "bitwise_or", False)
CONVERTERS["torch.logical_xor"] = lambda b, op, at, m: typed_binary(b, "logical_xor", *op.operands, "bool")


@converts("torch.logical_not")
def _logical_not(b, op, at, m):
    return typed_binary(b, "logical_xor", op.operands[0], b.const(np.array(True), "scalar"), "bool")


@converts("torch.bitwise_not")
def _bitwise_not(b, op, at, m):
    x = op.operands[0]
    if x.type.dtype == "bool":
        return typed_binary(b, "logical_xor", x, b.const(np.array(True), "scalar"), "bool")
    return typed_binary(b, "bitwise_xor", x, _full(b, -1, x), x.type.dtype)


@converts("torch.div.Tensor_mode")
def _div_mode(b, op, at, m):
    x, y = op.operands
    dt = op.result.type.dtype
    mode = at["rounding_mode"]
    if mode is None:
        return typed_binary(b, "div", x, y, dt)
    return typed_binary(b, "floor_divide" if mode == "floor" else "trunc_divide", x, y, dt)


@converts("torch.rsub.Tensor")
def _rsub_t(b, op, at, m):
    x, y = op.operands
    dt = op.result.type.dtype
    if at["alpha"] != 1:
        x = typed_binary(b, "mul", x, const_like(b, at["alpha"], op.result.type.np_dtype), dt)
    return typed_binary(b, "sub", y, x, dt)


@converts("torch.ldexp.Tensor")
def _ldexp(b, op, at, m):
    x, e = (b.cast(v, op.result.type.dtype) for v in op.operands)
    return typed_binary(b, "mul", x, b.op("fused.exp2", [e]), "f32")


# ---- unary: float math, and the integer / predicate forms through binary ops ------------------
_FLOAT_UNARY = ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2",
                "log2", "log10", "erfc", "log_sigmoid", "log", "log1p", "expm1", "frac", "lgamma")


def _float_unary(name):
    def conv(b, op, at, m):
        if op.result.type.dtype != "f32":
            raise LoweringError(f"{op.name} runs on float32 only")
        return b.op(f"fused.{name}", [b.cast(op.operands[0], "f32")])
    return conv


for _n in _FLOAT_UNARY:
    CONVERTERS[f"torch.{_n}"] = _float_unary(_n)


def _same_unary(name, int_form):
    """A "same dtype" unary op: its float kernel, or for integers int_form(b, x)."""
    def conv(b, op, at, m):
        x = op.operands[0]
        if x.type.dtype == "f32":
            return b.op(f"fused.{name}", [x])
        return int_form(b, x)
    return conv


def _int_abs(b, x):
    return typed_binary(b, "maximum", x, typed_binary(b, "sub", _full(b, 0, x), x, x.type.dtype), x.type.dtype)


def _int_sign(b, x):
    dt = x.type.dtype
    if dt == "bool":
        return x
    pos, neg = (b.cast(typed_binary(b, c, x, _full(b, 0, x), dt), dt) for c in ("gt", "lt"))
    return typed_binary(b, "sub", pos, neg, dt)


def _identity(b, x):
    return x


CONVERTERS["torch.abs"] = _same_unary("abs", _int_abs)
CONVERTERS["torch.neg"] = _same_unary("neg", lambda b, x: typed_binary(b, "sub", _full(b, 0, x), x, x.type.dtype))
CONVERTERS["torch.relu"] = _same_unary("relu", lambda b, x: typed_binary(b, "maximum", x, _full(b, 0, x), x.type.dtype))
for _n in ("floor", "ceil", "round", "trunc"):
    CONVERTERS[f"torch.{_n}"] = _same_unary(_n, _identity)
CONVERTERS["torch.fix"] = _same_unary("trunc", _identity)
CONVERTERS["torch.positive"] = lambda b, op, at, m: op.operands[0]


@converts("torch.sign")
def _sign(b, op, at, m):
    x = op.operands[0]
    if x.type.dtype != "f32":
        return _int_sign(b, x)
    # torch's sign of NaN is 0; the kernel's is NaN
    return where(b, typed_binary(b, "ne", x, x, "f32"), _full(b, 0, x), b.op("fused.sign", [x]))


CONVERTERS["torch.sgn"] = _sign


def _scaled(factor):
    def conv(b, op, at, m):
        return typed_binary(b, "mul", op.operands[0], b.scalar(factor), "f32")
    return conv


CONVERTERS["torch.deg2rad"] = _scaled(math.pi / 180)
CONVERTERS["torch.rad2deg"] = _scaled(180 / math.pi)


def _predicate(form):
    def conv(b, op, at, m):
        x = op.operands[0]
        if x.type.dtype != "f32":          # integers and bools are finite, never NaN, never negative zero
            return b.op("fused.expand", [b.const(np.array(form(None)), "pred")], {"shape": list(x.type.shape)}) \
                if x.type.rank else b.const(np.array(form(None)), "pred")
        return form((b, x))
    return conv


def _isnan(bx):
    return False if bx is None else typed_binary(bx[0], "ne", bx[1], bx[1], "f32")


def _isinf_sign(sign):
    def form(bx):
        if bx is None:
            return False
        b, x = bx
        if sign == 0:
            return typed_binary(b, "eq", b.op("fused.abs", [x]), b.scalar(math.inf), "f32")
        return typed_binary(b, "eq", x, b.scalar(sign * math.inf), "f32")
    return form


def _isfinite(bx):
    if bx is None:
        return True
    b, x = bx
    return typed_binary(b, "lt", b.op("fused.abs", [x]), b.scalar(math.inf), "f32")


def _signbit(bx):
    if bx is None:
        return False
    b, x = bx
    return typed_binary(b, "lt", typed_binary(b, "copysign", b.scalar(1.0), x, "f32"), b.scalar(0.0), "f32")


CONVERTERS["torch.isnan"] = _predicate(_isnan)
CONVERTERS["torch.isinf"] = _predicate(_isinf_sign(0))
CONVERTERS["torch.isposinf"] = _predicate(_isinf_sign(1))
CONVERTERS["torch.isneginf"] = _predicate(_isinf_sign(-1))
CONVERTERS["torch.isfinite"] = _predicate(_isfinite)
CONVERTERS["torch.signbit"] = _predicate(_signbit)


@converts("torch.softplus")
def _softplus(b, op, at, m):
    return b.op("fused.softplus", [b.cast(op.operands[0], "f32")], {"beta": float(at["beta"]),
                                                                       "threshold": float(at["threshold"])})


@converts("torch.leaky_relu")
def _leaky_relu(b, op, at, m):
    return b.op("fused.leaky_relu", [b.cast(op.operands[0], "f32")], {"negative_slope": float(at["negative_slope"])})


@converts("torch.elu")
def _elu(b, op, at, m):
    if at["input_scale"] != 1:
        raise LoweringError("elu with an input_scale other than 1 is not supported")
    y = b.op("fused.elu", [b.cast(op.operands[0], "f32")], {"alpha": float(at["alpha"])})
    return y if at["scale"] == 1 else typed_binary(b, "mul", y, b.scalar(float(at["scale"])), "f32")


@converts("torch.threshold")
def _threshold(b, op, at, m):
    x = op.operands[0]
    dt = op.result.type.dtype
    le = typed_binary(b, "le", x, const_like(b, at["threshold"], x.type.np_dtype), x.type.dtype)
    return where(b, le, const_like(b, at["value"], op.result.type.np_dtype), b.cast(x, dt))


@converts("torch.nan_to_num")
def _nan_to_num(b, op, at, m):
    x = op.operands[0]
    if x.type.dtype != "f32":
        return x
    big = float(np.finfo(np.float32).max)
    pos = big if at["posinf"] is None else at["posinf"]
    neg = -big if at["neginf"] is None else at["neginf"]
    y = where(b, _isinf_sign(1)((b, x)), b.scalar(pos), x)
    y = where(b, _isinf_sign(-1)((b, x)), b.scalar(neg), y)
    return where(b, _isnan((b, x)), b.scalar(0.0 if at["nan"] is None else at["nan"]), y)


@converts("torch.clamp")
def _clamp(b, op, at, m):
    x = b.cast(op.operands[0], op.result.type.dtype)
    lo, hi = at["min"], at["max"]
    if x.type.dtype == "f32":
        return b.op("fused.clamp", [x], {"min": -math.inf if lo is None else float(lo),
                                         "max": math.inf if hi is None else float(hi)})
    dt, npd = x.type.dtype, x.type.np_dtype
    if lo is not None:
        x = typed_binary(b, "maximum", x, const_like(b, lo, npd), dt)
    if hi is not None:
        x = typed_binary(b, "minimum", x, const_like(b, hi, npd), dt)
    return x


@converts("torch.clamp.Tensor")
def _clamp_tensor(b, op, at, m):
    x, lo, hi = padded(op.operands, 3)
    dt = op.result.type.dtype
    if lo is not None and hi is not None:
        return b.op("fused.clamp_tensor", [b.cast(x, dt), b.cast(lo, dt), b.cast(hi, dt)])
    y = b.cast(x, dt)
    if lo is not None:
        y = typed_binary(b, "maximum", y, lo, dt)
    if hi is not None:
        y = typed_binary(b, "minimum", y, hi, dt)
    return y


# ---- ternary --------------------------------------------------------------------------------
@converts("torch.lerp.Scalar", "torch.lerp.Tensor")
def _lerp(b, op, at, m):
    a, e = op.operands[:2]
    w = op.operands[2] if len(op.operands) > 2 else b.scalar(float(at["weight"]))
    if op.result.type.dtype != "f32":
        raise LoweringError("lerp runs on float32 only")
    return b.op("fused.lerp", [b.cast(a, "f32"), b.cast(e, "f32"), b.cast(w, "f32")])


# ---- reductions and scans -------------------------------------------------------------------
def _dims(x: Value, dim) -> list[int]:
    return list(reduce_axes(x.type.rank, dim))


def _reduce_to(name, dims_of=None, extra=None):
    """fused.<name>: on float32, or on int64 (the integer and bool inputs the int kernels take, exactly;
    a narrower result cast back)."""
    def conv(b, op, at, m):
        from ..dialects.fused_ops import INT_REDUCE
        x = op.operands[0]
        rdt = op.result.type.dtype
        exact_int = name in INT_REDUCE and (x.type.dtype in ("i64", "i32", "bool") and rdt != "f32")
        if not exact_int and rdt not in ("f32", "i64") or (not exact_int and name not in ("argmax", "argmin")
                                                          and rdt != "f32"):
            raise LoweringError(f"{op.name} to {rdt} has no kernel (float32, or int64 sums and extremes)")
        x = b.cast(x, "i64" if exact_int else "f32")
        dims = _dims(x, at.get("dim")) if dims_of is None else dims_of(x, at)
        attrs = {"dims": dims, "keepdim": bool(at.get("keepdim", False))}
        if extra:
            attrs.update(extra(at))
        y = b.op(f"fused.{name}", [x], attrs)
        return b.cast(b.reshape(y, op.result.type.shape), rdt)
    return conv


def _correction(at) -> dict:
    c = at.get("correction")
    if "unbiased" in at:
        c = 1 if at["unbiased"] else 0
    return {"correction": float(1 if c is None else c)}


CONVERTERS["torch.mean.dim"] = _reduce_to("mean")
CONVERTERS["torch.amin"] = _reduce_to("amin")
CONVERTERS["torch.amax"] = _reduce_to("amax")
CONVERTERS["torch.prod.dim_int"] = _reduce_to("prod")
CONVERTERS["torch.prod"] = _reduce_to("prod", lambda x, at: list(range(x.type.rank)))
CONVERTERS["torch.logsumexp"] = _reduce_to("logsumexp")
for _n in ("argmax", "argmin"):
    CONVERTERS[f"torch.{_n}"] = _reduce_to(_n)
for _n in ("var", "std"):
    CONVERTERS[f"torch.{_n}.correction"] = _reduce_to(_n, extra=_correction)
    CONVERTERS[f"torch.{_n}.dim"] = _reduce_to(_n, extra=_correction)


def _moments(spread):
    def conv(b, op, at, m):
        name = spread if at["result"] == 0 else "mean"
        return _reduce_to(name, extra=_correction if name != "mean" else None)(b, op, at, m)
    return conv


CONVERTERS["torch.var_mean.correction"] = _moments("var")
CONVERTERS["torch.std_mean.correction"] = _moments("std")


def _any_all(kind):
    """any / all: the largest / smallest of (x != 0) as floats, back to bool (exact)."""
    def conv(b, op, at, m):
        x = op.operands[0]
        nz = b.cast(typed_binary(b, "ne", x, _full(b, 0, x), x.type.dtype), "f32")
        y = b.op(f"fused.{kind}", [nz], {"dims": _dims(x, at.get("dim")), "keepdim": bool(at.get("keepdim", False))})
        return b.cast(b.reshape(y, op.result.type.shape), "bool")
    return conv


for _n in ("", ".dim", ".dims"):
    CONVERTERS[f"torch.any{_n}"] = _any_all("amax")
    CONVERTERS[f"torch.all{_n}"] = _any_all("amin")


@converts("torch.linalg_vector_norm")
def _vector_norm(b, op, at, m):
    if op.result.type.dtype != "f32":
        raise LoweringError("vector norm runs on float32 only")
    x = b.cast(op.operands[0], "f32")
    p, dims, keep = float(at["ord"]), _dims(x, at.get("dim")), bool(at["keepdim"])
    ax = b.op("fused.abs", [x])
    red = {"dims": dims, "keepdim": keep}
    if math.isinf(p):
        y = b.op("fused.amax" if p > 0 else "fused.amin", [ax], red)
    elif p == 0:
        y = b.op("fused.sum", [b.cast(typed_binary(b, "ne", x, b.scalar(0.0), "f32"), "f32")], red)
    elif p == 1:
        y = b.op("fused.sum", [ax], red)
    elif p == 2:
        y = b.op("fused.sqrt", [b.op("fused.sum", [typed_binary(b, "mul", x, x, "f32")], red)])
    else:
        s = b.op("fused.sum", [b.op("fused.pow", [ax], {"exponent": p})], red)
        y = b.op("fused.pow", [s], {"exponent": 1.0 / p})
    return b.reshape(y, op.result.type.shape)


def _scan(name):
    """A scan in float32, or exactly in int64 (cumsum / cumprod of ints and bools, as torch's)."""
    def conv(b, op, at, m):
        rdt = op.result.type.dtype
        if rdt != "f32" and not (rdt == "i64" and name != "logcumsumexp"):
            raise LoweringError(f"{op.name} to {rdt} has no kernel (float32 scans, int64 cumsum / cumprod)")
        x = b.cast(op.operands[0], rdt)
        if x.type.rank == 0:
            return x
        return b.op(f"fused.{name}", [x], {"dim": normalize_dim(at["dim"], x.type.rank)})
    return conv


CONVERTERS["torch.cumsum"] = _scan("cumsum")
CONVERTERS["torch.cumprod"] = _scan("cumprod")
CONVERTERS["torch.logcumsumexp"] = _scan("logcumsumexp")
CONVERTERS["torch.sum.dim_IntList"] = _reduce_to("sum")


def _softmax_any(name):
    def conv(b, op, at, m):
        x = b.cast(op.operands[0], op.result.type.dtype)
        if x.type.rank == 0:
            return b.op(f"fused.{name}", [x])
        d = normalize_dim(at["dim"], x.type.rank)
        if d == x.type.rank - 1:
            return b.op(f"fused.{name}", [x])
        perm = list(range(x.type.rank))
        perm[d], perm[-1] = perm[-1], perm[d]
        y = b.op(f"fused.{name}", [b.op("fused.permute", [x], {"perm": perm})])
        return b.op("fused.permute", [y], {"perm": perm})
    return conv


CONVERTERS["torch.log_softmax.int"] = CONVERTERS["torch._log_softmax"] = _softmax_any("log_softmax")


@converts("torch._safe_softmax")
def _safe_softmax(b, op, at, m):
    """softmax whose all -inf rows give 0 (the attention decomposition's)."""
    x = b.cast(op.operands[0], op.result.type.dtype)
    y = CONVERTERS["torch.softmax.int"](b, op, at, m)
    if x.type.rank == 0:
        return y
    d = normalize_dim(at["dim"], x.type.rank)
    dead = typed_binary(b, "eq", b.op("fused.amax", [x], {"dims": [d], "keepdim": True}), b.scalar(-math.inf), "f32")
    return where(b, dead, b.scalar(0.0), y)


# ---- gathers --------------------------------------------------------------------------------
def _along(b: Builder, idx: Value, rank: int, d: int, shape) -> Value:
    """A 1-D int64 index as [1, .., n at d, .., 1], broadcast (stride 0) to `shape`."""
    v = b.reshape(b.cast(idx, "i64"), [1] * d + [idx.type.numel] + [1] * (rank - d - 1))
    return b.expand(v, shape)


def gather_along(b: Builder, x: Value, idx: Value, d: int) -> Value:
    """x with its dim d picked by the 1-D index idx (index_select)."""
    if x.type.rank == 0:
        return x
    shape = list(x.type.shape)
    shape[d] = idx.type.numel
    return b.op("fused.gather", [x, _along(b, idx, x.type.rank, d, shape)], {"dim": d})


@converts("torch.gather")
def _gather(b, op, at, m):
    x, idx = op.operands
    if x.type.rank == 0:
        return x
    return b.op("fused.gather", [x, b.cast(idx, "i64")], {"dim": normalize_dim(at["dim"], x.type.rank)})


def _index_select(b, op, at, m):
    x, idx = op.operands
    if x.type.rank == 0:
        return x
    return b.reshape(gather_along(b, x, idx, normalize_dim(at["dim"], x.type.rank)), op.result.type.shape)


def _const_index(b: Builder, values: np.ndarray) -> Value:
    return b.const(np.ascontiguousarray(values, dtype=np.int64), "idx")


@converts("torch.flip")
def _flip(b, op, at, m):
    x = op.operands[0]
    for d in sorted({normalize_dim(d, x.type.rank) for d in at["dims"]}) if x.type.rank else []:
        x = gather_along(b, x, _const_index(b, np.arange(x.type.shape[d])[::-1]), d)
    return x


@converts("torch.roll")
def _roll(b, op, at, m):
    x = op.operands[0]
    shifts, dims = list(at["shifts"]), list(at["dims"])
    if not dims:                       # rolled flat
        flat = b.reshape(x, [x.type.numel])
        n = x.type.numel
        y = gather_along(b, flat, _const_index(b, (np.arange(n) - shifts[0]) % max(n, 1)), 0)
        return b.reshape(y, x.type.shape)
    for s, d in zip(shifts, dims):
        d = normalize_dim(d, x.type.rank)
        n = x.type.shape[d]
        x = gather_along(b, x, _const_index(b, (np.arange(n) - s) % max(n, 1)), d)
    return x


def _linear_index(b: Builder, x: Value, idx: list[Value | None]):
    """x[idx] as (x with its indexed dims first or in place, merged into one; the flat int64 index over
    them, of the indices' broadcast shape; the dim they occupy). Negative indices count from the end."""
    pos = [i for i, v in enumerate(idx) if v is not None]
    if any(idx[i].type.dtype not in ("i64", "i32") for i in pos):
        raise LoweringError("indexing with bool masks (a data-dependent shape) is not supported")
    if pos != list(range(pos[0], pos[0] + len(pos))):    # apart: torch moves the indexed dims first
        perm = pos + [d for d in range(x.type.rank) if d not in pos]
        x = b.op("fused.permute", [x], {"perm": perm})
        idx = [idx[i] for i in pos]
        pos = list(range(len(pos)))
    p, k = pos[0], len(pos)
    sizes = x.type.shape[p:p + k]
    bshape = tuple(np.broadcast_shapes(*(idx[i].type.shape for i in pos)))
    flat = None
    for j, i in enumerate(pos):
        v = b.cast(idx[i], "i64")
        if k > 1:                      # normalise negatives before combining
            neg = b.cast(typed_binary(b, "lt", v, const_like(b, 0, np.int64), "i64"), "i64")
            v = typed_binary(b, "add", v, typed_binary(b, "mul", neg, const_like(b, sizes[j], np.int64), "i64"), "i64")
            stride = int(np.prod(sizes[j + 1:], dtype=np.int64))
            if stride != 1:
                v = typed_binary(b, "mul", v, const_like(b, stride, np.int64), "i64")
        flat = v if flat is None else typed_binary(b, "add", flat, v, "i64")
    if flat.type.shape != bshape:
        flat = b.op("fused.expand", [flat], {"shape": list(bshape)})
    merged = list(x.type.shape[:p]) + [int(np.prod(sizes, dtype=np.int64))] + list(x.type.shape[p + k:])
    return b.reshape(x, merged), flat, p, bshape


_INDEX_VIEW = CONVERTERS["torch.index.Tensor"]


def _index(b, op, at, m):
    try:
        return _INDEX_VIEW(b, op, at, m)        # constant arange-like indices: a view (legalize.py)
    except LoweringError:
        pass
    x, idx = op.operands[0], list(op.operands[1:])
    xm, flat, p, bshape = _linear_index(b, x, idx)
    y = gather_along(b, xm, b.reshape(flat, [flat.type.numel]), p)
    return b.reshape(y, op.result.type.shape)


CONVERTERS["torch.index.Tensor"] = _index
CONVERTERS["torch.index_select"] = _index_select


# ---- scatters -------------------------------------------------------------------------------
_REDUCE_NAMES = {"add": "sum", "sum": "sum", "multiply": "prod", "prod": "prod", "amax": "amax", "amin": "amin"}


def _scatter_to(b: Builder, x: Value, idx: Value, src: Value, d: int, reduce: str = "none",
                include_self: bool = True) -> Value:
    if idx.type.numel == 0:          # nothing written
        return x
    return b.op("fused.scatter", [x, b.cast(idx, "i64"), b.cast(src, x.type.dtype)],
                {"dim": d, "reduce": reduce, "include_self": include_self})


def _scatter_mean(b: Builder, x: Value, idx: Value, src: Value, d: int, include_self: bool) -> Value:
    """torch's scatter mean: the sum over the targeted items (and x's own, with include_self) over their
    count, from two sum scatters; untouched items keep x's value."""
    if x.type.dtype != "f32":
        raise LoweringError("scatter mean runs on float32 only")
    total = _scatter_to(b, x, idx, src, d, "sum", include_self)
    ones = lambda shape: b.op("fused.expand", [b.scalar(1.0)], {"shape": list(shape)})   # noqa: E731
    count = _scatter_to(b, b.op("fused.add", [b.scalar(0.0), ones(x.type.shape)]), idx, ones(src.type.shape), d,
                        "sum", include_self)
    return typed_binary(b, "div", total, count, "f32")


def _scatter(b, op, at, m):
    x, idx = op.operands[:2]
    if x.type.rank == 0:
        raise LoweringError("scatter into a 0-d tensor is not supported")
    src = op.operands[2] if len(op.operands) > 2 else \
        b.op("fused.expand", [const_like(b, at["value"], x.type.np_dtype)], {"shape": list(idx.type.shape)})
    reduce = at.get("reduce")
    if op.name == "torch.scatter_add":
        reduce = "sum"
    d = normalize_dim(at["dim"], x.type.rank)
    if reduce == "mean":
        return _scatter_mean(b, x, b.cast(idx, "i64"), b.cast(src, x.type.dtype), d, bool(at.get("include_self", True)))
    red = "none" if reduce is None else _REDUCE_NAMES.get(reduce)
    if red is None:
        raise LoweringError(f"scatter reduce {reduce!r} is not supported (sum, prod, amax, amin, mean are)")
    return _scatter_to(b, x, idx, src, d, red, bool(at.get("include_self", True)))


for _n in ("torch.scatter.src", "torch.scatter.value", "torch.scatter.reduce", "torch.scatter.value_reduce",
           "torch.scatter_add", "torch.scatter_reduce.two"):
    CONVERTERS[_n] = _scatter


@converts("torch.index_put")
def _index_put(b, op, at, m):
    """x[idx] = values (or +=, accumulate) as a scatter into x with its indexed dims merged."""
    x, values, idx = op.operands[0], op.operands[1], list(op.operands[2:])
    pos = [i for i, v in enumerate(idx) if v is not None]
    if pos != list(range(pos[0], pos[0] + len(pos))):
        raise LoweringError("index_put with indices apart from each other is not supported")
    xm, flat, p, bshape = _linear_index(b, x, idx)
    pre, post = list(xm.type.shape[:p]), list(xm.type.shape[p + 1:])
    nb = int(np.prod(bshape, dtype=np.int64))
    vals = b.cast(values, x.type.dtype)
    full = pre + list(bshape) + post
    if vals.type.shape != tuple(full):
        vals = b.op("fused.expand", [vals], {"shape": full})
    vals = b.reshape(vals, pre + [nb] + post)
    it = _along(b, b.reshape(flat, [nb]), xm.type.rank, p, pre + [nb] + post)
    y = _scatter_to(b, xm, it, vals, p, "sum" if at["accumulate"] else "none")
    return b.reshape(y, x.type.shape)


def _slice_scatter(b, op, at, m):
    """A stepped slice_scatter as a SCATTER at the slice's positions (a unit step is legalize.py's
    concatenation)."""
    from ..dialects.torch_ops import slice_bounds
    x, src = op.operands
    d = normalize_dim(at["dim"], x.type.rank)
    s, n, st = slice_bounds(x.type.shape[d], at["start"], at["end"], at["step"])
    if st == 1 or n <= 1:
        return _SLICE_SCATTER(b, op, at, m)
    idx = _along(b, _const_index(b, s + st * np.arange(n)), x.type.rank, d, src.type.shape)
    return _scatter_to(b, x, idx, src, d)


_SLICE_SCATTER = CONVERTERS["torch.slice_scatter"]
CONVERTERS["torch.slice_scatter"] = _slice_scatter


# ---- data movement --------------------------------------------------------------------------
@converts("torch.repeat")
def _repeat(b, op, at, m):
    x = op.operands[0]
    reps = list(at["repeats"])
    shape = [1] * (len(reps) - x.type.rank) + list(x.type.shape)
    inter = [v for r, s in zip(reps, shape) for v in (1, s)]
    big = [v for r, s in zip(reps, shape) for v in (r, s)]
    y = b.op("fused.expand", [b.reshape(x, inter)], {"shape": big}) if inter != big else b.reshape(x, inter)
    return b.reshape(y, op.result.type.shape)


def _tri(lower: bool):
    def conv(b, op, at, m):
        x = op.operands[0]
        r, c = x.type.shape[-2:]
        k = at["diagonal"]
        keep = np.tri(r, c, k, dtype=bool) if lower else ~np.tri(r, c, k - 1, dtype=bool)
        return b.op("fused.where", [b.const(keep, "tri"), x, _full(b, 0, x)])
    return conv


CONVERTERS["torch.tril"] = _tri(True)
CONVERTERS["torch.triu"] = _tri(False)


def _sort(topk: bool):
    def conv(b, op, at, m):
        x = op.operands[0]
        if x.type.dtype != "f32":
            raise LoweringError("sort runs on float32 only")
        if x.type.rank == 0:
            return x if at["result"] == 0 else b.const(np.zeros((), np.int64), "idx")
        d = normalize_dim(at["dim"], x.type.rank)
        perm = list(range(x.type.rank))
        perm[d], perm[-1] = perm[-1], perm[d]
        xt = x if d == x.type.rank - 1 else b.op("fused.permute", [x], {"perm": perm})
        attrs = {"descending": bool(at["largest"] if topk else at["descending"]), "result": at["result"]}
        if topk:
            attrs["k"] = at["k"]
        y = b.op("fused.sort", [xt], attrs)
        return y if d == x.type.rank - 1 else b.op("fused.permute", [y], {"perm": perm})
    return conv


CONVERTERS["torch.sort"] = CONVERTERS["torch.sort.stable"] = _sort(False)
CONVERTERS["torch.topk"] = _sort(True)


# ---- batch and group norms with runtime or batch statistics -----------------------------------
def _per_channel(b: Builder, v: Value, rank: int) -> Value:
    return b.reshape(v, [1, v.type.numel] + [1] * (rank - 2))


def _normalise(b: Builder, x: Value, mean: Value, var: Value, eps: float) -> Value:
    """(x - mean) / sqrt(var + eps), broadcasting."""
    inv = b.op("fused.rsqrt", [typed_binary(b, "add", var, b.scalar(float(eps)), "f32")])
    return typed_binary(b, "mul", typed_binary(b, "sub", x, mean, "f32"), inv, "f32")


def _affine(b: Builder, y: Value, w: Value | None, beta: Value | None) -> Value:
    if w is not None:
        y = typed_binary(b, "mul", y, _per_channel(b, w, y.type.rank), "f32")
    return y if beta is None else typed_binary(b, "add", y, _per_channel(b, beta, y.type.rank), "f32")


def _batch_norm_any(b, op, at, m):
    """Batch norm by broadcasting binary ops when its statistics are not constants: the running ones
    given as inputs, or the batch's own (training, or no running statistics: mean and biased variance
    over every dim but the channels; results 1 and 2 are those and 1 / sqrt(var + eps)). Constant
    running statistics keep legalize.py's folded form."""
    x, w, beta, mean, var = padded(op.operands, 5)
    batch = bool(at.get("training")) or mean is None
    if not batch and at.get("result", 0) == 0 and all(v is None or m.const_value(v) is not None
                                                      for v in (w, beta, mean, var)):
        return _BATCH_NORM(b, op, at, m)
    if x.type.dtype != "f32":
        raise LoweringError("batch norm runs on float32 only")
    r = at.get("result", 0)
    if not batch:
        if r != 0:                  # the saved statistics are empty without training
            return b.const(np.zeros((0,), np.float32), "empty")
        return _affine(b, _normalise(b, x, _per_channel(b, mean, x.type.rank), _per_channel(b, var, x.type.rank),
                                     at["eps"]), w, beta)
    dims = [0] + list(range(2, x.type.rank))
    mu = b.op("fused.mean", [x], {"dims": dims, "keepdim": True})
    sigma2 = b.op("fused.var", [x], {"dims": dims, "keepdim": True, "correction": 0.0})
    if r == 1:
        return b.reshape(mu, op.result.type.shape)
    if r == 2:
        inv = b.op("fused.rsqrt", [typed_binary(b, "add", sigma2, b.scalar(float(at["eps"])), "f32")])
        return b.reshape(inv, op.result.type.shape)
    return _affine(b, _normalise(b, x, mu, sigma2, at["eps"]), w, beta)


_BATCH_NORM = CONVERTERS["torch.batch_norm"]
for _n in ("torch.batch_norm", "torch._native_batch_norm_legit_no_training", "torch.native_batch_norm",
           "torch._native_batch_norm_legit", "torch._native_batch_norm_legit.no_stats"):
    CONVERTERS[_n] = _batch_norm_any


def _group_norm_any(b, op, at, m):
    """native_group_norm's statistics (results 1, 2: mean and 1 / sqrt(var + eps) per sample and group);
    its result 0 is legalize.py's."""
    r = at.get("result", 0)
    if r == 0:
        return _GROUP_NORM(b, op, at, m)
    x = op.operands[0]
    n, g = x.type.shape[0], at["group"]
    rows = b.reshape(x, [n, g, x.type.numel // (n * g)])
    if r == 1:
        y = b.op("fused.mean", [rows], {"dims": [2]})
    else:
        var = b.op("fused.var", [rows], {"dims": [2], "correction": 0.0})
        y = b.op("fused.rsqrt", [typed_binary(b, "add", var, b.scalar(float(at["eps"])), "f32")])
    return b.reshape(y, op.result.type.shape)


_GROUP_NORM = CONVERTERS["torch.native_group_norm"]
CONVERTERS["torch.native_group_norm"] = _group_norm_any


# ---- scaled products (addmv, addbmm, addr) ---------------------------------------------------
def _scaled_product(kind):
    """beta * self + alpha * (mat @ vec | sum over the batch of batch1 @ batch2 | outer(vec1, vec2))."""
    def conv(b, op, at, m):
        c, x, y = op.operands
        if op.result.type.dtype != "f32":
            raise LoweringError(f"{op.name} runs on float32 only")
        if kind == "mv":
            p = b.reshape(b.op("fused.matmul", [x, b.reshape(y, [y.type.numel, 1])]), [x.type.shape[0]])
        elif kind == "outer":
            p = b.op("fused.matmul", [b.reshape(x, [x.type.numel, 1]), b.reshape(y, [1, y.type.numel])])
        else:
            p = b.op("fused.sum", [b.op("fused.matmul", [x, y])], {"dims": [0]})
        if at["alpha"] != 1:
            p = typed_binary(b, "mul", p, b.scalar(float(at["alpha"])), "f32")
        if at["beta"] == 0:
            return b.op("fused.expand", [p], {"shape": list(op.result.type.shape)}) \
                if p.type.shape != op.result.type.shape else p
        cb = c if at["beta"] == 1 else typed_binary(b, "mul", c, b.scalar(float(at["beta"])), "f32")
        return typed_binary(b, "add", p, cb, "f32")
    return conv


CONVERTERS["torch.addmv"] = _scaled_product("mv")
CONVERTERS["torch.addbmm"] = _scaled_product("sum_bmm")
CONVERTERS["torch.addr"] = _scaled_product("outer")


@converts("torch.xlogy.Tensor")
def _xlogy(b, op, at, m):
    """x * log(y), 0 where x == 0, NaN where y is NaN."""
    x, y = (b.cast(v, "f32") for v in op.operands)
    if op.result.type.dtype != "f32":
        raise LoweringError("xlogy runs on float32 only")
    prod = typed_binary(b, "mul", x, b.op("fused.log", [y]), "f32")
    zero = where(b, typed_binary(b, "eq", x, b.scalar(0.0), "f32"), b.scalar(0.0), prod)
    return where(b, _isnan((b, y)), y, zero)


@converts("torch.angle")
def _angle(b, op, at, m):
    """The angle of a real number: pi for negatives, 0 otherwise, NaN kept."""
    x = b.cast(op.operands[0], "f32")
    a = where(b, typed_binary(b, "lt", x, b.scalar(0.0), "f32"), b.scalar(math.pi), b.scalar(0.0))
    return where(b, _isnan((b, x)), x, a)


@converts("torch.diff")
def _diff(b, op, at, m):
    """n forward differences along dim (of the input with prepend / append concatenated): sub (xor for
    bools) of two slices."""
    x, pre, app = padded(op.operands, 3)
    d = normalize_dim(at["dim"], x.type.rank)
    parts = [v for v in (pre, x, app) if v is not None]
    y = b.op("fused.cat", parts, {"dim": d}) if len(parts) > 1 else x
    for _ in range(at["n"]):
        n = y.type.shape[d]
        if n == 0:
            break
        hi = b.op("fused.slice", [y], {"dim": d, "start": 1, "end": n})
        lo = b.op("fused.slice", [y], {"dim": d, "start": 0, "end": n - 1})
        y = typed_binary(b, "logical_xor" if y.type.dtype == "bool" else "sub", hi, lo, y.type.dtype)
    return b.reshape(y, op.result.type.shape)


@converts("torch.round.decimals")
def _round_decimals(b, op, at, m):
    """torch's: round(x * 10^d) / 10^d (d < 0: round(x / 10^-d) * 10^-d)."""
    x, d = op.operands[0], at["decimals"]
    if x.type.dtype != "f32":
        return x
    if d == 0:
        return b.op("fused.round", [x])
    p = b.scalar(10.0 ** abs(d))
    there, back = ("mul", "div") if d > 0 else ("div", "mul")
    return typed_binary(b, back, b.op("fused.round", [typed_binary(b, there, x, p, "f32")]), p, "f32")


def _norm_rows(b: Builder, x: Value, k: int) -> tuple[Value, int]:
    """x as [rows, n] for a norm over its last k dims."""
    n = int(np.prod(x.type.shape[x.type.rank - k:], dtype=np.int64))
    return b.reshape(x, [x.type.numel // max(n, 1), n]), n


@converts("torch.rms_norm")
def _rms_norm(b, op, at, m):
    x, w = padded(op.operands, 2)
    if x.type.dtype != "f32":
        raise LoweringError("rms norm runs on float32 only")
    k = len(at["normalized_shape"])
    eps = at["eps"] if at["eps"] is not None else float(np.finfo(np.float32).eps)
    rows, n = _norm_rows(b, x, k)
    y = b.op("fused.rms_norm", [rows, None if w is None else b.reshape(w, [n])], {"eps": float(eps)})
    return b.reshape(y, x.type.shape)


@converts("torch.native_layer_norm")
def _native_layer_norm(b, op, at, m):
    """Result 0: the layer norm; 1 and 2: the mean and 1 / sqrt(var + eps) over the normalised dims."""
    x, w, beta = padded(op.operands, 3)
    if x.type.dtype != "f32":
        raise LoweringError("layer norm runs on float32 only")
    k = len(at["normalized_shape"])
    rows, n = _norm_rows(b, x, k)
    if at["result"] == 0:
        y = b.op("fused.layer_norm", [rows, None if w is None else b.reshape(w, [n]),
                                      None if beta is None else b.reshape(beta, [n])], {"eps": float(at["eps"])})
        return b.reshape(y, x.type.shape)
    if at["result"] == 1:
        y = b.op("fused.mean", [rows], {"dims": [1], "keepdim": True})
    else:
        var = b.op("fused.var", [rows], {"dims": [1], "keepdim": True, "correction": 0.0})
        y = b.op("fused.rsqrt", [typed_binary(b, "add", var, b.scalar(float(at["eps"])), "f32")])
    return b.reshape(y, op.result.type.shape)


def _view(name):
    def conv(b, op, at, m):
        return b.op(name, [op.operands[0]], dict(op.attrs))
    return conv


for _n in ("diagonal", "as_strided", "unfold"):
    CONVERTERS[f"torch.{_n}"] = _view(f"fused.{_n}")


# ---- scatters into a view (diagonal_scatter, as_strided_scatter) ------------------------------
def _view_scatter(view_name):
    """x with the items of its view `view_name` replaced by src: one SCATTER into x flattened, at the
    positions the view reads (the view's own storage fact applied at compile time)."""
    from ..dialects.registry import REGISTRY
    from ..dialects.strides import contiguous_strides

    def conv(b, op, at, m):
        x, src = op.operands
        vd = REGISTRY[view_name]
        vat = vd.with_defaults({k: v for k, v in op.attrs.items() if k in vd.attrs})
        vt = vd.infer([x.type], vat)
        if not src.type.numel:
            return x
        off, strides = vd.extra["view"](vat, x.type, contiguous_strides(x.type.shape), vt)
        pos = off + sum(np.arange(n).reshape([1] * k + [n] + [1] * (vt.rank - k - 1)) * s
                        for k, (n, s) in enumerate(zip(vt.shape, strides)))
        pos = np.broadcast_to(pos, vt.shape).reshape(-1)
        flat = b.reshape(x, [x.type.numel])
        y = _scatter_to(b, flat, _const_index(b, pos), b.reshape(src, [src.type.numel]), 0)
        return b.reshape(y, x.type.shape)
    return conv


CONVERTERS["torch.diagonal_scatter"] = _view_scatter("torch.diagonal")
CONVERTERS["torch.as_strided_scatter"] = _view_scatter("torch.as_strided")


# ---- pairwise distances ---------------------------------------------------------------------
def _p_norm_last(b: Builder, d: Value, p: float) -> Value:
    """The p-norm over the last dim of the differences d (torch's cdist / pdist, p >= 0)."""
    red = {"dims": [d.type.rank - 1], "keepdim": False}
    a = b.op("fused.abs", [d])
    if p == 0:
        return b.op("fused.sum", [b.cast(typed_binary(b, "ne", d, b.scalar(0.0), "f32"), "f32")], red)
    if math.isinf(p):
        return b.op("fused.amax", [a], red)
    if p == 1:
        return b.op("fused.sum", [a], red)
    if p == 2:
        return b.op("fused.sqrt", [b.op("fused.sum", [typed_binary(b, "mul", d, d, "f32")], red)])
    return b.op("fused.pow", [b.op("fused.sum", [b.op("fused.pow", [a], {"exponent": p})], red)], {"exponent": 1.0 / p})


@converts("torch._cdist_forward")
def _cdist(b, op, at, m):
    x1, x2 = op.operands
    if op.result.type.dtype != "f32":
        raise LoweringError("cdist runs on float32 only")
    r1, r2 = x1.type.shape, x2.type.shape
    a = b.reshape(x1, list(r1[:-1]) + [1, r1[-1]])
    c = b.reshape(x2, list(r2[:-2]) + [1] + list(r2[-2:]))
    return b.reshape(_p_norm_last(b, typed_binary(b, "sub", a, c, "f32"), float(at["p"])), op.result.type.shape)


@converts("torch._pdist_forward")
def _pdist(b, op, at, m):
    x = op.operands[0]
    if op.result.type.dtype != "f32":
        raise LoweringError("pdist runs on float32 only")
    i, j = np.triu_indices(x.type.shape[0], 1)
    if not len(i):
        return b.const(np.zeros((0,), np.float32), "empty")
    d = typed_binary(b, "sub", gather_along(b, x, _const_index(b, i), 0), gather_along(b, x, _const_index(b, j), 0), "f32")
    return _p_norm_last(b, d, float(at["p"]))


def _replicate_gather(b: Builder, x: Value, widths) -> Value:
    """Replicate padding with some negative width: torch reads the edge of the uncropped input, out[j] =
    x[clamp(j - lo, 0, n - 1)] per dim, a gather of constant positions."""
    for d, (lo, hi) in enumerate(widths):
        n = x.type.shape[d]
        if lo or hi:
            x = gather_along(b, x, _const_index(b, np.clip(np.arange(n + lo + hi) - lo, 0, n - 1)), d)
    return x


def _replication_pad(nd):
    def conv(b, op, at, m):
        from ..dialects.torch_ops import pad_widths
        widths = pad_widths(op.operands[0].type.rank, at["padding"])
        if min(min(w) for w in widths) < 0:
            return _replicate_gather(b, op.operands[0], widths)
        return _REPLICATION[nd](b, op, at, m)
    return conv


_REPLICATION = {nd: CONVERTERS[f"torch.replication_pad{nd}d"] for nd in (1, 2, 3)}
for _nd in (1, 2, 3):
    CONVERTERS[f"torch.replication_pad{_nd}d"] = _replication_pad(_nd)


def _pad_any(b, op, at, m):
    """torch.pad: circular padding as a concatenation of slices per padded dim (x's last items before
    it, its first after); replicate with a negative width as a gather of clamped positions; the other
    modes are legalize.py's."""
    from ..dialects.torch_ops import pad_widths
    x = op.operands[0]
    widths = pad_widths(x.type.rank, at["pad"])
    if at["mode"] == "replicate" and min(min(w) for w in widths) < 0:
        return _replicate_gather(b, x, widths)
    if at["mode"] != "circular":
        return _PAD(b, op, at, m)
    for d, (lo, hi) in enumerate(widths):
        n = x.type.shape[d]
        if max(lo, hi) > n:
            raise LoweringError(f"circular padding of {max(lo, hi)} is wider than dim {d} ({n})")
        start, end = max(-lo, 0), n - max(-hi, 0)      # negative widths crop
        parts = [b.op("fused.slice", [x], {"dim": d, "start": n - lo, "end": n})] if lo > 0 else []
        parts.append(x if (start, end) == (0, n) else b.op("fused.slice", [x], {"dim": d, "start": start, "end": end}))
        if hi > 0:
            parts.append(b.op("fused.slice", [x], {"dim": d, "start": 0, "end": hi}))
        x = parts[0] if len(parts) == 1 else b.op("fused.cat", parts, {"dim": d})
    return x


_PAD = CONVERTERS["torch.pad"]
CONVERTERS["torch.pad"] = _pad_any


CONVERTERS["torch.alias"] = lambda b, op, at, m: op.operands[0]


@converts("torch.pow.Scalar")
def _pow_scalar_base(b, op, at, m):
    """base ** x for a Python number base: pow_tensor of a 0-d constant (float32)."""
    if op.result.type.dtype != "f32":
        raise LoweringError("pow with a scalar base runs on float32 only")
    return typed_binary(b, "pow_tensor", b.scalar(float(at["self"])), op.operands[0], "f32")


@converts("torch._embedding_bag")
def _embedding_bag(b, op, at, m):
    """The bags (result 0) as scatters of the gathered rows: each index's bag is the number of offsets
    at or before it, less one (a comparison and an int64 sum); sum and max bags are a sum / amax
    scatter into zeros, mean bags the sum over the bag's count (0 for an empty bag, as torch)."""
    if at["result"] != 0:
        raise LoweringError("only the bags of an embedding bag are supported (not its bookkeeping results)")
    w, idx, offsets, psw = padded(op.operands, 4)
    if w.type.dtype != "f32":
        raise LoweringError("embedding bags run on float32 only")
    mode, pad = at["mode"], at["padding_idx"]
    if mode == 2 and (pad >= 0 or psw is not None):
        raise LoweringError("max embedding bags with a padding index or weights are not supported")
    n, bags, dim = idx.type.numel, op.result.type.shape[0], w.type.shape[1]
    zeros = b.op("fused.add", [b.scalar(0.0), b.op("fused.expand", [b.scalar(0.0)], {"shape": [bags, dim]})])
    if n == 0 or bags == 0:
        return zeros
    idx = b.cast(idx, "i64")
    starts = b.reshape(b.op("fused.slice", [b.cast(offsets, "i64")], {"dim": 0, "start": 0, "end": bags}), [1, bags])
    pos = _const_index(b, np.arange(n).reshape(n, 1))
    bag = typed_binary(b, "sub", b.op("fused.sum", [b.cast(typed_binary(b, "le", starts, pos, "i64"), "i64")],
                                      {"dims": [1]}), const_like(b, 1, np.int64), "i64")
    rows = b.op("fused.embedding", [w, idx])
    keep = None
    if pad >= 0:
        keep = b.cast(typed_binary(b, "ne", idx, const_like(b, pad, np.int64), "i64"), "f32")
    weight = psw if keep is None else (keep if psw is None else typed_binary(b, "mul", psw, keep, "f32"))
    if weight is not None:
        rows = typed_binary(b, "mul", rows, b.reshape(weight, [n, 1]), "f32")
    at_bag = b.op("fused.expand", [b.reshape(bag, [n, 1])], {"shape": [n, dim]})
    if mode == 2:
        return _scatter_to(b, zeros, at_bag, rows, 0, "amax", include_self=False)
    total = _scatter_to(b, zeros, at_bag, rows, 0, "sum")
    if mode == 0:
        return total
    ones = keep if keep is not None else b.op("fused.expand", [b.scalar(1.0)], {"shape": [n]})
    count = _scatter_to(b, b.op("fused.add", [b.scalar(0.0), b.op("fused.expand", [b.scalar(0.0)], {"shape": [bags]})]),
                        bag, ones, 0, "sum")
    count = typed_binary(b, "maximum", count, b.scalar(1.0), "f32")
    return typed_binary(b, "div", total, b.reshape(count, [bags, 1]), "f32")


# ---- pooling as a gather of windows (indices, 3-d, adaptive max) ------------------------------
def _windows(sizes, outs, starts_of, k) -> tuple[np.ndarray, np.ndarray]:
    """(positions [O, K] in the flattened input (prod(sizes) where a window item lies outside it), the
    count of each window's items inside) for windows of k[d] items per dim d: starts_of(d) gives each
    output's first position along d, the step between items, and (adaptive) each window's length."""
    nd = len(sizes)
    pos = np.zeros([*outs, *k], np.int64)
    inside = np.ones([*outs, *k], bool)
    for d in range(nd):
        starts, step, length = starts_of(d)
        c = starts.reshape([-1 if i == d else 1 for i in range(nd)] + [1] * nd) + \
            np.arange(k[d]).reshape([1] * nd + [-1 if i == d else 1 for i in range(nd)]) * step
        ok = (c >= 0) & (c < sizes[d])
        if length is not None:          # adaptive windows: shorter ones end early
            ok &= np.arange(k[d]).reshape([1] * nd + [-1 if i == d else 1 for i in range(nd)]) < \
                length.reshape([-1 if i == d else 1 for i in range(nd)] + [1] * nd)
        inside &= ok
        pos = pos * sizes[d] + np.clip(c, 0, sizes[d] - 1)
    total = int(np.prod(sizes, dtype=np.int64))
    pos = np.where(inside, pos, total).reshape(int(np.prod(outs)), int(np.prod(k)))
    return pos, inside.reshape(pos.shape).sum(1)


def _gather_windows(b: Builder, x: Value, nd: int, pos: np.ndarray, fill: float) -> tuple[Value, list[int]]:
    """x [lead..., *spatial] as [L, O, K] window items (`fill` outside the input)."""
    lead = list(x.type.shape[:x.type.rank - nd])
    L = int(np.prod(lead, dtype=np.int64))
    total = int(np.prod(x.type.shape[x.type.rank - nd:], dtype=np.int64))
    flat = b.reshape(x, [L, total])
    pad = b.op("fused.expand", [b.const(np.full((1, 1), fill, np.float32), "fill")], {"shape": [L, 1]})
    xp = b.op("fused.cat", [flat, pad], {"dim": 1})
    o, k = pos.shape
    idx = b.op("fused.expand", [_const_index(b, pos.reshape(1, o * k))], {"shape": [L, o * k]})
    return b.reshape(b.op("fused.gather", [xp, idx], {"dim": 1}), [L, o, k]), lead


def _pool_windows_of(x: Value, nd: int, at, outs, adaptive: bool):
    """(spatial sizes, items per window and dim, starts_of(d) -> (starts, step, lengths | None)) of a
    pooling op: torch's windows (stride, padding, dilation), or its adaptive ones."""
    from ..dialects.torch_ops import _pool_params, adaptive_bounds
    sizes = list(x.type.shape[x.type.rank - nd:])
    if adaptive:
        bounds = [adaptive_bounds(sz, o) for sz, o in zip(sizes, outs)]
        k = [max(e - s for s, e in bd) for bd in bounds]
        return sizes, k, lambda d: (np.array([s for s, _ in bounds[d]]), 1, np.array([e - s for s, e in bounds[d]]))
    ks, st, pd, dl = _pool_params(at, nd)
    return sizes, ks, lambda d: (np.arange(outs[d]) * st[d] - pd[d], dl[d], None)


def _pool_by_windows(kind: str, nd: int, adaptive: bool = False):
    """max (values and indices) and average pooling of any rank as a gather of each window's items and a
    reduction over them; a window item outside the input reads -inf (max) or 0 (average)."""
    def conv(b, op, at, m):
        from ..dialects.torch_ops import _pool_params
        x = op.operands[0]
        if x.type.dtype != "f32":
            raise LoweringError(f"{op.name} runs on float32 only")
        outs = list(op.result.type.shape[-nd:])
        sizes, k, starts_of = _pool_windows_of(x, nd, at, outs, adaptive)
        pos, count = _windows(sizes, outs, starts_of, k)
        g, lead = _gather_windows(b, x, nd, pos, -math.inf if kind == "max" else 0.0)
        shape = list(op.result.type.shape)
        if kind == "max" and at.get("result", 0) == 1:
            best = b.op("fused.argmax", [g], {"dims": [2], "keepdim": True})          # [L, O, 1]
            table = b.op("fused.expand", [_const_index(b, pos.reshape(1, *pos.shape))], {"shape": list(g.type.shape)})
            return b.reshape(b.op("fused.gather", [table, best], {"dim": 2}), shape)
        if kind == "max":
            return b.reshape(b.op("fused.amax", [g], {"dims": [2]}), shape)
        total = b.op("fused.sum", [g], {"dims": [2]})                                  # [L, O]
        div = count
        if not adaptive and at.get("divisor_override"):
            div = np.full(len(count), float(at["divisor_override"]))
        elif not adaptive and at["count_include_pad"]:     # the window clipped to the padded input
            ks, st, pd, _ = _pool_params(at, nd)
            div = np.ones(1)
            for d in range(nd):
                start = np.arange(outs[d]) * st[d] - pd[d]
                div = np.multiply.outer(div, np.minimum(start + ks[d], sizes[d] + pd[d]) - start)
            div = div.reshape(-1)
        return b.reshape(typed_binary(b, "div", total, b.const(np.asarray(div, np.float32).reshape(1, -1), "div"),
                                      "f32"), shape)
    return conv


def _max_pool_any(nd):
    """max_pool{nd}d(_with_indices): legalize.py's MAX_POOL kernel for the values of 1-d and 2-d pools,
    windows gathered for the indices and for 3-d."""
    def conv(b, op, at, m):
        if nd == 3 or at.get("result", 0) == 1:
            return _pool_by_windows("max", nd)(b, op, at, m)
        return _MAX_POOLS[op.name](b, op, at, m)
    return conv


_MAX_POOLS = {n: CONVERTERS[n] for nd in (1, 2) for n in (f"torch.max_pool{nd}d", f"torch.max_pool{nd}d_with_indices")}
for _nd in (1, 2, 3):
    CONVERTERS[f"torch.max_pool{_nd}d"] = _max_pool_any(_nd)
    CONVERTERS[f"torch.max_pool{_nd}d_with_indices"] = _max_pool_any(_nd)
CONVERTERS["torch.avg_pool3d"] = _pool_by_windows("avg", 3)
CONVERTERS["torch._adaptive_avg_pool3d"] = _pool_by_windows("avg", 3, True)


def _adaptive_max_any(nd):
    def conv(b, op, at, m):
        if nd == 3 or at.get("result", 0) == 1:
            return _pool_by_windows("max", nd, True)(b, op, at, m)
        return _ADAPTIVE_MAX[nd](b, op, at, m)
    return conv


_ADAPTIVE_MAX = {nd: CONVERTERS[f"torch.adaptive_max_pool{nd}d"] for nd in (1, 2)}
for _nd in (1, 2, 3):
    CONVERTERS[f"torch.adaptive_max_pool{_nd}d"] = _adaptive_max_any(_nd)


@converts("torch.col2im")
def _col2im(b, op, at, m):
    """Each column item added into its image position: one sum SCATTER into [N, C, H*W + 1] (the extra
    item takes the positions the padding hides, then is cut off)."""
    from ..dialects.torch_ops import _col2im_params
    x = op.operands[0]
    if x.type.dtype != "f32":
        raise LoweringError("col2im runs on float32 only")
    (oh, ow), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = _col2im_params(at)
    lh = (oh + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    lw = (ow + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    lead = list(x.type.shape[:-2])
    n = int(np.prod(lead, dtype=np.int64))
    c = x.type.shape[-2] // (kh * kw)
    y = (np.arange(lh) * sh - ph).reshape(1, 1, -1, 1) + (np.arange(kh) * dh).reshape(-1, 1, 1, 1)
    xx = (np.arange(lw) * sw - pw).reshape(1, 1, 1, -1) + (np.arange(kw) * dw).reshape(1, -1, 1, 1)
    y, xx = np.broadcast_arrays(y, xx)
    pos = np.where((y >= 0) & (y < oh) & (xx >= 0) & (xx < ow), y * ow + xx, oh * ow).reshape(1, 1, -1)
    cols = b.reshape(x, [n, c, kh * kw * lh * lw])
    zeros = b.op("fused.add", [b.scalar(0.0), b.op("fused.expand", [b.scalar(0.0)], {"shape": [n, c, oh * ow + 1]})])
    idx = b.op("fused.expand", [_const_index(b, pos)], {"shape": [n, c, pos.shape[-1]]})
    out = _scatter_to(b, zeros, idx, cols, 2, "sum")
    return b.reshape(b.op("fused.slice", [out], {"dim": 2, "start": 0, "end": oh * ow}), op.result.type.shape)


@converts("torch.masked_scatter")
def _masked_scatter(b, op, at, m):
    """x with its masked items taken, in order, from source: each masked item's source position is the
    running count of masked items before it (an exact int64 cumsum), read by a GATHER, chosen by where."""
    x, mask, source = op.operands
    n = x.type.numel
    if n == 0:
        return x
    mb = b.cast(mask, "bool")
    if mb.type.shape != x.type.shape:
        mb = b.op("fused.expand", [mb], {"shape": list(x.type.shape)})
    count = b.op("fused.cumsum", [b.cast(b.reshape(mb, [n]), "i64")], {"dim": 0})
    pos = typed_binary(b, "maximum", typed_binary(b, "sub", count, const_like(b, 1, np.int64), "i64"),
                       const_like(b, 0, np.int64), "i64")
    src = b.reshape(b.cast(source, x.type.dtype), [source.type.numel])
    taken = b.reshape(b.op("fused.gather", [src, pos], {"dim": 0}) if source.type.numel else
                      b.op("fused.expand", [_full(b, 0, x)], {"shape": [n]}), x.type.shape)
    return b.op("fused.where", [mb, taken, x])
