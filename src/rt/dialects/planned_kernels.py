"""How each planned op runs in the compiled loop: the C op it becomes and its parameter encoding.

An encoder turns a planned op plus the resolved layout of its operands (slot, byte offset, element
strides) into one op record: (C op name, args, ip, fp), following the layouts documented in
csrc/rt_ops.def. `kernel(...)` attaches the encoder to the op's registry entry (extra["encode"]) along
with which operands the C kernel reads by strides (extra["strided_operands"]; the planner copies any
other non-contiguous operand first) and which operands the kernel may overwrite with its result
(extra["inplace_operands"]; the planner reuses such an operand's buffer when it dies at the op).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import LoweringError
from ..kernels._runtime import (ACT_CODES, DTYPE_CODES, HAVE_ONEDNN, MATMUL_B_MODES,  # from C
                                MATVEC_SMALL_ELEMS, MAX_NDIM, SPLIT_CHUNK, SPLIT_FAST,
                                attention_scratch_bytes)
from .ir import Operation, TensorType, padded
from .registry import REGISTRY, Attr



@dataclass(frozen=True)
class Operand:
    slot: int
    offset: int                     # bytes from the slot's base
    strides: tuple[int, ...]        # elements
    type: TensorType


Encoded = tuple[list["Operand | None"], list[int], list[float]]     # (args incl. out, ip, fp)
Encoder = Callable[[Operation, list["Operand | None"], Operand], Encoded]


def kernel(name: str, c_op: str, strided: tuple[int, ...] = (), inplace: tuple[int, ...] = (),
           scratch: Callable[[Operation, int], int] | None = None):
    """Declare that planned op `name` runs as C op `c_op`, encoded by the decorated function.
    `scratch(op, threads)` gives the bytes of arena scratch the kernel needs; the planner then
    places it and records it in the op's `scratch = [offset, bytes, threads]` attribute."""
    def deco(fn: Encoder) -> Encoder:
        opdef = REGISTRY[name]
        opdef.extra.update(c_op=c_op, encode=fn, strided_operands=strided, inplace_operands=inplace)
        if scratch is not None:
            opdef.extra["scratch"] = scratch
            opdef.attrs["scratch"] = Attr("ints", None, optional=True)
        return fn
    return deco


def scratch_operand(op: Operation) -> tuple[Operand, int]:
    """The arena scratch the planner gave `op`, and the thread count it was sized for."""
    if op.attrs.get("scratch") is None:
        raise LoweringError(f"{op.name} (%{op.result.name}) has no planned scratch")
    offset, nbytes, threads = op.attrs["scratch"]
    return Operand(0, offset, (1,), TensorType((nbytes // 4,), "f32")), threads


def _need_f32(op: Operation, *vals: Operand | None) -> None:
    for v in vals:
        if v is not None and v.type.dtype != "f32":
            raise LoweringError(f"{op.name} (%{op.result.name}): the C kernel takes float32, got {v.type}")


# ---- matmul ---------------------------------------------------------------------------------
def _blas_matrix(rows: int, cols: int, s_r: int, s_c: int, trans: bool):
    """Row-major BLAS view of a stored (rows x cols) matrix: (trans, ld), or None if not expressible."""
    if s_c == 1 or cols == 1:
        return trans, max(s_r if rows > 1 else cols, cols, 1)
    if s_r == 1 or rows == 1:          # stored transposed: read it as its transpose
        return (not trans), max(s_c if cols > 1 else rows, rows, 1)
    return None


def _batch_strides(v: Operand, out_batch: tuple[int, ...]) -> list[int]:
    shape, strides = v.type.shape[:-2], v.strides[:-2]
    pad = len(out_batch) - len(shape)
    res = [0] * pad
    for d, s in zip(shape, strides):
        res.append(0 if d == 1 else s)
    return res


@kernel("planned.matmul", "MATMUL", strided=(0, 1), inplace=(3,))
def _matmul(op, args, out):
    a, b, bias, res = padded(args, 4)
    _need_f32(op, a, b, bias, res)
    at = op.attrs
    ta, tb = at.get("transpose_a", False), at.get("transpose_b", False)
    ma = _blas_matrix(*a.type.shape[-2:], *a.strides[-2:], ta)
    mb = _blas_matrix(*b.type.shape[-2:], *b.strides[-2:], tb)
    if ma is None or mb is None:
        raise LoweringError(f"{op.name} (%{op.result.name}): an operand has no unit stride in its matrix dims")
    (ta, lda), (tb, ldb) = ma, mb
    m, n = out.type.shape[-2:]
    k = a.type.shape[-1] if not at.get("transpose_a", False) else a.type.shape[-2]
    out_batch = out.type.shape[:-2]
    sa, sb = _batch_strides(a, out_batch), _batch_strides(b, out_batch)
    sc = list(out.strides[:-2])
    ldc = n
    batch = list(out_batch)
    # fold a's batch into M when b is shared and a's rows run on contiguously: one big GEMM
    if batch and all(s == 0 for s in sb) and not ta and all(
            sa[i] == m * lda * int(np.prod(batch[i + 1:], dtype=np.int64)) for i in range(len(batch))):
        m, batch, sa, sb, sc = m * int(np.prod(batch, dtype=np.int64)), [], [], [], []
    if len(batch) > 2:   # merge leading batch dims that are contiguous in every operand
        while len(batch) > 2:
            d0, d1 = batch[0], batch[1]
            for s in (sa, sb, sc):
                if s[0] != s[1] * d1 and not (s[0] == 0 and s[1] == 0):
                    raise LoweringError(f"{op.name} (%{op.result.name}): batch dims {out_batch} cannot be "
                                        "flattened to two")
            batch = [d0 * d1] + batch[2:]
            for s in (sa, sb, sc):
                s[:] = [s[1]] + s[2:]
    while len(batch) < 2:
        batch.insert(0, 1)
        for s in (sa, sb, sc):
            s.insert(0, 0)
    alpha = float(at.get("alpha", 1.0))
    ip = [batch[0], batch[1], m, n, k, int(ta), int(tb), lda, ldb, ldc, sa[0], sa[1], sb[0], sb[1],
          sc[0], sc[1], ACT_CODES[at.get("act", "none")], int(bias is not None), int(res is not None),
          MATMUL_B_MODES[_matmul_b_mode(op, m, n, k, ta, batch, alpha)]]
    return [a, b, bias, res, out], ip, [alpha]


def split_worthy(n: int, k: int) -> bool:
    """Whether a one-row product on a constant [K, N] weight (a contiguous row) reads it in the split
    form: where this CPU decodes it fast, the weight is too big for matvec.c's small loops and a row
    holds at least one encoded chunk (the rest of a row stays plain floats)."""
    return SPLIT_FAST and k >= SPLIT_CHUNK and n * k > MATVEC_SMALL_ELEMS


def _matmul_b_mode(op: Operation, m: int, n: int, k: int, ta: bool, batch: list[int], alpha: float) -> str:
    """For a constant B: one contiguous row -> "split", rt's kernel on B stored losslessly in 3.5 bytes
    per float (a one-row product is bound by reading B: csrc/matvec_split.c), where this CPU runs its
    fast (AVX-512) decoder and B is too big for matvec.c's loops; several rows -> oneDNN with B packed once (its kernels beat BLAS there,
    docs/dev.md "oneDNN vs OpenBLAS"). BLAS for the rest. ProgramLayout.encode demotes "packed" to
    "onednn" (B read in place) when another op reads the same constant, so no weight is packed twice."""
    st = op.operands[1].storage
    if st.kind == "view":
        st = st.base.storage
    if st.kind != "const" or batch != [1, 1] or k == 0:
        return "blas"
    if m == 1:
        return "split" if not ta and split_worthy(n, k) else "blas"
    return "packed" if HAVE_ONEDNN and alpha == 1.0 else "blas"


# ---- elementwise ----------------------------------------------------------------------------
_UNARY = {"relu": "RELU", "gelu_tanh": "GELU_TANH", "gelu_erf": "GELU_ERF", "tanh": "TANH",
          "sigmoid": "SIGMOID", "neg": "NEG", "exp": "EXP", "sqrt": "SQRT", "rsqrt": "RSQRT"}


def _unary(op, args, out):
    _need_f32(op, args[0], out)
    return [args[0], out], [out.type.numel], []


for _name, _c_op in _UNARY.items():
    if f"planned.{_name}" in REGISTRY:
        kernel(f"planned.{_name}", _c_op, inplace=(0,))(_unary)


def _broadcast_strides(v: Operand, shape: tuple[int, ...]) -> list[int]:
    pad = len(shape) - v.type.rank
    return [0] * pad + [0 if d == 1 else s for d, s in zip(v.type.shape, v.strides)]


def _pad6(xs: list[int], fill: int = 0) -> list[int]:
    return list(xs) + [fill] * (MAX_NDIM - len(xs))


def _binary(op, args, out):
    a, b = args
    _need_f32(op, a, b, out)
    shape = out.type.shape
    if len(shape) > MAX_NDIM:
        raise LoweringError(f"{op.name} (%{op.result.name}): rank {len(shape)} > {MAX_NDIM}")
    ip = [len(shape)] + _pad6(list(shape), 1) + _pad6(_broadcast_strides(a, shape)) + \
        _pad6(_broadcast_strides(b, shape))
    return [a, b, out], ip, []


for _name in ("add", "sub", "mul", "div"):
    kernel(f"planned.{_name}", _name.upper(), strided=(0, 1), inplace=(0, 1))(_binary)


@kernel("planned.copy", "COPY", strided=(0,))
def _copy(op, args, out):
    x = args[0]
    if x.type.rank > MAX_NDIM:
        raise LoweringError(f"{op.name} (%{op.result.name}): rank {x.type.rank} > {MAX_NDIM}")
    ip = [x.type.rank] + _pad6(list(x.type.shape), 1) + _pad6(list(x.strides)) + [x.type.np_dtype.itemsize]
    return [x, out], ip, []


# ---- normalisations -------------------------------------------------------------------------
def _rows_cols(t: TensorType) -> tuple[int, int]:
    cols = t.shape[-1] if t.rank else 1
    return (t.numel // cols if cols else 0), cols


@kernel("planned.softmax", "SOFTMAX", inplace=(0,))
def _softmax(op, args, out):
    _need_f32(op, args[0], out)
    return [args[0], out], list(_rows_cols(out.type)), []


@kernel("planned.layer_norm", "LAYER_NORM", inplace=(0,))
def _layer_norm(op, args, out):
    x, g, b = padded(args, 3)
    _need_f32(op, x, g, b, out)
    return [x, g, b, out], list(_rows_cols(out.type)), [float(op.attrs.get("eps", 1e-5))]


@kernel("planned.add_layer_norm", "ADD_LAYER_NORM", inplace=(0, 1))
def _add_layer_norm(op, args, out):
    x, r, g, b = padded(args, 4)
    _need_f32(op, x, r, g, b, out)
    return [x, r, g, b, None, out], list(_rows_cols(out.type)), [float(op.attrs.get("eps", 1e-5))]


# ---- attention ------------------------------------------------------------------------------
def _bhs(v: Operand) -> list[int]:
    """(batch, head, seq) strides of a rank-3 [B,S,D] or rank-4 [B,H,S,D] operand."""
    if v.type.rank == 3:
        return [v.strides[0], 0, v.strides[1]]
    return list(v.strides[:3])


def _attention_scratch(op: Operation, threads: int) -> int:
    q, k, v = (o.type for o in op.operands[:3])
    return attention_scratch_bytes(k.shape[-2], q.shape[-1], v.shape[-1], threads)


@kernel("planned.attention", "ATTENTION", strided=(0, 1, 2, 3), scratch=_attention_scratch)
def _attention(op, args, out):
    q, k, v, mask = padded(args, 4)
    _need_f32(op, q, k, v, mask, out)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.strides[-1] != 1 and t.type.shape[-1] > 1:
            raise LoweringError(f"{op.name} (%{op.result.name}): {name} must have unit stride in its last dim")
    four = q.type.rank == 4
    b, h = (q.type.shape[0], q.type.shape[1]) if four else (q.type.shape[0], 1)
    sq, d = q.type.shape[-2:]
    sk, dv = k.type.shape[-2], v.type.shape[-1]
    if op.attrs.get("merge_heads", False):      # out is [B, S, H*Dv]: head h writes columns h*Dv..
        o = [sq * h * dv, dv, h * dv]
    else:
        o = _bhs(out)
    m = [0, 0, 0, 0]
    if mask is not None:
        shape4 = (1,) * (4 - mask.type.rank) + mask.type.shape
        strides4 = (0,) * (4 - mask.type.rank) + mask.strides
        m = [0 if dim == 1 else s for dim, s in zip(shape4, strides4)]
        if not four:    # a rank-3 problem has no head dim: [B, Sq, Sk] masks map to (b, -, q, k)
            m = [m[1], 0, m[2], m[3]]
    scratch, threads = scratch_operand(op)
    ip = [b, h, sq, sk, d, dv] + _bhs(q) + _bhs(k) + _bhs(v) + o + [int(op.attrs.get("causal", False))] + m
    return [q, k, v, mask, scratch, out], ip + [threads], [float(op.attrs.get("scale", 1.0))]


# ---- gathers and casts ----------------------------------------------------------------------
@kernel("planned.embedding", "EMBEDDING", strided=(0,))
def _embedding(op, args, out):
    table, idx = args
    _need_f32(op, table, out)
    if idx.type.dtype != "i64":
        raise LoweringError(f"{op.name} (%{op.result.name}): indices must be int64, got {idx.type}")
    return [table, idx, out], [idx.type.numel, *table.type.shape, *table.strides], []


@kernel("planned.cast", "CAST")
def _cast(op, args, out):
    x = args[0]
    for t in (x.type, out.type):
        if t.dtype not in DTYPE_CODES:
            raise LoweringError(f"{op.name} (%{op.result.name}): no kernel casts {t.dtype}")
    return [x, out], [out.type.numel, DTYPE_CODES[x.type.dtype], DTYPE_CODES[out.type.dtype]], []
