"""torch dialect -> fused dialect, one converter per torch op (1 op -> 1..few fused ops).

After this pass the IR holds only fused ops (views, kernels and composites); the fusion passes then
rewrite the fused IR. A torch op with no converter is reported with the model line it came from.
Scalars are 0-d constants (as in the torch dialect); a binary op's operands are cast to one dtype.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..dialects.builder import Builder
from ..dialects.ir import Module, Operation, Value, padded, remap
from ..dialects.registry import REGISTRY, broadcast_shapes, normalize_dim
from ..dialects.symbolic import at_largest
from ..dialects.torch_ops import perm_of
from ..errors import LoweringError
from .passmanager import register_pass
from .rewrite import scalar_of

Converter = Callable[[Builder, Operation, dict, Module], Value]
CONVERTERS: dict[str, Converter] = {}

NEG_BIG = -3.4028234663852886e38     # -FLT_MAX: the additive "masked" value for runtime bool masks


def converts(*names):
    def deco(fn):
        for n in names:
            CONVERTERS[n] = fn
        return fn
    return deco


# ---- helpers used by converters -------------------------------------------------------------
def binary(b: Builder, name: str, x: Value, y: Value, dtype: str) -> Value:
    return b.op(name, [b.cast(x, dtype), b.cast(y, dtype)])


def matmul(b: Builder, x: Value, w: Value, bias: Value | None = None, residual: Value | None = None,
           transpose_b: bool = False, alpha: float = 1.0) -> Value:
    """x [..., K] @ op(w) with a 2-D w: leading dims of x are flattened into M (one GEMM), then restored."""
    lead = x.type.shape[:-1]
    k = x.type.shape[-1]
    if w.type.rank == 2 and x.type.rank != 2:
        n = w.type.shape[0] if transpose_b else w.type.shape[1]
        m = math.prod(lead)
        x2 = b.reshape(x, [m, k])
        r2 = None if residual is None else b.reshape(residual, [m, n])
        y = b.op("fused.matmul", [x2, w, bias, r2], {"transpose_b": transpose_b, "alpha": float(alpha)})
        return b.reshape(y, list(lead) + [n])
    return b.op("fused.matmul", [x, w, bias, residual], {"transpose_b": transpose_b, "alpha": float(alpha)})


# ---- linear algebra -------------------------------------------------------------------------
@converts("torch.linear")
def _linear(b, op, at, m):
    x, w, bias = padded(op.operands, 3)
    return matmul(b, x, w, bias, transpose_b=True)


def _bias_and_residual(b, c: Value, n: int, out_shape, beta):
    """addmm/baddbmm's `self` as (bias [N] | None, residual | None, leftover to add | None)."""
    if beta == 0:
        return None, None, None
    if beta != 1:
        c = b.op("fused.mul", [c, b.scalar(beta)])
    if c.type.numel == n and c.type.shape[-1:] == (n,) and c.type.rank >= 1:
        return b.reshape(c, [n]), None, None
    if c.type.shape == tuple(out_shape):
        return None, c, None
    return None, None, c


@converts("torch.addmm", "torch.baddbmm")
def _addmm(b, op, at, m):
    c, x, w = op.operands
    n = op.result.type.shape[-1]
    bias, res, rest = _bias_and_residual(b, c, n, op.result.type.shape, at["beta"])
    y = b.op("fused.matmul", [x, w, bias, res], {"alpha": float(at["alpha"])})
    return y if rest is None else b.op("fused.add", [y, rest])


@converts("torch.matmul", "torch.mm", "torch.bmm")
def _matmul(b, op, at, m):
    x, w = op.operands
    if x.type.rank == 1 and w.type.rank == 1:
        y = b.op("fused.matmul", [b.reshape(x, [1, x.type.shape[0]]), b.reshape(w, [w.type.shape[0], 1])])
        return b.reshape(y, [])
    if x.type.rank == 1:
        y = b.op("fused.matmul", [b.reshape(x, [1, x.type.shape[0]]), w])
        return b.reshape(y, op.result.type.shape)
    if w.type.rank == 1:
        y = matmul(b, x, b.reshape(w, [w.type.shape[0], 1]))
        return b.reshape(y, op.result.type.shape)
    if w.type.rank == 2:
        return matmul(b, x, w)
    return b.op("fused.matmul", [x, w])


# ---- elementwise ----------------------------------------------------------------------------
def _unary(fused_name):
    def conv(b, op, at, m):
        return b.op(fused_name, [b.cast(op.operands[0], op.result.type.dtype)])
    return conv


for _t, _f in (("tanh", "tanh"), ("sigmoid", "sigmoid"), ("exp", "exp"), ("sqrt", "sqrt"), ("rsqrt", "rsqrt"),
               ("erf", "erf")):
    CONVERTERS[f"torch.{_t}"] = _unary(f"fused.{_f}")


@converts("torch.gelu")
def _gelu(b, op, at, m):
    return b.op("fused.gelu_tanh" if at["approximate"] == "tanh" else "fused.gelu_erf", [op.operands[0]])


@converts("torch.silu")
def _silu(b, op, at, m):
    x = op.operands[0]
    return b.op("fused.mul", [x, b.op("fused.sigmoid", [x])])


@converts("torch.reciprocal")
def _reciprocal(b, op, at, m):
    x = op.operands[0]
    return b.op("fused.div", [b.const(np.array(1, x.type.np_dtype), "scalar"), x])


@converts("torch.pow.Tensor_Scalar")
def _pow(b, op, at, m):
    return b.op("fused.pow", [b.cast(op.operands[0], op.result.type.dtype)], {"exponent": float(at["exponent"])})


@converts("torch.pow.Tensor_Tensor")
def _pow_tt(b, op, at, m):
    x, e = op.operands
    s = scalar_of(m, e)
    dt = op.result.type.dtype
    if s is None:
        if dt != "f32":
            raise LoweringError("pow with an integer tensor exponent is not supported (float32 is)")
        return binary(b, "fused.pow_tensor", x, e, dt)
    return b.op("fused.pow", [b.cast(x, dt)], {"exponent": s})


def _binary(fused_name, has_alpha=False):
    def conv(b, op, at, m):
        x, y = op.operands
        dt = op.result.type.dtype
        if has_alpha and at.get("alpha", 1) != 1:
            y = b.op("fused.mul", [b.cast(y, dt), b.const(np.array(at["alpha"], op.result.type.np_dtype), "scalar")])
        name = {"fused.add": "fused.logical_or", "fused.mul": "fused.logical_and"}.get(fused_name, fused_name) \
            if dt == "bool" else fused_name
        return binary(b, name, x, y, dt)
    return conv


CONVERTERS["torch.add.Tensor"] = _binary("fused.add", True)     # on bools: or / and (torch's)
CONVERTERS["torch.sub.Tensor"] = _binary("fused.sub", True)
CONVERTERS["torch.mul.Tensor"] = _binary("fused.mul")
CONVERTERS["torch.div.Tensor"] = _binary("fused.div")


@converts("torch.rsub.Scalar")
def _rsub(b, op, at, m):
    x = op.operands[0]
    dt = op.result.type.dtype
    npdt = op.result.type.np_dtype
    if at["alpha"] != 1:
        x = b.op("fused.mul", [b.cast(x, dt), b.const(np.array(at["alpha"], npdt), "scalar")])
    return binary(b, "fused.sub", b.const(np.array(at["other"], npdt), "scalar"), x, dt)


def _fill_select(b, x: Value, mask: Value, value: float, m: Module) -> Value:
    """masked_fill(x, mask, value) / where(mask, value, x): a constant mask as an add (and mul) of
    constants, which the attention fusions absorb (exact for finite x); a runtime mask as fused.where
    (exact for any x)."""
    marr = m.const_value(mask)
    dt = x.type.np_dtype
    if marr is None:
        return b.op("fused.where", [b.cast(mask, "bool"), b.const(np.array(value, dt), "scalar"), x])
    if value == -math.inf:
        return b.op("fused.add", [x, b.const(np.where(marr, -np.inf, 0).astype(dt), "mask")])
    keep = b.const((~marr.astype(bool)).astype(dt), "keep")
    fill = b.const(np.where(marr, value, 0).astype(dt), "fill")
    return b.op("fused.add", [b.op("fused.mul", [x, keep]), fill])


@converts("torch.masked_fill.Scalar")
def _masked_fill(b, op, at, m):
    x, mask = op.operands
    return _fill_select(b, x, mask, float(at["value"]), m)


@converts("torch.masked_fill.Tensor")
def _masked_fill_t(b, op, at, m):
    x, mask, value = op.operands
    s = scalar_of(m, value)
    if s is None:
        raise LoweringError("masked_fill with a non-constant fill value is not supported")
    return _fill_select(b, x, mask, s, m)


@converts("torch.where.self")
def _where(b, op, at, m):
    c, x, y = op.operands
    dt, shape = op.result.type.dtype, op.result.type.shape
    sx, sy = scalar_of(m, x), scalar_of(m, y)
    # A constant of one value taken as a scalar may still have widened the result (T5's [1, H, 1, 1]
    # fill under a [B, 1, S, S] mask): the masked_fill forms then expand to the result's shape.
    if sx is not None:           # where(c, s, y) = masked_fill(y, c, s)
        return b.expand(_fill_select(b, b.cast(y, dt), c, sx, m), shape)
    if sy is not None:           # where(c, x, s) = masked_fill(x, ~c, s)
        carr = m.const_value(c)
        if carr is None:
            flip = b.op("fused.logical_xor", [b.cast(c, "bool"), b.const(np.array(True), "scalar")])
            return b.expand(_fill_select(b, b.cast(x, dt), flip, sy, m), shape)
        return b.expand(_fill_select(b, b.cast(x, dt), b.const(~carr.astype(bool), "mask"), sy, m), shape)
    return b.op("fused.where", [b.cast(c, "bool"), b.cast(x, dt), b.cast(y, dt)])


@converts("torch.to.dtype", "torch.to.dtype_layout", "torch.to.device", "torch._to_copy", "torch.to.other")
def _to(b, op, at, m):
    return b.cast(op.operands[0], op.result.type.dtype)


# ---- normalisation, softmax, reductions -----------------------------------------------------
@converts("torch.softmax.int", "torch._softmax")
def _softmax(b, op, at, m):
    x = b.cast(op.operands[0], op.result.type.dtype)
    d = normalize_dim(at["dim"], x.type.rank)
    if d == x.type.rank - 1 or x.type.rank == 0:
        return b.op("fused.softmax", [x])
    perm = list(range(x.type.rank))
    perm[d], perm[-1] = perm[-1], perm[d]
    y = b.op("fused.softmax", [b.op("fused.permute", [x], {"perm": perm})])
    return b.op("fused.permute", [y], {"perm": perm})


@converts("torch.layer_norm")
def _layer_norm(b, op, at, m):
    x, g, beta = padded(op.operands, 3)
    ns = list(at["normalized_shape"])
    if len(ns) == 1:
        return b.op("fused.layer_norm", [x, g, beta], {"eps": float(at["eps"])})
    n = math.prod(ns)
    lead = list(x.type.shape[:-len(ns)])
    y = b.op("fused.layer_norm", [b.reshape(x, lead + [n]), None if g is None else b.reshape(g, [n]),
                                  None if beta is None else b.reshape(beta, [n])], {"eps": float(at["eps"])})
    return b.reshape(y, x.type.shape)




# ---- attention ------------------------------------------------------------------------------
def additive_mask(b: Builder, mask: Value, m: Module) -> Value:
    """A bool 'attend here' mask as an additive f32 mask (0 / -inf; -FLT_MAX for runtime masks)."""
    while mask.producer is not None and mask.producer.name == "fused.expand" and b.module is m:
        mask = mask.producer.operands[0]     # the kernel broadcasts the mask itself
    if mask.type.dtype == "f32":
        return mask
    arr = m.const_value(mask)
    if arr is not None:
        if arr.dtype == np.bool_:
            return b.const(np.where(arr, 0.0, -np.inf).astype(np.float32), "mask")
        return b.const(arr.astype(np.float32), "mask")
    if mask.type.dtype == "bool":
        f = b.cast(mask, "f32")        # (m - 1) * FLT_MAX: 0 where attended, -FLT_MAX elsewhere
        return b.op("fused.mul", [b.op("fused.sub", [f, b.scalar(1.0)]), b.scalar(-NEG_BIG)])
    return b.cast(mask, "f32")


@converts("torch.scaled_dot_product_attention")
def _sdpa(b, op, at, m):
    q, k, v, mask = padded(op.operands, 4)
    scale = at["scale"] if at["scale"] is not None else 1.0 / math.sqrt(q.type.shape[-1])
    rank = q.type.rank
    # Fewer K/V heads than query heads (torch allows one, broadcast over all: multi-query, Falcon; or,
    # with enable_gqa, a divisor): each shared by a group, read as head h // kv_group by the kernel.
    group = q.type.shape[1] // k.type.shape[1] if rank == 4 else 1
    shape = op.result.type.shape
    if rank == 2:
        q, k, v = (b.reshape(t, [1, *t.type.shape]) for t in (q, k, v))
    elif rank > 4:
        q, k, v = (b.reshape(t, [math.prod(t.type.shape[:-3]), *t.type.shape[-3:]])
                   for t in (q, k, v))
    madd = None
    if mask is not None:
        madd = additive_mask(b, mask, m)
        if rank > 4 or rank == 2:
            full = tuple(broadcast_shapes(madd.type.shape, op.result.type.shape[:-1] + (k.type.shape[-2],)))
            madd = b.reshape(b.op("fused.expand", [madd], {"shape": list(full)}),
                           [*q.type.shape[:-1], k.type.shape[-2]])
    y = b.op("fused.attention", [q, k, v, madd], {"scale": float(scale), "causal": bool(at["is_causal"]),
                                                  "kv_group": group})
    return b.reshape(y, shape)


# ---- gathers --------------------------------------------------------------------------------
@converts("torch.cat")
def _cat(b, op, at, m):
    dt = op.result.type.dtype
    parts = [b.cast(x, dt) for x in op.operands if x.type.numel or x.type.rank == op.result.type.rank]
    return b.op("fused.cat", parts, {"dim": normalize_dim(at.get("dim", 0), op.result.type.rank)})


@converts("torch.stack")
def _stack(b, op, at, m):
    """stack = each part with its new dim of 1 (a view), concatenated along that dim."""
    d = normalize_dim(at.get("dim", 0), op.result.type.rank)
    dt, shape = op.result.type.dtype, list(op.result.type.shape)
    parts = [b.reshape(b.cast(x, dt), shape[:d] + [1] + shape[d + 1:]) for x in op.operands]
    return parts[0] if len(parts) == 1 else b.op("fused.cat", parts, {"dim": d})


def _scatter_slice(b, x: Value, src: Value, d: int, start: int, end: int) -> Value:
    """x with x[start:end] along d replaced by src (of that slice's shape): the parts around it and src,
    concatenated."""
    parts = [b.op("fused.slice", [x], {"dim": d, "start": 0, "end": start}) if start > 0 else None,
             b.cast(src, x.type.dtype),
             b.op("fused.slice", [x], {"dim": d, "start": end, "end": x.type.shape[d]})
             if end < x.type.shape[d] else None]
    parts = [p for p in parts if p is not None]
    return parts[0] if len(parts) == 1 else b.op("fused.cat", parts, {"dim": d})


@converts("torch.slice_scatter")
def _slice_scatter(b, op, at, m):
    from ..dialects.torch_ops import slice_bounds
    x, src = op.operands
    d = normalize_dim(at["dim"], x.type.rank)
    s, n, st = slice_bounds(x.type.shape[d], at["start"], at["end"], at["step"])
    if st != 1 and n > 1:
        raise LoweringError(f"slice_scatter with step {st} is not supported")
    return _scatter_slice(b, x, src, d, s, s + n)


@converts("torch.select_scatter")
def _select_scatter(b, op, at, m):
    x, src = op.operands
    d = normalize_dim(at["dim"], x.type.rank)
    i = at["index"] % x.type.shape[d]
    shape = list(x.type.shape)
    shape[d] = 1
    return _scatter_slice(b, x, b.reshape(src, shape), d, i, i + 1)


@converts("torch.fill.Tensor", "torch.copy")
def _fill_or_copy(b, op, at, m):
    """The value (fill's 0-d one, copy's src) in self's dtype, broadcast to self's shape (self's values
    are not read)."""
    x, value = op.operands
    v = b.cast(value, x.type.dtype)
    if v.type.rank < x.type.rank:
        v = b.reshape(v, [1] * (x.type.rank - v.type.rank) + list(v.type.shape))
    return b.expand(v, x.type.shape)


@converts("torch.embedding")
def _embedding(b, op, at, m):
    w, idx = op.operands
    return b.op("fused.embedding", [w, idx])


@converts("torch.index_select")
def _index_select(b, op, at, m):
    x, idx = op.operands
    if normalize_dim(at["dim"], x.type.rank) == 0 and x.type.rank == 2:
        return b.op("fused.embedding", [x, b.reshape(idx, [max(idx.type.numel, 1)])])
    raise LoweringError("index_select is only supported on dim 0 of a 2-D tensor")


@converts("torch.index.Tensor")
def _index(b, op, at, m):
    """x[i0, i1, ...] with constant broadcast-arange indices is a view (permute/reshape/expand).
    With dynamic sizes the indices are leading corners of constants folded at the largest size (an
    arange's corners are aranges), so the pattern is read at the largest size."""
    x, idx = op.operands[0], op.operands[1:]
    if any(i is None for i in idx):
        raise LoweringError("index with None entries on a runtime tensor is not supported")
    arrs = [m.corner_of(i) for i in idx]
    if any(a is None for a in arrs):
        raise LoweringError("index with runtime indices is not supported")
    bshape = tuple(np.broadcast_shapes(*(a.shape for a in arrs)))
    axes = []
    for d, a in enumerate(arrs):
        full = np.broadcast_to(a, bshape)
        varying = [ax for ax in range(len(bshape)) if bshape[ax] > 1 and not np.all(np.diff(full, axis=ax) == 0)]
        n = at_largest(x.type.shape[d])
        if len(varying) > 1:
            raise LoweringError("index pattern is not a view")
        if not varying:
            if n == 1 and np.all(full == 0):
                axes.append(None)
                continue
            raise LoweringError("index pattern is not a view")
        ax = varying[0]
        line = np.moveaxis(full, ax, -1).reshape(-1, bshape[ax])[0]
        if bshape[ax] != n or not np.array_equal(np.mod(line, n), np.arange(n)):
            raise LoweringError("index pattern is not a view")
        axes.append(ax)
    used = [a for a in axes if a is not None]
    if len(set(used)) != len(used):
        raise LoweringError("index pattern is not a view")
    k = len(idx)
    # order the indexed dims of x by the output axis they land on, then place them with a reshape
    order = sorted([d for d in range(k) if axes[d] is not None], key=lambda d: axes[d])
    rest = list(range(k, x.type.rank))
    perm = order + [d for d in range(k) if axes[d] is None] + rest
    y = x if perm == list(range(x.type.rank)) else b.op("fused.permute", [x], {"perm": perm})
    shape = [1] * len(bshape)
    for d in order:
        shape[axes[d]] = x.type.shape[d]
    y = b.reshape(y, shape + [x.type.shape[d] for d in rest])
    out = list(broadcast_shapes(*(i.type.shape for i in idx))) + [x.type.shape[d] for d in rest]
    if list(y.type.shape) != out:
        y = b.op("fused.expand", [y], {"shape": out})
    if y.type.shape != op.result.type.shape:
        raise LoweringError("index pattern is not a view")
    return y


# ---- views ----------------------------------------------------------------------------------
@converts("torch.view", "torch.reshape", "torch._unsafe_view", "torch.flatten.using_ints", "torch.unsqueeze",
          "torch.squeeze.dim", "torch.squeeze.dims", "torch.squeeze", "torch.unflatten.int")
def _reshape(b, op, at, m):
    return b.reshape(op.operands[0], op.result.type.shape)


@converts("torch.transpose.int", "torch.permute", "torch.t")
def _permute(b, op, at, m):
    x = op.operands[0]
    perm = perm_of(at, x.type.rank)
    if perm == list(range(x.type.rank)):
        return x
    return b.op("fused.permute", [x], {"perm": perm})


@converts("torch.expand")
def _expand(b, op, at, m):
    x = op.operands[0]
    if x.type.shape == op.result.type.shape:
        return x
    return b.op("fused.expand", [x], {"shape": list(op.result.type.shape)})


@converts("torch.slice.Tensor")
def _slice(b, op, at, m):
    from ..dialects.torch_ops import slice_bounds
    x = op.operands[0]
    d = normalize_dim(at["dim"], x.type.rank)
    s, n, st = slice_bounds(x.type.shape[d], at["start"], at["end"], at["step"])
    if s == 0 and n == x.type.shape[d] and (st == 1 or n <= 1):
        return x
    return b.op("fused.slice", [x], {"dim": d, "start": s, "end": s + (n - 1) * st + 1 if n else s, "step": st})


@converts("torch.select.int")
def _select(b, op, at, m):
    x = op.operands[0]
    d = normalize_dim(at["dim"], x.type.rank)
    i = at["index"] % x.type.shape[d]
    y = b.op("fused.slice", [x], {"dim": d, "start": i, "end": i + 1}) if x.type.shape[d] > 1 else x
    return b.reshape(y, op.result.type.shape)



# ---- vision: convolution, batch / group norm, pooling, resampling, padding, their activations ----
# 1-d ops run as 2-d ones over a height of 1; an unbatched input gets a batch of 1. The fused ops take
# pads as [top, bottom, left, right].
def _pair(v, nd: int) -> list[int]:
    v = [v] if isinstance(v, int) else list(v)
    return v * nd if len(v) == 1 else v


def _as_2d(b: Builder, x: Value, nd: int) -> Value:
    """x [N?, C, *spatial] (nd spatial dims, 1 or 2) as [N, C, H, W]."""
    if nd not in (1, 2):
        raise LoweringError(f"{nd}-d spatial ops are not supported (1-d and 2-d are)")
    shape = list(x.type.shape)
    if len(shape) == nd + 1:
        shape = [1] + shape
    return b.reshape(x, shape[:2] + [1] * (2 - nd) + shape[2:])


def _widen(v: list[int], nd: int, one: int) -> list[int]:
    """A per-spatial-dim list for the 2-d op: the 1-d op's value for W, `one` for H."""
    return [one] * (2 - nd) + v


def _pads(p: list[int]) -> list[int]:
    return [p[0], p[0], p[1], p[1]]


@converts("torch.convolution")
def _convolution(b, op, at, m):
    x, w, bias = padded(op.operands, 3)
    nd = w.type.rank - 2
    stride, pad, dil = (_widen(_pair(at[k], nd), nd, one)
                        for k, one in (("stride", 1), ("padding", 0), ("dilation", 1)))
    attrs = {"stride": stride, "padding": _pads(pad), "dilation": dil, "groups": at["groups"]}
    if at["transposed"]:
        attrs["output_padding"] = _widen(_pair(at["output_padding"], nd), nd, 0)
    w2 = b.reshape(w, list(w.type.shape[:2]) + [1] * (2 - nd) + list(w.type.shape[2:]))
    y = b.op("fused.conv_transpose2d" if at["transposed"] else "fused.conv2d", [_as_2d(b, x, nd), w2, bias], attrs)
    return b.reshape(y, op.result.type.shape)


def _channel(b: Builder, v: np.ndarray, rank: int, hint: str) -> Value:
    """A per-channel constant shaped to broadcast over [N, C, *spatial]."""
    return b.const(v.astype(np.float32).reshape([1, -1] + [1] * (rank - 2)), hint)


@converts("torch.batch_norm", "torch._native_batch_norm_legit_no_training", "torch.native_batch_norm")
def _batch_norm(b, op, at, m):
    """Inference batch norm as x * scale + shift with per-channel constants (fuse-conv folds them into a
    preceding convolution)."""
    x, w, beta, mean, var = padded(op.operands, 5)
    if at.get("training") or at.get("result", 0) != 0:
        raise LoweringError("only inference batch norm (running statistics, the normalised output) is supported")
    arrays = [None if v is None else m.const_value(v) for v in (w, beta, mean, var)]
    if mean is None or var is None or any(a is None for a, v in zip(arrays, (w, beta, mean, var)) if v is not None):
        raise LoweringError("batch norm needs constant weights and running statistics")
    g, bb, mu, sigma2 = (None if a is None else a.astype(np.float64) for a in arrays)
    scale = 1.0 / np.sqrt(sigma2 + at["eps"]) * (1.0 if g is None else g)
    shift = (0.0 if bb is None else bb) - mu * scale
    y = b.op("fused.mul", [x, _channel(b, scale, x.type.rank, "bn_scale")])
    return b.op("fused.add", [y, _channel(b, shift, x.type.rank, "bn_shift")])


@converts("torch.group_norm", "torch.native_group_norm")
def _group_norm(b, op, at, m):
    """An image's group norm is fused.group_norm (its kernel reads NCHW or NHWC); any other rank, a layer
    norm over each group's [C / G, *spatial] items, then the per-channel affine."""
    x, w, beta = padded(op.operands, 3)
    if at.get("result", 0) != 0:
        raise LoweringError("only group norm's normalised output is supported")
    groups = at.get("num_groups", at.get("group"))
    if x.type.rank == 4 and x.type.dtype == "f32":
        return b.op("fused.group_norm", [x, w, beta], {"groups": groups, "eps": float(at["eps"])})
    n = x.type.shape[0]
    y = b.op("fused.layer_norm", [b.reshape(x, [n, groups, x.type.numel // (n * groups)])], {"eps": float(at["eps"])})
    y = b.reshape(y, x.type.shape)
    shape = [1, x.type.shape[1]] + [1] * (x.type.rank - 2)
    if w is not None:
        y = b.op("fused.mul", [y, b.reshape(w, shape)])
    return y if beta is None else b.op("fused.add", [y, b.reshape(beta, shape)])


def _pool(name: str, nd: int):
    def conv(b, op, at, m):
        if at.get("result", 0) != 0:
            raise LoweringError("pooling indices are not supported")
        k = _pair(at["kernel_size"], nd)
        stride = _pair(at["stride"], nd) if at.get("stride") else k
        attrs = {"kernel": _widen(k, nd, 1), "stride": _widen(stride, nd, 1),
                 "padding": _pads(_widen(_pair(at["padding"], nd), nd, 0)), "ceil_mode": bool(at["ceil_mode"])}
        if name == "fused.max_pool2d":
            attrs["dilation"] = _widen(_pair(at.get("dilation", 1), nd), nd, 1)
        else:
            attrs.update(count_include_pad=bool(at["count_include_pad"]), divisor=int(at.get("divisor_override") or 0))
        y = b.op(name, [_as_2d(b, op.operands[0], nd)], attrs)
        return b.reshape(y, op.result.type.shape)
    return conv


def _adaptive(name: str, nd: int):
    def conv(b, op, at, m):
        if at.get("result", 0) != 0:
            raise LoweringError("pooling indices are not supported")
        x = _as_2d(b, op.operands[0], nd)
        size = _widen(_pair(at["output_size"], nd), nd, 1)
        if name == "fused.adaptive_avg_pool2d" and size == [1, 1]:     # global average pooling
            y = b.op("fused.mean", [x], {"dims": [2, 3], "keepdim": True})
        else:
            y = b.op(name, [x], {"size": size})
        return b.reshape(y, op.result.type.shape)
    return conv


for _nd in (1, 2):
    CONVERTERS[f"torch.max_pool{_nd}d"] = _pool("fused.max_pool2d", _nd)
    CONVERTERS[f"torch.max_pool{_nd}d_with_indices"] = _pool("fused.max_pool2d", _nd)
    CONVERTERS[f"torch.avg_pool{_nd}d"] = _pool("fused.avg_pool2d", _nd)
    CONVERTERS[f"torch.adaptive_max_pool{_nd}d"] = _adaptive("fused.adaptive_max_pool2d", _nd)
CONVERTERS["torch.adaptive_avg_pool1d"] = _adaptive("fused.adaptive_avg_pool2d", 1)
for _name in ("torch.adaptive_avg_pool2d", "torch._adaptive_avg_pool2d"):
    CONVERTERS[_name] = _adaptive("fused.adaptive_avg_pool2d", 2)


def _upsample(mode: str, nd: int):
    def conv(b, op, at, m):
        x = _as_2d(b, op.operands[0], nd)
        scales = [] if at["output_size"] is not None else \
            _widen([float(s) for s in _pair(at["scale_factors"], nd)], nd, 1.0)
        y = b.op("fused.upsample2d", [x], {"mode": mode, "size": _widen(list(op.result.type.shape[2:]), nd, 1),
                                            "scales": scales, "align_corners": bool(at.get("align_corners", False))})
        return b.reshape(y, op.result.type.shape)
    return conv


for _nd, _lin in ((1, "upsample_linear1d"), (2, "upsample_bilinear2d")):
    CONVERTERS[f"torch.upsample_nearest{_nd}d.vec"] = _upsample("nearest", _nd)
    CONVERTERS[f"torch._upsample_nearest_exact{_nd}d.vec"] = _upsample("nearest_exact", _nd)
    CONVERTERS[f"torch.{_lin}.vec"] = _upsample("bilinear", _nd)


def _pad_with(mode_of, value_of):
    def conv(b, op, at, m):
        from ..dialects.fused_ops import PAD_MODES
        from ..dialects.torch_ops import pad_widths
        x = op.operands[0]
        pad = at.get("pad", at.get("padding"))
        widths = pad_widths(x.type.rank, pad)
        for d, (lo, hi) in enumerate(widths):      # negative widths crop
            if lo < 0 or hi < 0:
                n = x.type.shape[d]
                x = b.op("fused.slice", [x], {"dim": d, "start": max(-lo, 0), "end": n - max(-hi, 0)})
        lo, hi = [max(a, 0) for a, _ in widths], [max(c, 0) for _, c in widths]
        if not any(lo + hi):
            return x
        if mode_of(at) not in PAD_MODES:
            raise LoweringError(f"{mode_of(at)} padding is not supported (constant, reflect and replicate are)")
        return b.op("fused.pad", [x], {"lo": lo, "hi": hi, "mode": mode_of(at), "value": float(value_of(at) or 0)})
    return conv


CONVERTERS["torch.constant_pad_nd"] = _pad_with(lambda at: "constant", lambda at: at["value"])
CONVERTERS["torch.pad"] = _pad_with(lambda at: at["mode"], lambda at: at["value"])
for _nd in (1, 2, 3):
    CONVERTERS[f"torch.reflection_pad{_nd}d"] = _pad_with(lambda at: "reflect", lambda at: 0)
    CONVERTERS[f"torch.replication_pad{_nd}d"] = _pad_with(lambda at: "replicate", lambda at: 0)


@converts("torch.hardtanh")
def _hardtanh(b, op, at, m):
    x = b.cast(op.operands[0], op.result.type.dtype)
    if op.result.type.dtype != "f32":
        raise LoweringError("hardtanh runs on float32 only")
    return b.op("fused.clamp", [x], {"min": float(at["min_val"]), "max": float(at["max_val"])})


for _t in ("hardswish", "hardsigmoid", "mish"):
    CONVERTERS[f"torch.{_t}"] = _unary(f"fused.{_t}")


from . import legalize_families  # noqa: E402,F401  (converters onto the general kernel families)


# ---- the pass -------------------------------------------------------------------------------
def legalize(module: Module) -> None:
    names = {v.name for v in module.values()}
    unsupported = []
    out_ops: list[Operation] = []
    replace: dict[Value, Value] = {}
    src = module.meta.get("source", {})
    for op in module.ops:
        if replace:
            op.operands = remap(op.operands, replace)
        if op.dialect != "torch":
            out_ops.append(op)
            continue
        conv = CONVERTERS.get(op.name)
        if conv is None:
            unsupported.append(f"  - {op.name} (%{op.result.name}) at {src.get(op.result.name, '?')}")
            out_ops.append(op)
            continue
        b = Builder(module, names, op.result.name)
        try:
            if op.result.type.numel == 0:      # an empty result is the same whatever computes it
                new = b.const(np.zeros(op.result.type.shape, op.result.type.np_dtype), "empty")
            else:
                new = conv(b, op, REGISTRY[op.name].with_defaults(op.attrs), module)
        except LoweringError as e:
            raise LoweringError(f"{op.name} (%{op.result.name}) at {src.get(op.result.name, '?')}: {e}") from None
        if new.type != op.result.type:
            raise LoweringError(f"converter for {op.name} gave {new.type}, expected {op.result.type}")
        b.rename(new, op.result.name)      # the result keeps the torch op's name
        out_ops.extend(b.new_ops)
        replace[op.result] = new
    if unsupported:
        raise LoweringError("no fused lowering for these torch ops:\n" + "\n".join(unsupported))
    module.ops = out_ops
    module.outputs = remap(module.outputs, replace)
    module.invalidate_names()


@register_pass("legalize-torch-to-fused", dialect="fused")
def legalize_pass(module: Module):
    """Convert every torch op into fused ops (views, kernels, composites)."""
    legalize(module)
