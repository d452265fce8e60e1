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
(or `torch.select.int`) per use. An ATen op with several results (sort, topk, max_pool2d_with_indices,
native_layer_norm, ...) is one op with an int attribute `result` naming the ATen result it yields
(`multi_op`); the frontend emits one per result used, and the whole op (torch.layer_norm,
torch.max_pool2d, torch.batch_norm, ...) where only the first result is used. Ops with the FOLD_ONLY
trait build masks and positions from constants; constant folding must remove them before the fused
dialect.

Families are declared as data, once: unary and binary elementwise ops are rows of `_UNARY` / `_BINARY`
(a dtype rule and a numpy function), reductions rows of `_REDUCTIONS`; pooling, upsampling and padding
come from one helper each over the number of spatial dims. A reference follows ATen exactly (dtype
promotion, broadcasting, keepdim, negative dims, integer division rounding, NaN propagation) and is
evaluated in float64 and rounded once where float32 evaluation order would only add noise.
"""
from __future__ import annotations

import math

import numpy as np

from . import numerics
from .ir import DTYPES, TensorType, dtype_name, padded
from .strides import contiguous_strides, reshape_strides
from .symbolic import Size, Sym, as_size, exact_div
from .registry import (COMMUTATIVE, ELEMENTWISE, FOLD_ONLY, REGISTRY, SHAPE_ONLY, VIEW, Attr, broadcast_shapes,
                       op, same_as_first)
from .registry import normalize_dim as _norm_dim

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


def _resolve_shape(size, numel: Size) -> tuple[Size, ...]:
    size = [as_size(s) for s in size]
    if size.count(-1) > 1:
        raise ValueError("only one dimension can be -1")
    if -1 in size:
        known = math.prod([s for s in size if s != -1])
        rest = exact_div(numel, known) if known != 0 else None
        if rest is None:
            raise ValueError(f"shape {size} is invalid for {numel} elements")
        size[size.index(-1)] = rest
    if math.prod(size) != numel:
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


# beta * self + alpha * (a op b): one helper for the whole family (self is ignored when beta is 0)
def _product_shape(kind, a, b) -> tuple[int, ...]:
    if kind == "mm" and a.rank == 2 and b.rank == 2 and a.shape[1] == b.shape[0]:
        return (a.shape[0], b.shape[1])
    if kind == "bmm" and a.rank == 3 and b.rank == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]:
        return (a.shape[0], a.shape[1], b.shape[2])
    if kind == "mv" and a.rank == 2 and b.rank == 1 and a.shape[1] == b.shape[0]:
        return (a.shape[0],)
    if kind == "sum_bmm" and a.rank == 3 and b.rank == 3 and a.shape[0] == b.shape[0] and a.shape[2] == b.shape[1]:
        return (a.shape[1], b.shape[2])
    if kind == "outer" and a.rank == 1 and b.rank == 1:
        return (a.shape[0], b.shape[0])
    raise ValueError(f"cannot form the {kind} product of {a} and {b}")


_PRODUCTS = {"mm": np.matmul, "bmm": np.matmul, "mv": np.matmul, "outer": np.outer,
             "sum_bmm": lambda a, b: np.matmul(a, b).sum(axis=0)}


def _scaled_product_op(name, operands, kind):
    def infer(types, at):
        shape = _product_shape(kind, types[1], types[2])
        if broadcast_shapes(types[0].shape, shape) != shape:
            raise ValueError(f"{name}: self {types[0]} does not broadcast to {list(shape)}")
        return types[1].with_shape(shape)

    def ref(args, at):
        bias, a, b = args
        y = _PRODUCTS[kind](a, b)
        if at["alpha"] != 1:
            y = y * np.asarray(at["alpha"]).astype(a.dtype)
        if at["beta"] != 0:
            y = y + (bias if at["beta"] == 1 else np.asarray(at["beta"]).astype(a.dtype) * bias)
        return np.broadcast_to(y, infer([TensorType.of(x) for x in args], at).shape).astype(a.dtype)
    op(f"torch.{name}", operands, infer, ref, attrs={"beta": Attr("scalar", 1), "alpha": Attr("scalar", 1)})


for _name, _operands, _kind in (("addmm", ("self", "mat1", "mat2"), "mm"),
                                ("baddbmm", ("self", "batch1", "batch2"), "bmm"),
                                ("addmv", ("self", "mat", "vec"), "mv"),
                                ("addbmm", ("self", "batch1", "batch2"), "sum_bmm"),
                                ("addr", ("self", "vec1", "vec2"), "outer")):
    _scaled_product_op(_name, _operands, _kind)


# ---- elementwise: unary ---------------------------------------------------------------------
# Each unary op is one row: its result-dtype rule and its numpy function. "float" ops give an integer
# or bool input the default float dtype (torch.sin(int) is f32); "same" ops keep the input's dtype;
# "bool" ops are predicates. Float inputs are evaluated in float64 and rounded once (so transcendentals
# are correctly rounded, within an ulp of torch's float32 kernels), unless the row says exact=True
# (evaluated in the input's own dtype: rounding ops whose result must match torch bit for bit).
def _float_of(dt: str) -> str:
    return dt if _CATEGORY[dt] == 2 else "f32"


_UNARY_DTYPE = {"float": _float_of, "same": lambda dt: dt, "bool": lambda dt: "bool"}


def unary_op(name: str, fn, kind: str = "float", attrs=None, ints=None, exact: bool = False,
             dtype_rule=None, traits=(ELEMENTWISE,)):
    """Declare torch.<name>(self) applying fn(x, attrs) elementwise. ints: the function for integer and
    bool inputs of a "same" op (default fn itself). dtype_rule(in_dtype, attrs) overrides `kind`."""
    def out_dtype(dt, at):
        return dtype_rule(dt, at) if dtype_rule else _UNARY_DTYPE[kind](dt)

    def infer(types, at):
        return types[0].with_dtype(out_dtype(types[0].dtype, at))

    def ref(args, at):
        x = np.asarray(args[0])
        dt = _np(out_dtype(dtype_name(x.dtype), at))
        with np.errstate(all="ignore"):
            if x.dtype.kind != "f" and kind == "same" and dtype_rule is None:
                y = (ints or fn)(x, at)
            elif exact:
                y = fn(x.astype(dt if dt.kind == "f" else x.dtype), at)
            else:
                y = fn(x.astype(np.float64), at)
        return np.asarray(y).astype(dt)
    op(f"torch.{name}", ("self",), infer, ref, attrs=attrs, traits=traits)


def _identity(x, at):
    return x


def _sign(x, at):
    return np.where(np.isnan(x), 0, np.sign(x)) if x.dtype.kind == "f" else (x if x.dtype == np.bool_ else np.sign(x))


def _lgamma(v: float) -> float:
    try:
        return math.lgamma(v)
    except (ValueError, OverflowError):      # the poles: torch gives inf
        return math.inf if not math.isnan(v) else v


def _round_decimals(x, at):
    d = at["decimals"]
    if d >= 0:
        p = x.dtype.type(10.0 ** d)
        return np.round(x * p) / p
    p = x.dtype.type(10.0 ** -d)
    return np.round(x / p) * p


def _softplus(x, at):
    b = at["beta"]
    return np.where(x * b > at["threshold"], x, np.log1p(np.exp(x * b)) / b)


def _elu(x, at):
    neg = at["scale"] * at["alpha"] * np.expm1(x * at["input_scale"])
    return np.where(x > 0, at["scale"] * x, neg)


def _nan_to_num(x, at):            # evaluated in x's dtype: infinities become its largest values
    return np.nan_to_num(x, nan=0.0 if at["nan"] is None else at["nan"], posinf=at["posinf"], neginf=at["neginf"])


_SCALAR_OPT = Attr("scalar", None, optional=True)
_UNARY = [
    # name, kind, fn(x, attrs), extra keyword arguments of unary_op
    ("relu", "same", lambda x, at: numerics.relu(x), {}),
    ("abs", "same", lambda x, at: np.abs(x), {}),
    ("neg", "same", lambda x, at: -x, {}),
    ("positive", "same", _identity, {}),
    ("sign", "same", _sign, {}),
    ("sgn", "same", _sign, {}),
    ("ceil", "same", lambda x, at: np.ceil(x), {"ints": _identity}),
    ("floor", "same", lambda x, at: np.floor(x), {"ints": _identity}),
    ("round", "same", lambda x, at: np.round(x), {"ints": _identity}),
    ("trunc", "same", lambda x, at: np.trunc(x), {"ints": _identity}),
    ("fix", "same", lambda x, at: np.trunc(x), {"ints": _identity}),
    ("frac", "same", lambda x, at: x - np.trunc(x), {"exact": True}),
    ("round.decimals", "same", _round_decimals, {"ints": _identity, "exact": True,
                                                 "attrs": {"decimals": Attr("int", 0)}}),
    ("tanh", "float", lambda x, at: np.tanh(x), {}),
    ("sigmoid", "float", lambda x, at: 1.0 / (1.0 + np.exp(-x)), {}),
    ("gelu", "float", lambda x, at: (numerics.gelu_tanh if at["approximate"] == "tanh" else numerics.gelu_erf)(x),
     {"attrs": {"approximate": Attr("str", "none")}}),
    ("silu", "float", lambda x, at: x / (1.0 + np.exp(-x)), {}),
    ("mish", "float", lambda x, at: x * np.tanh(np.log1p(np.exp(x))), {}),
    ("hardswish", "float", lambda x, at: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, {}),
    ("hardsigmoid", "float", lambda x, at: np.clip(x + 3.0, 0.0, 6.0) / 6.0, {}),
    ("softplus", "float", _softplus, {"attrs": {"beta": Attr("scalar", 1), "threshold": Attr("scalar", 20)}}),
    ("elu", "float", _elu, {"attrs": {"alpha": Attr("scalar", 1), "scale": Attr("scalar", 1),
                                      "input_scale": Attr("scalar", 1)}}),
    ("leaky_relu", "float", lambda x, at: np.where(x > 0, x, x * at["negative_slope"]),
     {"attrs": {"negative_slope": Attr("scalar", 0.01)}}),
    ("hardtanh", "same", lambda x, at: np.minimum(np.maximum(x, at["min_val"]), at["max_val"]),
     {"attrs": {"min_val": Attr("scalar", -1), "max_val": Attr("scalar", 1)}}),
    ("threshold", "same", lambda x, at: np.where(x <= at["threshold"], at["value"], x),
     {"attrs": {"threshold": Attr("scalar"), "value": Attr("scalar")}}),
    ("log_sigmoid", "float", lambda x, at: -np.logaddexp(0.0, -x), {}),
    ("erf", "float", lambda x, at: numerics.erf(x), {}),
    ("erfc", "float", lambda x, at: np.vectorize(math.erfc, otypes=[np.float64])(x), {}),
    ("lgamma", "float", lambda x, at: np.vectorize(_lgamma, otypes=[np.float64])(x), {}),
    ("exp", "float", lambda x, at: np.exp(x), {}),
    ("exp2", "float", lambda x, at: np.exp2(x), {}),
    ("expm1", "float", lambda x, at: np.expm1(x), {}),
    ("log", "float", lambda x, at: np.log(x), {}),
    ("log2", "float", lambda x, at: np.log2(x), {}),
    ("log10", "float", lambda x, at: np.log10(x), {}),
    ("log1p", "float", lambda x, at: np.log1p(x), {}),
    ("sqrt", "float", lambda x, at: np.sqrt(x), {}),
    ("rsqrt", "float", lambda x, at: 1.0 / np.sqrt(x), {}),
    ("reciprocal", "float", lambda x, at: 1.0 / x, {}),
    ("sin", "float", lambda x, at: np.sin(x), {}),
    ("cos", "float", lambda x, at: np.cos(x), {}),
    ("tan", "float", lambda x, at: np.tan(x), {}),
    ("asin", "float", lambda x, at: np.arcsin(x), {}),
    ("acos", "float", lambda x, at: np.arccos(x), {}),
    ("atan", "float", lambda x, at: np.arctan(x), {}),
    ("sinh", "float", lambda x, at: np.sinh(x), {}),
    ("cosh", "float", lambda x, at: np.cosh(x), {}),
    ("asinh", "float", lambda x, at: np.arcsinh(x), {}),
    ("acosh", "float", lambda x, at: np.arccosh(x), {}),
    ("atanh", "float", lambda x, at: np.arctanh(x), {}),
    ("deg2rad", "float", lambda x, at: np.deg2rad(x), {}),
    ("angle", "float", lambda x, at: np.where(np.isnan(x), x, np.where(x < 0, np.pi, 0.0)), {}),
    ("rad2deg", "float", lambda x, at: np.rad2deg(x), {}),
    ("nan_to_num", "same", _nan_to_num, {"ints": _identity, "exact": True, "attrs": {"nan": Attr("float", None, optional=True),
                                                   "posinf": Attr("float", None, optional=True),
                                                   "neginf": Attr("float", None, optional=True)}}),
    ("isnan", "bool", lambda x, at: np.isnan(x), {}),
    ("isinf", "bool", lambda x, at: np.isinf(x), {}),
    ("isfinite", "bool", lambda x, at: np.isfinite(x), {}),
    ("isposinf", "bool", lambda x, at: np.isposinf(x), {}),
    ("isneginf", "bool", lambda x, at: np.isneginf(x), {}),
    ("signbit", "bool", lambda x, at: np.signbit(x), {}),
]
for _name, _kind, _fn, _kw in _UNARY:
    unary_op(_name, _fn, _kind, **_kw)


def _frexp_all(args, at):
    m, e = np.frexp(args[0])
    return [m.astype(args[0].dtype), e.astype(np.int32)]


def _frexp_infer(types, at):
    if _CATEGORY[types[0].dtype] != 2:
        raise ValueError(f"frexp needs a float input, got {types[0]}")
    return [types[0], types[0].with_dtype("i32")]


def _scalar_type(v) -> TensorType:
    return TensorType((), "bool" if isinstance(v, bool) else "i64" if isinstance(v, int) else "f32")


def _with_scalars(dt: str, *scalars) -> str:
    """The dtype of a tensor of dtype dt combined with Python scalars (wrapped numbers)."""
    return promote_dtypes([TensorType((1,), dt)] + [_scalar_type(s) for s in scalars if s is not None])


def _pow_scalar(x, at):
    e = at["exponent"]
    if x.dtype.kind != "f" and not isinstance(e, float):
        return np.power(x.astype(np.int64), int(e))
    return np.power(x.astype(np.float64), e)


def _clamp(x, at):
    if at["min"] is not None:
        x = np.maximum(x, at["min"])
    if at["max"] is not None:
        x = np.minimum(x, at["max"])
    return x


unary_op("pow.Tensor_Scalar", _pow_scalar, attrs={"exponent": Attr("scalar")}, exact=True,
         dtype_rule=lambda dt, at: _with_scalars(dt, at["exponent"]))
unary_op("clamp", _clamp, attrs={"min": _SCALAR_OPT, "max": _SCALAR_OPT}, exact=True,
         dtype_rule=lambda dt, at: _with_scalars(dt, at["min"], at["max"]))
unary_op("bitwise_not", lambda x, at: np.logical_not(x) if x.dtype == np.bool_ else np.invert(x), "same",
         traits=(ELEMENTWISE, FOLD_ONLY))
unary_op("logical_not", lambda x, at: np.logical_not(x), exact=True, dtype_rule=lambda dt, at: "bool",
         traits=(ELEMENTWISE, FOLD_ONLY))


op("torch.frexp.Tensor", ("self",), lambda t, at: _frexp_infer(t, at)[at["result"]],
   lambda x, at: _frexp_all(x, at)[at["result"]], attrs={"result": Attr("int", 0)}, results=2)


# ---- elementwise: binary --------------------------------------------------------------------
# A binary op is one row too: both operands are cast to the dtype torch computes in (the promoted
# dtype, or its float for true division) before the numpy function runs, so numpy's own promotion
# (i64 + f32 -> f64) never leaks in. result: "promote" (computation dtype), "bool" (predicates).
def _promote_infer(types, attrs):
    present = [t for t in types if t is not None]
    return TensorType(broadcast_shapes(*(t.shape for t in present)), promote_dtypes(present))


def _bool_infer(types, attrs):
    return _promote_infer(types, attrs).with_dtype("bool")


_COMPUTE = {"promote": lambda dt, at: dt, "float": lambda dt, at: _float_of(dt), "bool": lambda dt, at: dt,
            "logical": lambda dt, at: "bool",
            # div.Tensor_mode: true division without a rounding mode
            "div_mode": lambda dt, at: _float_of(dt) if at["rounding_mode"] is None else dt}


def binary_op(name: str, fn, compute: str = "promote", commutative=False, alpha=False, fold_only=False,
              attrs=None, int_fn=None, f64=False, verify=None, operands=("self", "other")):
    """Declare torch.<name>(self, other). compute: "promote" (result in the promoted dtype), "float"
    (the promoted dtype's float: true division), "bool" (a comparison in the promoted dtype, bool
    result), "logical" (operands as bool, bool result). int_fn: the function for integer operands
    (default fn); f64: evaluate float operands in float64 and round once. alpha: other is scaled by
    the `alpha` attribute first (add, sub)."""
    attrs = dict(attrs or {})
    if alpha:
        attrs["alpha"] = Attr("scalar", 1)
    traits = (ELEMENTWISE,) + ((COMMUTATIVE,) if commutative else ()) + ((FOLD_ONLY,) if fold_only else ())

    def dtypes(types, at):
        c = _COMPUTE[compute](promote_dtypes(types), at)
        return c, ("bool" if compute in ("bool", "logical") else c)

    def infer(types, at):
        t = _promote_infer(types, at)
        return t.with_dtype(dtypes(types, at)[1])

    def ref(args, at):
        a, b = np.asarray(args[0]), np.asarray(args[1])
        c, r = dtypes([TensorType.of(a), TensorType.of(b)], at)
        a, b = a.astype(_np(c)), b.astype(_np(c))
        if alpha and at["alpha"] != 1:
            b = b * np.asarray(at["alpha"]).astype(_np(c))
        with np.errstate(all="ignore"):
            if c in ("f32", "f64") and f64:
                y = fn(a.astype(np.float64), b.astype(np.float64), at)
            elif _CATEGORY[c] < 2 and int_fn is not None:
                y = int_fn(a, b, at)
            else:
                y = fn(a, b, at)
        return np.asarray(y).astype(_np(r))
    op(f"torch.{name}", operands, infer, ref, attrs=attrs, traits=traits, verify=verify)


def _div_trunc_int(a, b):
    q = np.floor_divide(a, np.where(b == 0, 1, b))
    return np.where((q < 0) & (q * b != a), q + 1, q)


def _div_mode(a, b, at):
    mode = at["rounding_mode"]
    if mode is None:
        return np.true_divide(a, b)
    if a.dtype.kind != "f":
        return np.floor_divide(a, np.where(b == 0, 1, b)) if mode == "floor" else _div_trunc_int(a, b)
    return np.floor_divide(a, b) if mode == "floor" else np.trunc(np.true_divide(a, b))


def _div_mode_verify(op_, types):
    mode = op_.attrs.get("rounding_mode")
    return None if mode in (None, "trunc", "floor") else f"rounding_mode {mode!r} is not trunc, floor or none"


def _float_pow(a, b, at):
    return np.power(a, b)


def integer_pow(a, b):
    """torch's integer power: a negative exponent gives 1 for base 1, +-1 for base -1, else 0."""
    pos = np.power(a, np.maximum(b, 0))
    odd = np.remainder(b, 2) == 1
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(odd, -1, 1), 0))
    return np.where(b < 0, neg, pos)


def _int_pow(a, b, at):
    return integer_pow(a, b) if a.dtype != np.bool_ else np.logical_or(a, b == 0)


_BINARY = [
    # name, function(a, b, attrs), keyword arguments of binary_op
    ("add.Tensor", lambda a, b, at: a + b, {"commutative": True, "alpha": True}),      # bool + bool: or
    ("sub.Tensor", lambda a, b, at: a - b, {"alpha": True}),
    ("rsub.Tensor", lambda a, b, at: b - a * np.asarray(at["alpha"]).astype(a.dtype),
     {"attrs": {"alpha": Attr("scalar", 1)}}),                                       # other - alpha * self
    ("mul.Tensor", lambda a, b, at: a * b, {"commutative": True}),                    # bool * bool: and
    ("div.Tensor", lambda a, b, at: np.true_divide(a, b), {"compute": "float"}),
    ("div.Tensor_mode", _div_mode, {"compute": "div_mode", "verify": _div_mode_verify,
                                    "attrs": {"rounding_mode": Attr("str", None, optional=True)}}),
    ("maximum", lambda a, b, at: np.maximum(a, b), {"commutative": True}),
    ("minimum", lambda a, b, at: np.minimum(a, b), {"commutative": True}),
    ("fmax", lambda a, b, at: np.fmax(a, b), {"commutative": True}),
    ("fmin", lambda a, b, at: np.fmin(a, b), {"commutative": True}),
    ("pow.Tensor_Tensor", _float_pow, {"int_fn": _int_pow, "f64": True, "operands": ("self", "exponent")}),
    ("atan2", lambda a, b, at: np.arctan2(a, b), {"compute": "float", "f64": True}),
    ("hypot", lambda a, b, at: np.hypot(a, b), {"compute": "float", "f64": True}),
    ("copysign.Tensor", lambda a, b, at: np.copysign(a, b), {"compute": "float"}),
    ("fmod.Tensor", lambda a, b, at: np.fmod(a, b), {"int_fn": lambda a, b, at: np.fmod(a, np.where(b == 0, 1, b))}),
    ("remainder.Tensor", lambda a, b, at: np.remainder(a, b),
     {"int_fn": lambda a, b, at: np.remainder(a, np.where(b == 0, 1, b))}),
    ("xlogy.Tensor", lambda a, b, at: np.where(np.isnan(b), np.nan, np.where(a == 0, 0.0, a * np.log(b))),
     {"compute": "float", "f64": True}),
    ("logaddexp", lambda a, b, at: np.logaddexp(a, b), {"compute": "float", "f64": True, "commutative": True}),
    ("nextafter", lambda a, b, at: np.nextafter(a, b), {}),
    ("ldexp.Tensor", lambda a, b, at: a * np.exp2(b), {"compute": "float", "f64": True}),
    ("bitwise_and.Tensor", lambda a, b, at: a & b, {"commutative": True, "fold_only": True}),
    ("__and__.Tensor", lambda a, b, at: a & b, {"commutative": True, "fold_only": True}),
    ("bitwise_or.Tensor", lambda a, b, at: a | b, {"commutative": True, "fold_only": True}),
    ("__or__.Tensor", lambda a, b, at: a | b, {"commutative": True, "fold_only": True}),
    ("bitwise_xor.Tensor", lambda a, b, at: a ^ b, {"commutative": True, "fold_only": True}),
    ("__xor__.Tensor", lambda a, b, at: a ^ b, {"commutative": True, "fold_only": True}),
    ("bitwise_left_shift.Tensor", lambda a, b, at: np.left_shift(a, b), {}),
    ("bitwise_right_shift.Tensor", lambda a, b, at: np.right_shift(a, b), {}),
    ("logical_and", lambda a, b, at: np.logical_and(a, b), {"compute": "logical", "commutative": True,
                                                            "fold_only": True}),
    ("logical_or", lambda a, b, at: np.logical_or(a, b), {"compute": "logical", "commutative": True,
                                                          "fold_only": True}),
    ("logical_xor", lambda a, b, at: np.logical_xor(a, b), {"compute": "logical", "commutative": True,
                                                            "fold_only": True}),
]
for _name, _fn, _kw in _BINARY:
    binary_op(_name, _fn, **_kw)

# comparisons: mask building. The .Scalar forms keep `other` as an attribute.
_COMPARE = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
            "ge": np.greater_equal}
for _name, _fn in _COMPARE.items():
    binary_op(f"{_name}.Tensor", (lambda f: lambda a, b, at: f(a, b))(_fn), "bool",
              commutative=_name in ("eq", "ne"), fold_only=True)
    op(f"torch.{_name}.Scalar", ("self",), lambda t, at: t[0].with_dtype("bool"),
       (lambda f: lambda x, at: np.asarray(f(x[0].astype(_np(_with_scalars(dtype_name(x[0].dtype), at["other"]))),
                                             at["other"])))(_fn),
       attrs={"other": Attr("scalar")}, traits=(ELEMENTWISE, FOLD_ONLY))


def scalar_tensor_op(name: str, operand: str, scalar: str, fn, attrs=None):
    """torch.<name> of one Tensor operand and a Scalar attribute `scalar` on the other side of the
    operation (rsub.Scalar: other - alpha * self; pow.Scalar: self ** exponent); the result has the
    tensor's dtype promoted with the scalar."""
    def out(t, at):
        return _with_scalars(t.dtype, at[scalar])

    def ref(args, at):
        x = np.asarray(args[0])
        c = _np(out(TensorType.of(x), at))
        with np.errstate(all="ignore"):
            return np.asarray(fn(x.astype(c), at)).astype(c)
    op(f"torch.{name}", (operand,), lambda t, at: t[0].with_dtype(out(t[0], at)), ref,
       attrs={scalar: Attr("scalar"), **(attrs or {})}, traits=(ELEMENTWISE,))


def _pow_scalar_base(x, at):
    s = at["self"]
    if x.dtype.kind != "f":
        return integer_pow(np.asarray(s, dtype=x.dtype), x)
    return np.power(np.float64(s), x.astype(np.float64))


scalar_tensor_op("rsub.Scalar", "self", "other", lambda x, at: at["other"] - x * at["alpha"],
                 attrs={"alpha": Attr("scalar", 1)})
scalar_tensor_op("pow.Scalar", "exponent", "self", _pow_scalar_base)


# ---- elementwise: ternary (select, clamp by tensors, masked fill) ---------------------------
def _where_ref(args, at):
    c, a, b = args
    dt = _np(promote_dtypes([TensorType.of(a), TensorType.of(b)]))
    return np.where(c, a.astype(dt), b.astype(dt))


def _where_infer(types, at):
    if types[0].dtype != "bool":
        raise ValueError(f"where: condition must be bool, got {types[0]}")
    return TensorType(broadcast_shapes(types[0].shape, types[1].shape, types[2].shape), promote_dtypes(types[1:]))


op("torch.where.self", ("condition", "self", "other"), _where_infer, _where_ref, traits=(ELEMENTWISE,))


def _clamp_tensor_ref(args, at):
    x, lo, hi = padded(args, 3)
    dt = _np(promote_dtypes([TensorType.of(a) for a in (x, lo, hi) if a is not None]))
    y = x.astype(dt)
    if lo is not None:
        y = np.maximum(y, lo.astype(dt))
    if hi is not None:
        y = np.minimum(y, hi.astype(dt))
    return np.broadcast_to(y, _promote_infer([TensorType.of(a) for a in (x, lo, hi) if a is not None], at).shape)


op("torch.clamp.Tensor", ("self", "min?", "max?"), _promote_infer, _clamp_tensor_ref, traits=(ELEMENTWISE,))


def _masked_fill_infer(types, attrs):
    x, m = types[0], types[1]
    if m.dtype != "bool":
        raise ValueError(f"masked_fill: mask must be bool, got {m}")
    if broadcast_shapes(x.shape, m.shape) != x.shape:
        raise ValueError(f"mask {m} does not broadcast to {x}")
    if len(types) > 2 and types[2].rank != 0:
        raise ValueError(f"masked_fill: value must be 0-d, got {types[2]}")
    return x


op("torch.masked_fill.Scalar", ("self", "mask"), _masked_fill_infer,
   lambda x, at: np.where(x[1], np.asarray(at["value"]).astype(x[0].dtype), x[0]),
   attrs={"value": Attr("scalar")}, traits=(ELEMENTWISE,))
op("torch.masked_fill.Tensor", ("self", "mask", "value"), _masked_fill_infer,
   lambda x, at: np.where(x[1], np.asarray(x[2]).astype(x[0].dtype), x[0]), traits=(ELEMENTWISE,))


# ---- ops with several results ---------------------------------------------------------------
# An op has one result in rt's IR. An ATen op that returns several tensors (max_pool2d_with_indices,
# sort, native_layer_norm, ...) is declared once with an int attribute `result`: the index of the
# ATen result this op yields; the frontend emits one op per result that is used. extra["results"]
# is the number of results.
def multi_op(name: str, operands, infer_all, ref_all, attrs=None, results: int = 2, **kw):
    """Declare an op whose infer_all/ref_all give every ATen result; the op yields attrs["result"]."""
    def pick(seq, at):
        r = at["result"]
        if not 0 <= r < results:
            raise ValueError(f"{name} has {results} results, not #{r}")
        return seq[r]
    return op(name, operands, lambda t, at: pick(infer_all(t, at), at), lambda x, at: pick(ref_all(x, at), at),
              attrs={**(attrs or {}), "result": Attr("int", 0)}, results=results, **kw)


# ---- reductions -----------------------------------------------------------------------------
# One helper declares every reduction: which attribute holds the dims (a list, one int or none), the
# result-dtype rule and a numpy function over (x, axes, keepdims, attrs). Dims follow ATen: negative
# dims count from the end, none or an empty list means every dim, a 0-d input reduces over nothing.
def reduce_axes(x_rank: int, dim) -> tuple[int, ...]:
    if x_rank == 0:
        if dim is not None and not isinstance(dim, int):
            for d in dim:
                _norm_dim(d, 0)
        elif isinstance(dim, int):
            _norm_dim(dim, 0)
        return ()
    if dim is None:
        return tuple(range(x_rank))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if not dims:
        return tuple(range(x_rank))
    axes = [_norm_dim(d, x_rank) for d in dims]
    if len(set(axes)) != len(axes):
        raise ValueError(f"dim {dims} repeats a dim")
    return tuple(sorted(axes))


def _reduced_shape(shape, axes, keepdim) -> tuple[int, ...]:
    return tuple((1 if i in axes else s) for i, s in enumerate(shape) if keepdim or i not in axes)


def _sum_dtype(dt, at):
    return at.get("dtype") or (dt if _CATEGORY[dt] == 2 else "i64")


def _mean_dtype(dt, at):
    out = at.get("dtype") or dt
    if _CATEGORY[out] != 2:
        raise ValueError(f"mean needs a float input or dtype, got {dt}")
    return out


_REDUCE_DTYPE = {"same": lambda dt, at: dt, "sum": _sum_dtype, "float": _mean_dtype,
                 "tofloat": lambda dt, at: _float_of(dt),
                 "bool": lambda dt, at: "bool", "index": lambda dt, at: "i64"}
_DIMS_OPT = Attr("ints", None, optional=True)
_KEEPDIM = {"keepdim": Attr("bool", False)}


def reduction_op(name: str, fn, kind: str, dim: str = "ints", attrs=None, keepdim: bool = True,
                 traits=()):
    """Declare torch.<name>(self). dim: "ints" (an optional list attribute `dim`), "ints_required",
    "int" (one required dim), "int?" (one optional dim) or "none" (every dim). kind: the result
    dtype rule: "same", "sum" (ints and bools sum to i64; `dtype` attribute honoured), "float"
    (mean, var: float only), "tofloat" (integers give f32: logsumexp), "bool" (any, all), "index"
    (argmax: i64)."""
    spec = {"ints": _DIMS_OPT, "ints_required": Attr("ints"), "int": Attr("int"),
            "int?": Attr("int", None, optional=True), "none": None}[dim]
    all_attrs = dict(attrs or {})
    if spec is not None:
        all_attrs["dim"] = spec
    if keepdim:
        all_attrs.update(_KEEPDIM)

    def axes_of(rank, at):
        return reduce_axes(rank, at.get("dim")) if spec is not None else tuple(range(rank))

    def infer(types, at):
        x = types[0]
        axes = axes_of(x.rank, at)
        return TensorType(_reduced_shape(x.shape, axes, at.get("keepdim", False)),
                          _REDUCE_DTYPE[kind](x.dtype, at))

    def ref(args, at):
        x = np.asarray(args[0])
        t = infer([TensorType.of(x)], at)
        if kind in ("sum", "float", "tofloat"):
            x = x.astype(np.float64 if _CATEGORY[t.dtype] == 2 else np.int64)
        elif kind == "bool":
            x = x.astype(bool)
        with np.errstate(all="ignore"):
            y = fn(x, axes_of(x.ndim, at), bool(at.get("keepdim", False)), at)
        return np.asarray(y).astype(t.np_dtype).reshape(t.shape)
    op(f"torch.{name}", ("self",), infer, ref, attrs=all_attrs, traits=traits)


def _arg_reduce(f):
    def fn(x, axes, keepdims, at):
        if x.ndim == 0:
            return np.zeros((), np.int64)
        axis = axes[0] if at.get("dim") is not None else None
        return f(x, axis=axis, keepdims=keepdims)
    return fn


def _var(correction_of):
    def fn(x, axes, keepdims, at):
        n = math.prod([x.shape[a] for a in axes])
        m = x.mean(axis=axes, keepdims=True) if n else np.zeros_like(x)
        ss = ((x - m) ** 2).sum(axis=axes, keepdims=keepdims)
        return ss / max(n - correction_of(at), 0)
    return fn


def _correction(at):
    c = at.get("correction")
    return 1 if c is None else c


def _unbiased(at):
    return 1 if at.get("unbiased", True) else 0


def _logsumexp(x, axes, keepdims, at):
    m = np.max(x, axis=axes, keepdims=True) if x.size else np.zeros([1] * x.ndim)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keepdims else np.squeeze(y, axis=axes)


def _vector_norm(x, axes, keepdims, p):
    a = np.abs(x)
    if p == 0:
        return np.sum(a != 0, axis=axes, keepdims=keepdims)
    if math.isinf(p):
        return (np.max if p > 0 else np.min)(a, axis=axes, keepdims=keepdims)
    return np.sum(a ** p, axis=axes, keepdims=keepdims) ** (1.0 / p)


_DTYPE = {"dtype": _DTYPE_ATTR}
_REDUCTIONS = [
    # name, fn(x, axes, keepdims, attrs), kind, dim, attrs
    ("sum.dim_IntList", lambda x, ax, k, at: np.sum(x, axis=ax, keepdims=k), "sum", "ints", _DTYPE),
    ("mean.dim", lambda x, ax, k, at: np.mean(x, axis=ax, keepdims=k), "float", "ints", _DTYPE),
    ("prod.dim_int", lambda x, ax, k, at: np.prod(x, axis=ax, keepdims=k), "sum", "int", _DTYPE),
    ("prod", lambda x, ax, k, at: np.prod(x, axis=ax), "sum", "none", _DTYPE),
    ("amax", lambda x, ax, k, at: np.max(x, axis=ax, keepdims=k), "same", "ints", {}),
    ("amin", lambda x, ax, k, at: np.min(x, axis=ax, keepdims=k), "same", "ints", {}),
    ("any", lambda x, ax, k, at: np.any(x, axis=ax), "bool", "none", {}),
    ("any.dim", lambda x, ax, k, at: np.any(x, axis=ax, keepdims=k), "bool", "int", {}),
    ("any.dims", lambda x, ax, k, at: np.any(x, axis=ax, keepdims=k), "bool", "ints", {}),
    ("all", lambda x, ax, k, at: np.all(x, axis=ax), "bool", "none", {}),
    ("all.dim", lambda x, ax, k, at: np.all(x, axis=ax, keepdims=k), "bool", "int", {}),
    ("all.dims", lambda x, ax, k, at: np.all(x, axis=ax, keepdims=k), "bool", "ints", {}),
    ("argmax", _arg_reduce(np.argmax), "index", "int?", {}),
    ("argmin", _arg_reduce(np.argmin), "index", "int?", {}),
    ("var.correction", _var(_correction), "float", "ints", {"correction": _SCALAR_OPT}),
    ("var.dim", _var(_unbiased), "float", "ints", {"unbiased": Attr("bool", True)}),
    ("std.correction", lambda x, ax, k, at: np.sqrt(_var(_correction)(x, ax, k, at)), "float", "ints",
     {"correction": _SCALAR_OPT}),
    ("std.dim", lambda x, ax, k, at: np.sqrt(_var(_unbiased)(x, ax, k, at)), "float", "ints",
     {"unbiased": Attr("bool", True)}),
    ("logsumexp", _logsumexp, "tofloat", "ints_required", {}),
    ("linalg_vector_norm", lambda x, ax, k, at: _vector_norm(x, ax, k, at["ord"]), "float", "ints",
     {"ord": Attr("scalar", 2), **_DTYPE}),
]
for _name, _fn, _kind, _dim, _attrs in _REDUCTIONS:
    reduction_op(_name, _fn, _kind, _dim, _attrs, keepdim=_dim != "none")


def _moments_op(name, spread):
    """var_mean / std_mean: (spread, mean) over the dims, with Bessel's `correction`."""
    def infer(types, at):
        x = types[0]
        t = TensorType(_reduced_shape(x.shape, reduce_axes(x.rank, at["dim"]), at["keepdim"]), _mean_dtype(x.dtype, {}))
        return [t, t]

    def ref(args, at):
        x = args[0].astype(np.float64)
        axes = reduce_axes(x.ndim, at["dim"])
        t = infer([TensorType.of(args[0])], at)[0]
        with np.errstate(all="ignore"):
            v = _var(_correction)(x, axes, at["keepdim"], at)
            m = np.mean(x, axis=axes, keepdims=at["keepdim"])
        return [np.asarray(spread(v)).astype(t.np_dtype).reshape(t.shape), np.asarray(m).astype(t.np_dtype).reshape(t.shape)]
    multi_op(f"torch.{name}", ("self",), infer, ref,
             attrs={"dim": _DIMS_OPT, "correction": _SCALAR_OPT, "keepdim": Attr("bool", False)})


_moments_op("var_mean.correction", lambda v: v)
_moments_op("std_mean.correction", np.sqrt)


def _scan_infer(types, attrs):
    x = types[0]
    _norm_dim(attrs["dim"], x.rank)
    return x.with_dtype(attrs.get("dtype") or ("i64" if _CATEGORY[x.dtype] < 2 else x.dtype))


def _scan_op(name, fn, traits=()):
    """cumsum / cumprod along `dim` (ints and bools accumulate in i64, like torch)."""
    def ref(x, at):
        t = _scan_infer([TensorType.of(x[0])], at)
        a = x[0].astype(np.float64 if _CATEGORY[t.dtype] == 2 else np.int64)
        return fn(a, axis=_norm_dim(at["dim"], a.ndim) if a.ndim else None).reshape(t.shape).astype(t.np_dtype)
    op(f"torch.{name}", ("self",), _scan_infer, ref, attrs={"dim": Attr("int"), "dtype": _DTYPE_ATTR},
       traits=traits)


_scan_op("cumsum", np.cumsum, traits=(FOLD_ONLY,))
_scan_op("cumprod", np.cumprod)
_scan_op("logcumsumexp", lambda a, axis: np.logaddexp.accumulate(a, axis=axis if axis is not None else 0))


def _search_infer(types, at):
    seq, x = types[0], types[1]
    if seq.rank > 1 and seq.shape[:-1] != x.shape[:-1]:
        raise ValueError(f"searchsorted: sorted sequence {seq} and values {x} differ in their leading dims")
    return x.with_dtype("i32" if at["out_int32"] else "i64")


def _search_ref(seq, x, right):
    side = "right" if right else "left"
    if seq.ndim <= 1:
        return np.searchsorted(seq, x, side=side)
    rows = [np.searchsorted(s_, v, side=side) for s_, v in zip(seq.reshape(-1, seq.shape[-1]),
                                                                 x.reshape(-1, x.shape[-1]))]
    return np.array(rows).reshape(x.shape)


op("torch.searchsorted.Tensor", ("sorted_sequence", "self", "sorter?"), _search_infer,
   lambda x, at: _search_ref(x[0] if x[2] is None else np.take_along_axis(x[0], x[2], -1), x[1],
                             at["right"] or at["side"] == "right").astype(np.int32 if at["out_int32"] else np.int64),
   attrs={"out_int32": Attr("bool", False), "right": Attr("bool", False), "side": Attr("str", None, optional=True)})
op("torch.bucketize.Tensor", ("self", "boundaries"),
   lambda t, at: t[0].with_dtype("i32" if at["out_int32"] else "i64"),
   lambda x, at: np.searchsorted(x[1], x[0], side="right" if at["right"] else "left").astype(
       np.int32 if at["out_int32"] else np.int64),
   attrs={"out_int32": Attr("bool", False), "right": Attr("bool", False)})


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


# ---- softmax and normalisation --------------------------------------------------------------
def softmax_ref(x: np.ndarray, dim: int) -> np.ndarray:
    """float32 softmax with max-subtraction (float64 for f64 input)."""
    x = np.asarray(x)
    xf = x if x.dtype == np.float64 else x.astype(np.float32)
    if xf.ndim == 0:
        xf = xf.reshape(1)
        return (softmax_ref(xf, 0)).reshape(())
    m = np.max(xf, axis=dim, keepdims=True) if xf.size else xf
    m = np.where(np.isneginf(m), 0, m)               # fully masked rows give 0/0 -> nan like torch
    e = np.exp(xf - m)
    return e / np.sum(e, axis=dim, keepdims=True)


def _log_softmax(x, dim):
    xf = np.asarray(x, dtype=np.float64)
    if xf.ndim == 0:
        return np.zeros((), np.float64)
    if xf.size == 0:
        return xf
    m = np.max(xf, axis=dim, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return xf - m - np.log(np.sum(np.exp(xf - m), axis=dim, keepdims=True))


def _softmax_infer(types, attrs):
    _norm_dim(attrs["dim"], types[0].rank)
    dt = attrs.get("dtype")
    if _CATEGORY[dt or types[0].dtype] != 2:
        raise ValueError(f"softmax needs a float input or dtype, got {types[0]}")
    return types[0].with_dtype(dt) if dt else types[0]


def _safe_softmax(x, dim):
    """softmax whose fully masked (all -inf) rows are 0 instead of nan."""
    y = softmax_ref(x, dim)
    if np.asarray(x).ndim == 0:
        return y
    return np.where(np.all(np.isneginf(x), axis=dim, keepdims=True), 0, y)


def _softmax_family(name, fn, attrs):
    def ref(x, at):
        t = _softmax_infer([TensorType.of(x[0])], at)
        a = x[0].astype(t.np_dtype)
        with np.errstate(all="ignore"):
            return np.asarray(fn(a, _norm_dim(at["dim"], a.ndim) if a.ndim else 0)).astype(t.np_dtype)
    op(f"torch.{name}", ("self",), _softmax_infer, ref, attrs={"dim": Attr("int"), **attrs})


_HALF = {"half_to_float": Attr("bool", False)}
_softmax_family("softmax.int", softmax_ref, _DTYPE)
_softmax_family("_softmax", softmax_ref, _HALF)
_softmax_family("_safe_softmax", _safe_softmax, _DTYPE)
_softmax_family("log_softmax.int", _log_softmax, _DTYPE)
_softmax_family("_log_softmax", _log_softmax, _HALF)


def _norm_shape_verify(op_, types):
    x, w, b = padded(types, 3)
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
   verify=_norm_shape_verify)


def _native_layer_norm_infer(types, at):
    x = types[0]
    k = len(at["normalized_shape"])
    stat = x.with_shape(x.shape[:x.rank - k] + (1,) * k)
    return [x, stat, stat]


def _native_layer_norm_ref(args, at):
    x, w, b = padded(args, 3)
    axes = tuple(range(x.ndim - len(at["normalized_shape"]), x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(((x64 - mean) ** 2).mean(axis=axes, keepdims=True) + at["eps"])
    return [numerics.layer_norm(x, w, b, at["eps"], len(axes)), mean.astype(x.dtype), rstd.astype(x.dtype)]


multi_op("torch.native_layer_norm", ("input", "weight?", "bias?"), _native_layer_norm_infer,
         _native_layer_norm_ref, attrs={"normalized_shape": Attr("ints"), "eps": Attr("float")}, results=3,
         verify=_norm_shape_verify)


def _rms_norm_ref(args, at):
    x, w = padded(args, 2)
    eps = at["eps"] if at["eps"] is not None else float(np.finfo(x.dtype).eps)
    axes = tuple(range(x.ndim - len(at["normalized_shape"]), x.ndim))
    x64 = x.astype(np.float64)
    y = x64 / np.sqrt((x64 * x64).mean(axis=axes, keepdims=True) + eps)
    return (y * w if w is not None else y).astype(x.dtype)


op("torch.rms_norm", ("input", "weight?"), same_as_first, _rms_norm_ref,
   attrs={"normalized_shape": Attr("ints"), "eps": Attr("float", None, optional=True)},
   verify=_norm_shape_verify)


def _channel_shape(x):
    return [1, x.shape[1]] + [1] * (x.ndim - 2)


def batch_norm_math(x, w, b, mean, var, eps):
    """(x - mean) / sqrt(var + eps) * w + b, per channel (dim 1), in float64."""
    s = _channel_shape(x)
    y = (x.astype(np.float64) - mean.reshape(s)) / np.sqrt(var.reshape(s) + eps)
    if w is not None:
        y = y * w.reshape(s)
    if b is not None:
        y = y + b.reshape(s)
    return y


def _batch_stats(x):
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    return x64.mean(axis=axes), x64.var(axis=axes)


def _batch_norm_all(args, at, training: bool):
    """(out, saved mean, saved 1/std) of ATen's batch norms: batch statistics when training (or no
    running statistics), else the running ones (the saved statistics are then empty)."""
    x, w, b, rm, rv = padded(args, 5)
    if training or rm is None:
        mean, var = _batch_stats(x)
        y = batch_norm_math(x, w, b, mean, var, at["eps"])
        return [y.astype(x.dtype), mean.astype(x.dtype), (1.0 / np.sqrt(var + at["eps"])).astype(x.dtype)]
    y = batch_norm_math(x, w, b, rm.astype(np.float64), rv.astype(np.float64), at["eps"])
    empty = np.zeros((0,), x.dtype)
    return [y.astype(x.dtype), empty, empty]


def _batch_norm_infer(types, at, training: bool):
    x = types[0]
    if x.rank < 2:
        raise ValueError(f"batch norm needs an input of rank >= 2, got {x}")
    for t in types[1:5]:
        if t is not None and t.shape != (x.shape[1],):
            raise ValueError(f"batch norm: per-channel tensor {t} does not match {x.shape[1]} channels")
    stat = x.with_shape((x.shape[1],) if training or len(types) < 4 or types[3] is None else (0,))
    return [x, stat, stat]


_BN_ATTRS = {"momentum": Attr("float", 0.1), "eps": Attr("float", 1e-5)}
op("torch.batch_norm", ("input", "weight?", "bias?", "running_mean?", "running_var?"),
   lambda t, at: _batch_norm_infer(t, at, at["training"])[0],
   lambda x, at: _batch_norm_all(x, at, at["training"])[0],
   attrs={"training": Attr("bool", False), **_BN_ATTRS, "cudnn_enabled": Attr("bool", True)})
multi_op("torch._native_batch_norm_legit_no_training", ("input", "weight?", "bias?", "running_mean", "running_var"),
         lambda t, at: _batch_norm_infer(t, at, False), lambda x, at: _batch_norm_all(x, at, False),
         attrs=_BN_ATTRS, results=3)
for _name, _operands in (("_native_batch_norm_legit", ("input", "weight?", "bias?", "running_mean", "running_var")),
                         ("_native_batch_norm_legit.no_stats", ("input", "weight?", "bias?")),
                         ("native_batch_norm", ("input", "weight?", "bias?", "running_mean?", "running_var?"))):
    multi_op(f"torch.{_name}", _operands, lambda t, at: _batch_norm_infer(t, at, at["training"]),
             lambda x, at: _batch_norm_all(x, at, at["training"]),
             attrs={"training": Attr("bool"), **_BN_ATTRS}, results=3)


def _group_norm_all(x, w, b, groups, eps):
    n = x.shape[0]
    g = x.astype(np.float64).reshape(n, groups, -1)
    mean = g.mean(axis=2, keepdims=True)
    var = g.var(axis=2, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    s = _channel_shape(x)
    if w is not None:
        y = y * w.reshape(s)
    if b is not None:
        y = y + b.reshape(s)
    return [y.astype(x.dtype), mean.reshape(n, groups).astype(x.dtype),
            (1.0 / np.sqrt(var + eps)).reshape(n, groups).astype(x.dtype)]


def _group_norm_check(x, groups):
    if x.rank < 2 or groups <= 0 or x.shape[1] % groups:
        raise ValueError(f"group norm: {x.shape[1] if x.rank > 1 else x} channels do not split into {groups} groups")


def _group_norm_infer(types, at):
    _group_norm_check(types[0], at["num_groups"])
    return types[0]


op("torch.group_norm", ("input", "weight?", "bias?"), _group_norm_infer,
   lambda x, at: _group_norm_all(*padded(x, 3), at["num_groups"], at["eps"])[0],
   attrs={"num_groups": Attr("int"), "eps": Attr("float", 1e-5), "cudnn_enabled": Attr("bool", True)})


def _native_group_norm_infer(types, at):
    x = types[0]
    _group_norm_check(x, at["group"])
    stat = x.with_shape((x.shape[0], at["group"]))
    return [x, stat, stat]


multi_op("torch.native_group_norm", ("input", "weight?", "bias?"), _native_group_norm_infer,
         lambda x, at: _group_norm_all(*padded(x, 3), at["group"], at["eps"]),
         attrs={"N": Attr("int"), "C": Attr("int"), "HxW": Attr("int"), "group": Attr("int"), "eps": Attr("float")},
         results=3)


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
    if _CATEGORY[idx.dtype] != 1 or idx.rank > 1:
        raise ValueError(f"index_select: index {idx} must be a 0-d or 1-d integer tensor")
    if x.rank == 0:
        return x
    return x.with_shape(x.shape[:d] + (idx.shape[0] if idx.rank else 1,) + x.shape[d + 1:])


op("torch.index_select", ("self", "index"), _index_select_infer,
   lambda x, at: np.array(x[0]) if x[0].ndim == 0 else np.take(x[0], np.atleast_1d(x[1]), axis=at["dim"]),
   attrs={"dim": Attr("int")})


def _gather_infer(types, attrs):
    x, idx = types
    _norm_dim(attrs["dim"], x.rank)
    return x.with_shape(idx.shape)


def gather_ref(x, dim, index):
    """torch.gather: out[i][j][k] = x[i][index[i][j][k]][k] (dim 1); index may be smaller than x."""
    if x.ndim == 0:
        return np.array(x)
    return x[_scatter_coords(index, _norm_dim(dim, x.ndim))]


op("torch.gather", ("self", "index"), _gather_infer,
   lambda x, at: gather_ref(x[0], at["dim"], x[1]),
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

# ---- data movement: flip, roll, repeat, pad, sort, scatter, index_put -----------------------
def _dims_attr(dims, rank) -> tuple[int, ...]:
    return tuple(_norm_dim(d, rank) for d in dims)


op("torch.flip", ("self",), lambda t, at: (_dims_attr(at["dims"], t[0].rank), t[0])[1],
   lambda x, at: np.flip(x[0], axis=_dims_attr(at["dims"], x[0].ndim)) if x[0].ndim else x[0],
   attrs={"dims": Attr("ints")})


def _roll_ref(x, at):
    a, dims = x[0], at["dims"]
    if not dims:
        return np.roll(a.reshape(-1), at["shifts"][0]).reshape(a.shape)
    return np.roll(a, tuple(at["shifts"]), axis=_dims_attr(dims, a.ndim))


def _roll_infer(types, at):
    if at["dims"] and len(at["dims"]) != len(at["shifts"]) or not at["dims"] and len(at["shifts"]) != 1:
        raise ValueError(f"roll: shifts {at['shifts']} and dims {at['dims']} disagree")
    _dims_attr(at["dims"], types[0].rank)
    return types[0]


op("torch.roll", ("self",), _roll_infer, _roll_ref, attrs={"shifts": Attr("ints"), "dims": Attr("ints", [])})


def _repeat_infer(types, at):
    x, reps = types[0], list(at["repeats"])
    if len(reps) < x.rank:
        raise ValueError(f"repeat: {reps} has fewer dims than {x}")
    shape = (1,) * (len(reps) - x.rank) + x.shape
    return x.with_shape(tuple(s * r for s, r in zip(shape, reps)))


op("torch.repeat", ("self",), _repeat_infer, lambda x, at: np.tile(x[0], tuple(at["repeats"])),
   attrs={"repeats": Attr("ints")})


def pad_widths(rank: int, pad) -> list[tuple[int, int]]:
    """ATen's pad list ([last-dim left, right, second-to-last left, right, ...]) as numpy pad widths."""
    pad = list(pad)
    if len(pad) % 2 or len(pad) // 2 > rank:
        raise ValueError(f"pad {pad} does not fit a tensor of rank {rank}")
    k = len(pad) // 2
    return [(0, 0)] * (rank - k) + [(pad[2 * (k - 1 - i)], pad[2 * (k - 1 - i) + 1]) for i in range(k)]


_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_ref(x: np.ndarray, pad, mode: str = "constant", value=0) -> np.ndarray:
    """torch's pad: negative widths crop."""
    widths = pad_widths(x.ndim, pad)
    grow = [(max(a, 0), max(b, 0)) for a, b in widths]
    if mode == "constant":
        y = np.pad(x, grow, constant_values=np.asarray(0 if value is None else value).astype(x.dtype))
    else:
        y = np.pad(x, grow, mode=_NP_PAD_MODE[mode])
    crop = tuple(slice(-min(a, 0), y.shape[i] + min(b, 0)) for i, (a, b) in enumerate(widths))
    return y[crop]


def _pad_infer_for(mode_of):
    def infer(types, at):
        x, mode = types[0], mode_of(at)
        if mode not in ("constant",) + tuple(_NP_PAD_MODE):
            raise ValueError(f"pad mode {mode!r} is not constant, reflect, replicate or circular")
        shape = []
        for s, (a, b) in zip(x.shape, pad_widths(x.rank, at["pad"])):
            if mode == "reflect" and (a >= s or b >= s) and (a or b):
                raise ValueError(f"reflection pad ({a}, {b}) must be smaller than the dim ({s})")
            if s + a + b < 0:
                raise ValueError(f"pad {at['pad']} gives a negative size for {x}")
            shape.append(s + a + b)
        return x.with_shape(tuple(shape))
    return infer


op("torch.constant_pad_nd", ("self",), _pad_infer_for(lambda at: "constant"),
   lambda x, at: pad_ref(x[0], at["pad"], "constant", at["value"]),
   attrs={"pad": Attr("ints"), "value": Attr("scalar", 0)})
op("torch.pad", ("self",), _pad_infer_for(lambda at: at["mode"]),
   lambda x, at: pad_ref(x[0], at["pad"], at["mode"], at["value"]),
   attrs={"pad": Attr("ints"), "mode": Attr("str", "constant"), "value": Attr("float", None, optional=True)})
for _nd in (1, 2, 3):
    for _kind, _mode in (("reflection", "reflect"), ("replication", "replicate")):
        op(f"torch.{_kind}_pad{_nd}d", ("self",),
           (lambda m: lambda t, at: _pad_infer_for(lambda a: m)(t, {"pad": at["padding"]}))(_mode),
           (lambda m: lambda x, at: pad_ref(x[0], at["padding"], m))(_mode), attrs={"padding": Attr("ints")})


def sort_order(x: np.ndarray, axis: int, descending: bool) -> np.ndarray:
    """Indices that sort x along axis like torch (stable; NaN is the largest value)."""
    if not descending:
        return np.argsort(x, axis=axis, kind="stable")
    if x.dtype.kind == "f":
        nan = np.isnan(x)
        first = np.argsort(np.where(nan, -np.inf, -x), axis=axis, kind="stable")
        return np.take_along_axis(first, np.argsort(~np.take_along_axis(nan, first, axis), axis=axis,
                                                    kind="stable"), axis)
    return np.argsort(~x if x.dtype.kind in "bi" else -x, axis=axis, kind="stable")


def _sort_all(args, at):
    x = args[0]
    if x.ndim == 0:
        return [x, np.zeros((), np.int64)]
    axis = _norm_dim(at["dim"], x.ndim)
    idx = sort_order(x, axis, at["descending"])
    return [np.take_along_axis(x, idx, axis), idx.astype(np.int64)]


def _sort_infer(types, at):
    _norm_dim(at["dim"], types[0].rank)
    return [types[0], types[0].with_dtype("i64")]


multi_op("torch.sort", ("self",), _sort_infer, _sort_all, attrs={"dim": Attr("int", -1),
                                                                  "descending": Attr("bool", False)})
multi_op("torch.sort.stable", ("self",), _sort_infer, _sort_all,
         attrs={"stable": Attr("bool", None, optional=True), "dim": Attr("int", -1),
                "descending": Attr("bool", False)})


def _topk_infer(types, at):
    x = types[0]
    d = _norm_dim(at["dim"], x.rank)
    n = x.shape[d] if x.rank else 1
    if not 0 <= at["k"] <= n:
        raise ValueError(f"topk: k={at['k']} out of range for {n} elements")
    out = x.with_shape(x.shape[:d] + (at["k"],) + x.shape[d + 1:]) if x.rank else x
    return [out, out.with_dtype("i64")]


def _topk_all(args, at):
    x = args[0]
    if x.ndim == 0:
        return [x, np.zeros((), np.int64)]
    axis = _norm_dim(at["dim"], x.ndim)
    idx = np.take(sort_order(x, axis, at["largest"]), np.arange(at["k"]), axis=axis)
    return [np.take_along_axis(x, idx, axis), idx.astype(np.int64)]


multi_op("torch.topk", ("self",), _topk_infer, _topk_all,
         attrs={"k": Attr("int"), "dim": Attr("int", -1), "largest": Attr("bool", True), "sorted": Attr("bool", True)})


def _scatter_coords(index: np.ndarray, dim: int):
    coords = list(np.indices(index.shape, sparse=True))
    coords[dim] = index
    return tuple(coords)


_REDUCE_UFUNC = {"sum": np.add, "add": np.add, "prod": np.multiply, "multiply": np.multiply,
                 "amax": np.maximum, "amin": np.minimum, "mean": np.add}


def scatter_ref(x, dim, index, src, reduce=None, include_self=True):
    """torch.scatter / scatter_add / scatter_reduce: out[... index[i] ...] (op)= src[i] along dim."""
    out = np.array(x, copy=True)
    if index.size == 0:
        return out
    dim = _norm_dim(dim, x.ndim)
    c = _scatter_coords(index, dim) if x.ndim else ()
    vals = np.broadcast_to(src, index.shape) if np.ndim(src) == 0 else src[tuple(slice(0, s) for s in index.shape)]
    vals = np.asarray(vals).astype(x.dtype)
    if reduce is None:
        out[c] = vals
        return out
    if not include_self:
        ident = {"sum": 0, "add": 0, "mean": 0, "prod": 1, "multiply": 1,
                 "amax": -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min if x.dtype.kind in "iu" else False,
                 "amin": np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).max if x.dtype.kind in "iu" else True}
        out[c] = ident[reduce]
    _REDUCE_UFUNC[reduce].at(out, c, vals)
    if reduce == "mean":
        count = np.full(x.shape, 1 if include_self else 0, np.int64)
        np.add.at(count, c, 1)
        count = np.maximum(count, 1)
        out = out / count if x.dtype.kind == "f" else np.floor_divide(out, count)
    return out.astype(x.dtype)


def _scatter_infer(types, at):
    x, index = types[0], types[1]
    _norm_dim(at["dim"], x.rank)
    if _CATEGORY[index.dtype] != 1 or index.rank != x.rank and index.numel:
        raise ValueError(f"scatter: index {index} must be an integer tensor of the rank of {x}")
    return x


def _scatter_reduce_verify(op_, types):
    r = op_.attrs.get("reduce")
    ok = ("sum", "prod", "mean", "amax", "amin") if op_.name.endswith(".two") else ("add", "multiply")
    return None if r in ok else f"reduce {r!r} is not one of {', '.join(ok)}"


_DIM = {"dim": Attr("int")}
op("torch.scatter.src", ("self", "index", "src"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], x[2]), attrs=_DIM)
op("torch.scatter.value", ("self", "index"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], np.asarray(at["value"])), attrs={**_DIM, "value": Attr("scalar")})
op("torch.scatter.reduce", ("self", "index", "src"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], x[2], at["reduce"]), attrs={**_DIM, "reduce": Attr("str")},
   verify=_scatter_reduce_verify)
op("torch.scatter.value_reduce", ("self", "index"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], np.asarray(at["value"]), at["reduce"]),
   attrs={**_DIM, "value": Attr("scalar"), "reduce": Attr("str")}, verify=_scatter_reduce_verify)
op("torch.scatter_add", ("self", "index", "src"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], x[2], "sum"), attrs=_DIM)
op("torch.scatter_reduce.two", ("self", "index", "src"), _scatter_infer,
   lambda x, at: scatter_ref(x[0], at["dim"], x[1], x[2], at["reduce"], at["include_self"]),
   attrs={**_DIM, "reduce": Attr("str"), "include_self": Attr("bool", True)}, verify=_scatter_reduce_verify)


def _index_tuple(indices):
    return tuple(slice(None) if i is None else i for i in indices)


def _index_put_infer(types, at):
    x, values = types[0], types[1]
    idx = list(types[2:])
    if len(idx) > x.rank:
        raise ValueError(f"index_put: too many indices ({len(idx)}) for {x}")
    if not any(i is not None and i.dtype == "bool" for i in idx):
        target = _index_infer([x] + idx, at)
        if broadcast_shapes(values.shape, target.shape) != target.shape:
            raise ValueError(f"index_put: values {values} do not broadcast to the indexed shape {target.shape}")
    return x


def _index_put_ref(args, at):
    x, values = args[0], args[1]
    out = np.array(x, copy=True)
    idx = _index_tuple(args[2:])
    v = np.asarray(values).astype(x.dtype)
    if at["accumulate"]:
        np.add.at(out, idx, v)
    else:
        out[idx] = v
    return out


# operands: the variadic `indices` moved last (rt's operand lists allow a variadic tail only)
op("torch.index_put", ("self", "values", "indices*"), _index_put_infer, _index_put_ref,
   attrs={"accumulate": Attr("bool", False)})


def _slice_scatter_ref(args, at):
    x, src = args
    out = np.array(x, copy=True)
    d = _norm_dim(at["dim"], x.ndim)
    s, n, st = slice_bounds(x.shape[d], at["start"], at["end"], at["step"])
    idx = [slice(None)] * x.ndim
    idx[d] = slice(s, s + n * st, st)
    out[tuple(idx)] = src
    return out


def _slice_scatter_infer(types, at):
    want = _slice_infer(types[:1], at)
    if types[1].shape != want.shape:
        raise ValueError(f"slice_scatter: src {types[1]} is not the slice's shape {want.shape}")
    return types[0]


op("torch.slice_scatter", ("self", "src"), _slice_scatter_infer, _slice_scatter_ref,
   attrs={"dim": Attr("int", 0), "start": Attr("int", None, optional=True), "end": Attr("int", None, optional=True),
          "step": Attr("int", 1)})


def _select_scatter_ref(args, at):
    x, src = args
    out = np.array(x, copy=True)
    d = _norm_dim(at["dim"], x.ndim)
    idx = [slice(None)] * x.ndim
    idx[d] = at["index"] % x.shape[d]
    out[tuple(idx)] = src
    return out


def _select_scatter_infer(types, at):
    want = _select_infer(types[:1], at)
    if types[1].shape != want.shape:
        raise ValueError(f"select_scatter: src {types[1]} is not the selection's shape {want.shape}")
    return types[0]


op("torch.select_scatter", ("self", "src"), _select_scatter_infer, _select_scatter_ref,
   attrs={"dim": Attr("int"), "index": Attr("int")})


def _masked_scatter_ref(args, at):
    x, mask, source = args
    shape = broadcast_shapes(x.shape, mask.shape)
    out = np.array(np.broadcast_to(x, shape), copy=True)
    m = np.broadcast_to(mask, shape)
    out[m] = source.reshape(-1)[:int(m.sum())].astype(x.dtype)
    return out


op("torch.masked_scatter", ("self", "mask", "source"),
   lambda t, at: t[0].with_shape(broadcast_shapes(t[0].shape, t[1].shape)), _masked_scatter_ref)


def _view_scatter_op(name, view_name, attrs):
    """torch.<name>(self, src): a copy of self whose view `view_name` (a VIEW op, read through its
    registry view fact) is replaced by src (diagonal_scatter, as_strided_scatter)."""
    def view_type(x, at):
        vd = REGISTRY[view_name]
        return vd.infer([x], vd.with_defaults(at))

    def infer(types, at):
        want = view_type(types[0], at)
        if types[1].shape != want.shape:
            raise ValueError(f"{name}: src {types[1]} is not the view's shape {want.shape}")
        return types[0]

    def ref(args, at):
        x, src = args
        out = np.array(x, copy=True, order="C")
        if src.size:
            xt = TensorType.of(x)
            off, strides = REGISTRY[view_name].extra["view"](at, xt, contiguous_strides(x.shape), view_type(xt, at))
            flat = out.reshape(-1)
            np.lib.stride_tricks.as_strided(flat[off:], shape=src.shape, strides=[st * flat.itemsize for st in strides],
                                            writeable=True)[...] = src
        return out
    op(f"torch.{name}", ("self", "src"), infer, ref, attrs=attrs)


_view_scatter_op("diagonal_scatter", "torch.diagonal",
                 {"offset": Attr("int", 0), "dim1": Attr("int", 0), "dim2": Attr("int", 1)})
_view_scatter_op("as_strided_scatter", "torch.as_strided",
                 {"size": Attr("ints"), "stride": Attr("ints"), "storage_offset": Attr("int", None, optional=True)})


# ---- embedding bags -------------------------------------------------------------------------
def _embedding_bag_infer(types, at):
    w, idx, offsets = types[0], types[1], types[2]
    if w.rank != 2 or idx.rank != 1 or offsets.rank != 1:
        raise ValueError(f"_embedding_bag needs a 2-D weight and 1-D indices and offsets, got {w} {idx} {offsets}")
    bags = offsets.shape[0] - (1 if at["include_last_offset"] else 0)
    out = w.with_shape((bags, w.shape[1]))
    i64 = idx.with_dtype("i64")
    return [out, i64, i64.with_shape((bags,)), i64.with_shape((bags, w.shape[1]) if at["mode"] == 2 else (bags,))]


def _embedding_bag_ref(args, at):
    """(bags, offset2bag, bag_size, max_indices). The last three are the bookkeeping torch keeps for
    the backward pass: given here by their meaning (each index's bag, each bag's size, each max's row),
    which need not be torch's exact layout for them."""
    w, idx, offsets, psw = padded(args, 4)
    bags = len(offsets) - (1 if at["include_last_offset"] else 0)
    ends = list(offsets[1:]) + ([] if at["include_last_offset"] else [len(idx)])
    out = np.zeros((bags, w.shape[1]), np.float64)
    offset2bag = np.zeros(len(idx), np.int64)
    size = np.zeros(bags, np.int64)
    argmax = np.zeros((bags, w.shape[1]) if at["mode"] == 2 else (bags,), np.int64)
    for b in range(bags):
        sel = np.arange(int(offsets[b]), int(ends[b]))
        offset2bag[sel] = b
        sel = sel[idx[sel] != at["padding_idx"]] if at["padding_idx"] >= 0 else sel
        size[b] = len(sel)
        if not len(sel):
            continue
        rows = w[idx[sel]].astype(np.float64)
        if psw is not None:
            rows = rows * psw[sel, None]
        out[b] = rows.sum(0) if at["mode"] == 0 else rows.mean(0) if at["mode"] == 1 else rows.max(0)
        if at["mode"] == 2:
            argmax[b] = idx[sel][np.argmax(rows, axis=0)]
    return [out.astype(w.dtype), offset2bag, size, argmax]


multi_op("torch._embedding_bag", ("weight", "indices", "offsets", "per_sample_weights?"), _embedding_bag_infer,
         _embedding_bag_ref, attrs={"scale_grad_by_freq": Attr("bool", False), "mode": Attr("int", 0),
                                    "sparse": Attr("bool", False), "include_last_offset": Attr("bool", False),
                                    "padding_idx": Attr("int", -1)}, results=4)


# ---- convolution ----------------------------------------------------------------------------
def _expand_list(v, n: int) -> list[int]:
    v = [v] if isinstance(v, int) else list(v)
    return v * n if len(v) == 1 else v


def windows(xp: np.ndarray, kernel, stride, dilation) -> np.ndarray:
    """[..., *spatial] -> [..., *out, *kernel]: the (strided, dilated) windows over the trailing dims, a view."""
    nd = len(kernel)
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    w = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(xp.ndim - nd, xp.ndim)))
    lead = [slice(None)] * (xp.ndim - nd)
    return w[tuple(lead + [slice(None, None, s) for s in stride] + [slice(None, None, d) for d in dilation])]


_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _conv_direct(x, w, stride, pads, dilation, groups):
    """Cross-correlation of x [N, C, *S] (padded by `pads` = [(lo, hi)] per spatial dim) with w [O, C/g, *K]."""
    nd = w.ndim - 2
    xp = pad_ref(x, [p for lo, hi in reversed(pads) for p in (lo, hi)])
    win = windows(xp, w.shape[2:], stride, dilation)               # [N, C, *O, *K]
    n, c = x.shape[:2]
    out_sp = win.shape[2:2 + nd]
    win = win.reshape((n, groups, c // groups) + out_sp + w.shape[2:])
    wg = w.reshape((groups, w.shape[0] // groups, c // groups) + w.shape[2:])
    o_l, k_l = _LETTERS[:nd], _LETTERS[nd:2 * nd]
    y = np.einsum(f"NGC{o_l}{k_l},GPC{k_l}->NGP{o_l}", win, wg, optimize=True)
    return y.reshape((n, w.shape[0]) + out_sp)


def conv_ref(x, w, b, stride, padding, dilation, transposed, output_padding, groups) -> np.ndarray:
    """aten.convolution in float64: direct or transposed, any number of spatial dims, grouped."""
    nd = w.ndim - 2
    unbatched = x.ndim == nd + 1
    x64 = (x[None] if unbatched else x).astype(np.float64)
    w64 = w.astype(np.float64)
    stride, padding, dilation = (_expand_list(v, nd) for v in (stride, padding, dilation))
    if transposed:
        output_padding = _expand_list(output_padding, nd)
        n, c = x64.shape[:2]
        up = np.zeros((n, c) + tuple((s - 1) * st + 1 for s, st in zip(x64.shape[2:], stride)))
        up[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in stride)] = x64
        k = w.shape[2:]
        pads = [(d * (kk - 1) - p, d * (kk - 1) - p + op_) for kk, d, p, op_ in zip(k, dilation, padding, output_padding)]
        g = groups
        wt = w64.reshape((g, c // g, w.shape[1]) + k).swapaxes(1, 2).reshape((g * w.shape[1], c // g) + k)
        wt = np.flip(wt, axis=tuple(range(2, 2 + nd)))
        y = _conv_direct(up, wt, [1] * nd, pads, dilation, groups)
    else:
        y = _conv_direct(x64, w64, stride, [(p, p) for p in padding], dilation, groups)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return (y[0] if unbatched else y).astype(x.dtype)


def _conv_infer(types, at):
    x, w, b = padded(types, 3)
    nd = w.rank - 2
    if nd < 1 or x.rank not in (nd + 1, nd + 2):
        raise ValueError(f"convolution: input {x} does not match weight {w}")
    g = at["groups"]
    stride, padding, dilation = (_expand_list(at[k], nd) for k in ("stride", "padding", "dilation"))
    sp = x.shape[-nd:]
    c = x.shape[-nd - 1]
    if at["transposed"]:
        if c != w.shape[0] or c % g:
            raise ValueError(f"transposed convolution: {c} input channels, weight {w}, groups {g}")
        out_c = w.shape[1] * g
        op_ = _expand_list(at["output_padding"], nd)
        out = [(s - 1) * st - 2 * p + d * (k - 1) + o + 1
               for s, st, p, d, k, o in zip(sp, stride, padding, dilation, w.shape[2:], op_)]
    else:
        if c != w.shape[1] * g or w.shape[0] % g:
            raise ValueError(f"convolution: {c} input channels do not match weight {w} with groups {g}")
        out_c = w.shape[0]
        out = [(s + 2 * p - d * (k - 1) - 1) // st + 1 for s, st, p, d, k in zip(sp, stride, padding, dilation, w.shape[2:])]
    if any(o <= 0 for o in out):
        raise ValueError(f"convolution: output size {out} is empty for input {x}")
    if b is not None and b.shape != (out_c,):
        raise ValueError(f"convolution: bias {b} does not match {out_c} output channels")
    return x.with_shape(x.shape[:-nd - 1] + (out_c,) + tuple(out))


op("torch.convolution", ("input", "weight", "bias?"), _conv_infer,
   lambda x, at: conv_ref(*padded(x, 3), at["stride"], at["padding"], at["dilation"], at["transposed"],
                          at["output_padding"], at["groups"]),
   attrs={"stride": Attr("ints", [1]), "padding": Attr("ints", [0]), "dilation": Attr("ints", [1]),
          "transposed": Attr("bool", False), "output_padding": Attr("ints", [0]), "groups": Attr("int", 1)})


# ---- pooling --------------------------------------------------------------------------------
def pool_out_size(size, k, s, p, d, ceil_mode) -> int:
    """ATen's pooling_output_shape."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_params(at, nd):
    k = _expand_list(at["kernel_size"], nd)
    s = _expand_list(at["stride"], nd) if at.get("stride") else k
    p = _expand_list(at["padding"], nd)
    d = _expand_list(at.get("dilation", 1), nd)
    return k, s, p, d


def _pool_infer_for(nd, results=1):
    def infer(types, at):
        x = types[0]
        if x.rank not in (nd + 1, nd + 2):
            raise ValueError(f"{nd}-d pooling needs an input of rank {nd + 1} or {nd + 2}, got {x}")
        k, s, p, d = _pool_params(at, nd)
        if any(pp > kk // 2 for pp, kk in zip(p, k)):
            raise ValueError(f"pooling: padding {p} must be at most half the kernel {k}")
        out = tuple(pool_out_size(sz, kk, ss, pp, dd, at["ceil_mode"])
                    for sz, kk, ss, pp, dd in zip(x.shape[-nd:], k, s, p, d))
        if any(o <= 0 for o in out):
            raise ValueError(f"pooling: output size {list(out)} is empty for {x}")
        t = x.with_shape(x.shape[:-nd] + out)
        return [t, t.with_dtype("i64")] if results == 2 else t
    return infer


def _pool_windows(x, at, nd, fill):
    """The pooling windows [..., *out, *kernel] of x, padding (and ceil-mode overhang) filled with `fill`."""
    k, s, p, d = _pool_params(at, nd)
    sp = x.shape[-nd:]
    out = [pool_out_size(sz, kk, ss, pp, dd, at["ceil_mode"]) for sz, kk, ss, pp, dd in zip(sp, k, s, p, d)]
    hi = [(o - 1) * ss + dd * (kk - 1) + 1 - sz - pp for o, ss, dd, kk, sz, pp in zip(out, s, d, k, sp, p)]
    widths = [(0, 0)] * (x.ndim - nd) + [(pp, max(h, 0)) for pp, h in zip(p, hi)]
    xp = np.pad(x, widths, constant_values=fill)
    win = windows(xp, k, s, d)
    lead = [slice(None)] * (x.ndim - nd)
    return win[tuple(lead + [slice(0, o) for o in out])], (k, s, p, d, out)


def _max_pool_all(args, at, nd):
    x = args[0]
    fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    win, (k, s, p, d, out) = _pool_windows(x, at, nd, fill)
    flat = win.reshape(win.shape[:x.ndim] + (-1,))
    vals = flat.max(axis=-1)
    arg = np.argmax(flat, axis=-1)
    koff = np.unravel_index(arg, k)
    coords = []
    for i in range(nd):
        o = np.arange(out[i]).reshape([-1 if j == i else 1 for j in range(nd)])
        coords.append(o * s[i] - p[i] + koff[i] * d[i])
    idx = np.ravel_multi_index(tuple(np.broadcast_to(c, vals.shape) for c in coords), x.shape[-nd:], mode="clip")
    return [vals.astype(x.dtype), idx.astype(np.int64)]


def _avg_pool_ref(args, at, nd):
    x = args[0]
    win, (k, s, p, d, out) = _pool_windows(x.astype(np.float64), at, nd, 0.0)
    total = win.sum(axis=tuple(range(-nd, 0)))
    if at.get("divisor_override"):
        return (total / at["divisor_override"]).astype(x.dtype)
    sp = x.shape[-nd:]
    div = np.ones((), np.float64)
    for i in range(nd):
        start = np.arange(out[i]) * s[i] - p[i]
        if at["count_include_pad"]:
            cnt = np.minimum(start + k[i], sp[i] + p[i]) - start
        else:
            cnt = np.minimum(start + k[i], sp[i]) - np.maximum(start, 0)
        div = div[..., None] * cnt if i else cnt.astype(np.float64)
    return (total / div).astype(x.dtype)


_POOL = {"kernel_size": Attr("ints"), "stride": Attr("ints", []), "padding": Attr("ints", [0])}
_MAX_POOL = {**_POOL, "dilation": Attr("ints", [1]), "ceil_mode": Attr("bool", False)}
_AVG_POOL = {**_POOL, "ceil_mode": Attr("bool", False), "count_include_pad": Attr("bool", True)}
for _nd in (1, 2, 3):
    op(f"torch.max_pool{_nd}d", ("self",), _pool_infer_for(_nd),
       (lambda n: lambda x, at: _max_pool_all(x, at, n)[0])(_nd), attrs=_MAX_POOL)
    multi_op(f"torch.max_pool{_nd}d_with_indices", ("self",), _pool_infer_for(_nd, 2),
             (lambda n: lambda x, at: _max_pool_all(x, at, n))(_nd), attrs=_MAX_POOL)
    op(f"torch.avg_pool{_nd}d", ("self",), _pool_infer_for(_nd),
       (lambda n: lambda x, at: _avg_pool_ref(x, at, n))(_nd),
       attrs={**_AVG_POOL, **({"divisor_override": Attr("int", None, optional=True)} if _nd > 1 else {})})


def adaptive_bounds(size: int, out: int):
    """ATen's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive_infer_for(nd, results=1):
    def infer(types, at):
        x = types[0]
        size = _expand_list(at["output_size"], nd)
        if x.rank not in (nd + 1, nd + 2) or any(s <= 0 for s in size):
            raise ValueError(f"adaptive {nd}-d pooling: input {x}, output size {size}")
        t = x.with_shape(x.shape[:-nd] + tuple(size))
        return [t, t.with_dtype("i64")] if results == 2 else t
    return infer


def _adaptive_avg_ref(args, at, nd):
    y = args[0].astype(np.float64)
    size = _expand_list(at["output_size"], nd)
    for i, o in enumerate(size):
        ax = y.ndim - nd + i
        y = np.stack([np.take(y, range(a, b), axis=ax).mean(axis=ax)
                      for a, b in adaptive_bounds(y.shape[ax], o)], axis=ax)
    return y.astype(args[0].dtype)


def _adaptive_max_all(args, at, nd):
    x = args[0]
    size = _expand_list(at["output_size"], nd)
    sp = x.shape[-nd:]
    bounds = [adaptive_bounds(s, o) for s, o in zip(sp, size)]
    vals = np.zeros(x.shape[:-nd] + tuple(size), x.dtype)
    idx = np.zeros(vals.shape, np.int64)
    for pos in np.ndindex(*size):
        box = tuple(slice(*bounds[i][pos[i]]) for i in range(nd))
        block = x[(Ellipsis,) + box]
        flat = block.reshape(block.shape[:-nd] + (-1,))
        arg = np.argmax(flat, axis=-1)
        vals[(Ellipsis,) + pos] = flat.max(axis=-1)
        local = np.unravel_index(arg, block.shape[-nd:])
        idx[(Ellipsis,) + pos] = np.ravel_multi_index(
            tuple(local[i] + bounds[i][pos[i]][0] for i in range(nd)), sp)
    return [vals, idx]


for _nd in (1, 2, 3):
    _ref = (lambda n: lambda x, at: _adaptive_avg_ref(x, at, n))(_nd)
    for _name in ((f"adaptive_avg_pool{_nd}d",) if _nd == 1 else (f"_adaptive_avg_pool{_nd}d", f"adaptive_avg_pool{_nd}d")):
        op(f"torch.{_name}", ("self",), _adaptive_infer_for(_nd), _ref, attrs={"output_size": Attr("ints")})
    multi_op(f"torch.adaptive_max_pool{_nd}d", ("self",), _adaptive_infer_for(_nd, 2),
             (lambda n: lambda x, at: _adaptive_max_all(x, at, n))(_nd), attrs={"output_size": Attr("ints")})


# ---- resampling: upsample, grid_sample, col2im ----------------------------------------------
def _upsample_sizes(x_shape, nd, at):
    if at["output_size"] is not None:
        return _expand_list(at["output_size"], nd), [None] * nd
    scales = _expand_list(at["scale_factors"], nd)
    return [int(math.floor(s * f)) for s, f in zip(x_shape[-nd:], scales)], scales


def _source_scale(in_len, out_len, scale, align_corners) -> float:
    if align_corners:
        return (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
    return 1.0 / scale if scale is not None and scale > 0 else in_len / out_len


def _resample_dim(y, axis, out_len, scale, mode, align_corners):
    """Resample one dim of y to out_len (torch's upsample index and weight rules)."""
    n = y.shape[axis]
    dst = np.arange(out_len)
    if mode in ("nearest", "nearest-exact"):
        sc = np.float32(1.0 / scale if scale is not None and scale > 0 else n / out_len)
        off = np.float32(0.5) if mode == "nearest-exact" else np.float32(0)
        src = np.minimum(np.floor((dst.astype(np.float32) + off) * sc).astype(np.int64), n - 1)
        return np.take(y, src, axis=axis)
    sc = _source_scale(n, out_len, scale, align_corners)
    src = dst * sc if align_corners else sc * (dst + 0.5) - 0.5
    shape = [1] * y.ndim
    shape[axis] = out_len
    if mode == "linear":
        src = np.maximum(src, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
        i1 = np.minimum(i0 + 1, n - 1)
        lam = np.clip(src - i0, 0.0, 1.0).reshape(shape)
        return np.take(y, i0, axis=axis) * (1 - lam) + np.take(y, i1, axis=axis) * lam
    a = -0.75                                                       # cubic convolution, torch's A
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    ws = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a, ((a + 2) * t - (a + 3)) * t * t + 1,
          ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
          ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
    return sum(np.take(y, np.clip(i0 - 1 + j, 0, n - 1), axis=axis) * ws[j].reshape(shape) for j in range(4))


def _upsample_infer_for(nd):
    def infer(types, at):
        x = types[0]
        if x.rank != nd + 2:
            raise ValueError(f"{nd}-d upsampling needs a rank-{nd + 2} input, got {x}")
        if (at["output_size"] is None) == (at["scale_factors"] is None):
            raise ValueError("upsample takes exactly one of output_size and scale_factors")
        sizes, _ = _upsample_sizes(x.shape, nd, at)
        return x.with_shape(x.shape[:2] + tuple(sizes))
    return infer


def _upsample_ref_for(nd, mode):
    def ref(args, at):
        x = args[0]
        sizes, scales = _upsample_sizes(x.shape, nd, at)
        y = x.astype(np.float64)
        for i in range(nd):
            y = _resample_dim(y, 2 + i, sizes[i], scales[i], mode, at.get("align_corners", False))
        return y.astype(x.dtype)
    return ref


_UPSAMPLE = {"output_size": Attr("ints", None, optional=True), "scale_factors": Attr("floats", None, optional=True)}
for _nd, _lin in ((1, "upsample_linear1d"), (2, "upsample_bilinear2d"), (3, "upsample_trilinear3d")):
    op(f"torch.upsample_nearest{_nd}d.vec", ("input",), _upsample_infer_for(_nd), _upsample_ref_for(_nd, "nearest"),
       attrs=_UPSAMPLE)
    op(f"torch._upsample_nearest_exact{_nd}d.vec", ("input",), _upsample_infer_for(_nd),
       _upsample_ref_for(_nd, "nearest-exact"), attrs=_UPSAMPLE)
    op(f"torch.{_lin}.vec", ("input",), _upsample_infer_for(_nd), _upsample_ref_for(_nd, "linear"),
       attrs={**_UPSAMPLE, "align_corners": Attr("bool")})
op("torch.upsample_bicubic2d.vec", ("input",), _upsample_infer_for(2), _upsample_ref_for(2, "cubic"),
   attrs={**_UPSAMPLE, "align_corners": Attr("bool")})


def _reflect(c, twice_low, twice_high):
    if twice_low == twice_high:
        return np.zeros_like(c)
    mn, span = twice_low / 2, (twice_high - twice_low) / 2
    c = np.abs(c - mn)
    extra, flips = np.fmod(c, span), np.floor(c / span)
    return np.where(flips % 2 == 0, extra + mn, span - extra + mn)


def _grid_unnormalize(c, size, align_corners):
    return ((c + 1) / 2) * (size - 1) if align_corners else ((c + 1) * size - 1) / 2


def _grid_pad(c, size, padding_mode, align_corners):
    """A source coordinate under the padding mode: zeros (0) leaves it, border (1) clips, reflection (2)
    reflects then clips."""
    if padding_mode == 1:
        return np.clip(c, 0, size - 1)
    if padding_mode == 2:
        c = _reflect(c, 0, 2 * (size - 1)) if align_corners else _reflect(c, -1, 2 * size - 1)
        return np.clip(c, 0, size - 1)
    return c


def _cubic_weights(t, a=-0.75):
    return [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a, ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]


def _grid_sampler_2d_ref(args, at):
    """torch's grid_sampler_2d: bilinear (0), nearest (1, round half to even) or bicubic (2) sampling;
    padding zeros (0), border (1) or reflection (2)."""
    x, grid = args
    n, c, h, w = x.shape
    x64 = x.astype(np.float64)
    mode, pad, align = at["interpolation_mode"], at["padding_mode"], at["align_corners"]
    gx = _grid_unnormalize(grid[..., 0].astype(np.float64), w, align)
    gy = _grid_unnormalize(grid[..., 1].astype(np.float64), h, align)
    b = np.arange(n)[:, None, None]

    def tap(iy, ix):                              # [N, Ho, Wo, C], zero outside the input
        inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
        v = x64[b, :, np.clip(iy, 0, h - 1), np.clip(ix, 0, w - 1)]
        return np.where(inside[..., None], v, 0.0)
    if mode == 2:                                 # padding applies to each of the 4x4 taps
        x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        wx, wy = _cubic_weights(gx - x0), _cubic_weights(gy - y0)
        y = 0.0
        for i in range(4):
            for j in range(4):
                ix = _grid_pad((x0 - 1 + j).astype(np.float64), w, pad, align).astype(np.int64)
                iy = _grid_pad((y0 - 1 + i).astype(np.float64), h, pad, align).astype(np.int64)
                y = y + tap(iy, ix) * (wx[j] * wy[i])[..., None]
    else:
        gx, gy = _grid_pad(gx, w, pad, align), _grid_pad(gy, h, pad, align)
        if mode == 1:
            y = tap(np.rint(gy).astype(np.int64), np.rint(gx).astype(np.int64))
        else:
            x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
            tx, ty = (gx - x0)[..., None], (gy - y0)[..., None]
            y = (tap(y0, x0) * (1 - tx) * (1 - ty) + tap(y0, x0 + 1) * tx * (1 - ty)
                 + tap(y0 + 1, x0) * (1 - tx) * ty + tap(y0 + 1, x0 + 1) * tx * ty)
    return np.moveaxis(y, -1, 1).astype(x.dtype)


def _grid_sampler_2d_infer(types, at):
    x, g = types
    if x.rank != 4 or g.rank != 4 or g.shape[-1] != 2 or g.shape[0] != x.shape[0]:
        raise ValueError(f"grid_sampler_2d: input {x} and grid {g} do not fit")
    if at["interpolation_mode"] not in (0, 1, 2) or at["padding_mode"] not in (0, 1, 2):
        raise ValueError(f"grid_sampler_2d: interpolation mode {at['interpolation_mode']} / padding mode "
                         f"{at['padding_mode']} (0, 1 or 2 each)")
    return x.with_shape((x.shape[0], x.shape[1], g.shape[1], g.shape[2]))


op("torch.grid_sampler_2d", ("input", "grid"), _grid_sampler_2d_infer, _grid_sampler_2d_ref,
   attrs={"interpolation_mode": Attr("int"), "padding_mode": Attr("int"), "align_corners": Attr("bool")})


def _col2im_params(at):
    return [_expand_list(at[k], 2) for k in ("output_size", "kernel_size", "dilation", "padding", "stride")]


def _col2im_infer(types, at):
    x = types[0]
    (oh, ow), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = _col2im_params(at)
    lh = (oh + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    lw = (ow + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if x.rank not in (2, 3) or x.shape[-2] % (kh * kw) or x.shape[-1] != lh * lw:
        raise ValueError(f"col2im: input {x} does not hold {lh}x{lw} blocks of {kh}x{kw}")
    return x.with_shape(x.shape[:-2] + (x.shape[-2] // (kh * kw), oh, ow))


def _col2im_ref(args, at):
    x = args[0]
    (oh, ow), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = _col2im_params(at)
    lead = x.shape[:-2]
    c = x.shape[-2] // (kh * kw)
    lh = (oh + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    lw = (ow + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = x.astype(np.float64).reshape(lead + (c, kh, kw, lh, lw))
    out = np.zeros(lead + (c, oh + 2 * ph, ow + 2 * pw))
    for i in range(kh):
        for j in range(kw):
            out[..., i * dh:i * dh + sh * lh:sh, j * dw:j * dw + sw * lw:sw] += cols[..., i, j, :, :]
    return out[..., ph:ph + oh, pw:pw + ow].astype(x.dtype)


op("torch.col2im", ("self",), _col2im_infer, _col2im_ref,
   attrs={k: Attr("ints") for k in ("output_size", "kernel_size", "dilation", "padding", "stride")})


def _pnorm(d, p, axis=-1):
    a = np.abs(d)
    if p == 0:
        return (a != 0).sum(axis=axis).astype(np.float64)
    if math.isinf(p):
        return a.max(axis=axis) if a.shape[axis] else np.zeros(a.shape[:-1])
    return (a ** p).sum(axis=axis) ** (1.0 / p)


def _cdist_infer(types, at):
    a, b = types
    if a.rank < 2 or b.rank < 2 or a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cdist: {a} and {b} do not share their last dim")
    return a.with_shape(broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-2]))


op("torch._cdist_forward", ("x1", "x2"), _cdist_infer,
   lambda x, at: _pnorm(x[0].astype(np.float64)[..., :, None, :] - x[1].astype(np.float64)[..., None, :, :],
                        at["p"]).astype(x[0].dtype),
   attrs={"p": Attr("float"), "compute_mode": Attr("int", None, optional=True)})


def _pdist_infer(types, at):
    x = types[0]
    if x.rank != 2:
        raise ValueError(f"pdist needs a 2-D input, got {x}")
    n = x.shape[0]
    return x.with_shape((n * (n - 1) // 2,))


def _pdist_ref(args, at):
    x = args[0].astype(np.float64)
    i, j = np.triu_indices(x.shape[0], 1)
    return _pnorm(x[i] - x[j], at["p"]).reshape(-1).astype(args[0].dtype)


op("torch._pdist_forward", ("self",), _pdist_infer, _pdist_ref, attrs={"p": Attr("float", 2.0)})


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
    return x.with_shape(x.shape[:s] + (math.prod(x.shape[s:e + 1]),) + x.shape[e + 1:])


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
    dims = attrs.get("dim")
    dims = [dims] if isinstance(dims, int) else dims
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
_squeeze_op("torch.squeeze.dims", {"dim": Attr("ints")})
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
        out.append(as_size(s))
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



def _diagonal_infer(types, at):
    x = types[0]
    d1, d2 = _norm_dim(at["dim1"], x.rank), _norm_dim(at["dim2"], x.rank)
    if d1 == d2:
        raise ValueError("diagonal: dim1 and dim2 must differ")
    off = at["offset"]
    n = max(min(x.shape[d1], x.shape[d2] - off) if off >= 0 else min(x.shape[d1] + off, x.shape[d2]), 0)
    return x.with_shape(tuple(s for i, s in enumerate(x.shape) if i not in (d1, d2)) + (n,))


def _diagonal_view(attrs, in_type, in_strides, out_type):
    d1, d2 = _norm_dim(attrs["dim1"], in_type.rank), _norm_dim(attrs["dim2"], in_type.rank)
    off = attrs["offset"]
    start = off * in_strides[d2] if off >= 0 else -off * in_strides[d1]
    if out_type.shape[-1] == 0:
        start = 0
    rest = tuple(s for i, s in enumerate(in_strides) if i not in (d1, d2))
    return start, rest + (in_strides[d1] + in_strides[d2],)


op("torch.diagonal", ("self",), _diagonal_infer,
   lambda x, at: np.diagonal(x[0], at["offset"], _norm_dim(at["dim1"], x[0].ndim), _norm_dim(at["dim2"], x[0].ndim)),
   attrs={"offset": Attr("int", 0), "dim1": Attr("int", 0), "dim2": Attr("int", 1)}, traits=(VIEW,),
   view=_diagonal_view)


def _as_strided_infer(types, at):
    x = types[0]
    size, stride = list(at["size"]), list(at["stride"])
    off = at["storage_offset"] or 0
    if len(size) != len(stride) or any(s < 0 for s in stride):
        raise ValueError(f"as_strided: size {size} and stride {stride} do not fit")
    last = off + sum((n - 1) * st for n, st in zip(size, stride)) if all(size) else off - 1
    if last >= x.numel:
        raise ValueError(f"as_strided: reads element {last} of a tensor of {x.numel}")
    return x.with_shape(tuple(size))


def _as_strided_ref(args, at):
    base = np.ascontiguousarray(args[0]).reshape(-1)
    off = at["storage_offset"] or 0
    return np.array(np.lib.stride_tricks.as_strided(base[off:], shape=tuple(at["size"]),
                                                    strides=[s * base.itemsize for s in at["stride"]]))


def _as_strided_view(attrs, in_type, in_strides, out_type):
    # strides are in units of the operand's (contiguous) storage; a strided operand has another storage
    if tuple(in_strides) != contiguous_strides(in_type.shape) and in_type.numel > 1:
        return None
    return attrs["storage_offset"] or 0, tuple(attrs["stride"])


op("torch.as_strided", ("self",), _as_strided_infer, _as_strided_ref,
   attrs={"size": Attr("ints"), "stride": Attr("ints"), "storage_offset": Attr("int", None, optional=True)},
   traits=(VIEW,), view=_as_strided_view)


def _unflatten_shape(x, at):
    d = _norm_dim(at["dim"], x.rank)
    sizes = _resolve_shape(at["sizes"], x.shape[d])
    return x.shape[:d] + sizes + x.shape[d + 1:]


op("torch.unflatten.int", ("self",), lambda t, at: t[0].with_shape(_unflatten_shape(t[0], at)),
   lambda x, at: np.reshape(x[0], _unflatten_shape(TensorType.of(x[0]), at)),
   attrs={"dim": Attr("int"), "sizes": Attr("ints")}, traits=(VIEW,), view=_reshape_view)


def _unfold_infer(types, at):
    x = types[0]
    d = _norm_dim(at["dimension"], x.rank)
    n = x.shape[d] if x.rank else 1
    if at["size"] > n or at["step"] < 1:
        raise ValueError(f"unfold: size {at['size']} / step {at['step']} do not fit dim {d} of {x}")
    windows_n = (n - at["size"]) // at["step"] + 1
    if x.rank == 0:
        return x.with_shape((at["size"],))
    return x.with_shape(x.shape[:d] + (windows_n,) + x.shape[d + 1:] + (at["size"],))


def _unfold_view(attrs, in_type, in_strides, out_type):
    if in_type.rank == 0:
        return 0, (1,)
    d = _norm_dim(attrs["dimension"], in_type.rank)
    s = list(in_strides)
    s[d] = in_strides[d] * attrs["step"]
    return 0, tuple(s) + (in_strides[d],)


def _unfold_ref(args, at):
    x = args[0]
    if x.ndim == 0:
        return np.broadcast_to(x, (at["size"],)).copy()
    d = _norm_dim(at["dimension"], x.ndim)
    w = np.lib.stride_tricks.sliding_window_view(x, at["size"], axis=d)
    idx = [slice(None)] * w.ndim
    idx[d] = slice(None, None, at["step"])
    return np.array(w[tuple(idx)])


op("torch.unfold", ("self",), _unfold_infer, _unfold_ref,
   attrs={"dimension": Attr("int"), "size": Attr("int"), "step": Attr("int")}, traits=(VIEW,), view=_unfold_view)


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
    if isinstance(end - start, Sym):     # a dynamic length: exact for unit steps
        n = exact_div(end - start, step) if isinstance(step, int) and step > 0 else None
        if n is None:
            raise ValueError(f"arange({start}, {end}, {step}) has no one length formula for every size")
    else:
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


_fill_op("torch.empty.memory_format", (), lambda at: 0, lambda t, at: tuple(at["size"]), lambda t, at: "f32", _SIZE)
_fill_op("torch.empty_strided", (), lambda at: 0, lambda t, at: tuple(at["size"]), lambda t, at: "f32",
         {**_SIZE, "stride": Attr("ints")})
_fill_op("torch.new_empty", ("self",), lambda at: 0, lambda t, at: tuple(at["size"]), lambda t, at: t[0].dtype, _SIZE)
_fill_op("torch.new_empty_strided", ("self",), lambda at: 0, lambda t, at: tuple(at["size"]),
         lambda t, at: t[0].dtype, {**_SIZE, "stride": Attr("ints")})
_fill_op("torch.empty_like", ("self",), lambda at: 0, lambda t, at: t[0].shape, lambda t, at: t[0].dtype, {})
_fill_op("torch.fill.Scalar", ("self",), lambda at: at["value"], lambda t, at: t[0].shape, lambda t, at: t[0].dtype,
         {"value": Attr("scalar")})


def _fill_tensor_infer(types, at):
    if types[1].rank != 0:
        raise ValueError(f"fill: value must be 0-d, got {types[1]}")
    return types[0]


op("torch.fill.Tensor", ("self", "value"), _fill_tensor_infer,
   lambda x, at: np.full(x[0].shape, x[1], dtype=x[0].dtype), traits=(FOLD_ONLY,))


def _copy_infer(types, at):
    x, src = types
    if broadcast_shapes(x.shape, src.shape) != x.shape:
        raise ValueError(f"copy: {src} does not broadcast to {x}")
    return x


op("torch.copy", ("self", "src"), _copy_infer,
   lambda x, at: np.array(np.broadcast_to(x[1], x[0].shape), dtype=x[0].dtype),
   traits=(ELEMENTWISE,))

__all__ = ["promote_dtypes", "softmax_ref", "sdpa_ref", "layer_norm_ref", "matmul_shape", "slice_bounds",
           "reshape_strides", "contiguous_strides", "dtype_name"]
