"""The records step: a planned module and a target become the op-record array the C loop runs.

Each planned op's encoder (registered here, by planned op name) turns the op plus the resolved layout
of its operands (slot, byte offset, element strides) into its C op, operands and fields by name;
`rt.kernels.records` writes them. Decisions that depend on the machine or on the whole program
(MATMUL's b_mode) are made here, once, from the target and the program's facts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..abi import BINARY_OPS, MATVEC_SMALL_ELEMS, MAX_NDIM, REDUCE_OPS, SCAN_OPS, TERNARY_OPS, UNARY_OPS
from ..dialects.ir import ROOT_OPS, Module, Operation, TensorType, Value, padded
from ..dialects.registry import REGISTRY, VIEW, normalize_dim
from ..dialects.strides import contiguous_strides, row_groups
from ..errors import LoweringError
from ..target import Target
from ..dialects.symbolic import at_largest, is_static, size_ranges
from .records import RECORD_DTYPE, fill, sized_places


@dataclass(frozen=True)
class Operand:
    slot: int
    offset: int                     # bytes from the slot's base
    strides: tuple[int, ...]        # elements
    type: TensorType

    @property
    def place(self) -> tuple[int, int]:
        return self.slot, self.offset


@dataclass
class Context:
    """What an encoder may ask beyond its own op: the target, how many ops read each constant, and
    whether the weights are shared with other programs (a generator's), so no op may copy one."""
    target: Target
    const_reads: dict[int, int]
    const_slots: frozenset[int]
    weights_in_place: bool = False


@dataclass(frozen=True)
class Encoded:
    c_op: str
    operands: dict[str, Operand | None]
    fields: dict


# An encoder gives one record, or several (a concatenation: one COPY per part).
Encoder = Callable[[Operation, list["Operand | None"], Operand, Context], "Encoded | list[Encoded]"]
ENCODERS: dict[str, Encoder] = {}


def encoder(*names: str):
    def deco(fn: Encoder) -> Encoder:
        for name in names:
            ENCODERS[name] = fn
        return fn
    return deco


class ProgramLayout:
    """Slot table of a planned module: 0 = arena, then inputs, outputs, states (persistent buffers the
    caller binds after the outputs: state_types), constants."""

    def __init__(self, planned: Module):
        self.module = planned
        self.arena_bytes = planned.meta["plan"]["arena_bytes"]
        self.input_slots = [1 + i for i in range(len(planned.inputs))]
        self.output_slots = [1 + len(planned.inputs) + i for i in range(len(planned.outputs))]
        self.state_types = state_types(planned)
        first_state = 1 + len(planned.inputs) + len(planned.outputs)
        self.state_slots = [first_state + i for i in range(len(self.state_types))]
        self.const_slot: dict[str, int] = {}
        self.constants: dict[int, np.ndarray] = {}
        nbytes = [self.arena_bytes] + [v.type.nbytes for v in planned.inputs] + \
                 [v.type.nbytes for v in planned.outputs] + [t.nbytes for t in self.state_types]
        for op in planned.ops:
            if op.name == "const" and op.attrs["name"] not in self.const_slot:
                arr = np.ascontiguousarray(planned.constants[op.attrs["name"]]).reshape(op.result.type.shape)
                self.const_slot[op.attrs["name"]] = len(nbytes)
                self.constants[len(nbytes)] = arr
                nbytes.append(arr.nbytes)
        self.slot_sizes = nbytes                        # dynamic ones as Syms
        self.symbols = planned.meta.get("symbols") or {}
        with size_ranges(self.symbols):
            self.slot_nbytes = np.array(at_largest(nbytes), dtype=np.int64)

    def operand(self, v: Value) -> Operand:
        """Where a value lives: slot, byte offset and element strides. A view's storage is relative to
        its root (the planner resolves view chains)."""
        offset, strides = 0, None
        ttype = v.type
        if v.storage.kind == "view":
            offset, strides = v.storage.offset, v.storage.strides
            v = v.storage.base
        st = v.storage
        if st.kind == "arena":
            slot, offset = 0, offset + st.offset
        elif st.kind == "input":
            slot = self.input_slots[st.index]
        elif st.kind == "output":
            slot = self.output_slots[st.index]
        elif st.kind == "state":
            slot = self.state_slots[st.index]
        elif st.kind == "const":
            slot = self.const_slot[v.producer.attrs["name"]]
        else:
            raise LoweringError(f"%{v.name}: unknown storage {st.kind}")
        return Operand(slot, offset, strides if strides is not None else contiguous_strides(ttype.shape), ttype)

    def encode(self, target: Target, weights_in_place: bool = False) -> tuple[np.ndarray, list[Operation], list[Encoded]]:
        """The op-record array, the planned op each record runs (a planned op may run as several), and
        what each was encoded from. With dynamic sizes: the records at the largest sizes, and in
        self.sized the places (record, "ip" | "offset", index, size) that bind.py writes per call.
        weights_in_place: no op keeps its own copy of a weight (matmul_b_mode)."""
        with size_ranges(self.symbols):
            return self._encode(target, weights_in_place)

    def _encode(self, target: Target, weights_in_place: bool) -> tuple[np.ndarray, list[Operation], list[Encoded]]:
        ops = [op for op in self.module.ops if op.name not in ROOT_OPS and not REGISTRY[op.name].has(VIEW)]
        placed = []
        reads: dict[int, int] = {}
        for op in ops:
            if op.name not in ENCODERS:
                raise LoweringError(f"{op.name} (%{op.result.name}) has no C kernel yet")
            args = [None if v is None else self.operand(v) for v in op.operands]
            for a in args:
                if a is not None and a.slot in self.constants:
                    reads[a.slot] = reads.get(a.slot, 0) + 1
            placed.append((op, args, self.operand(op.result)))
        ctx = Context(target, reads, frozenset(self.constants), weights_in_place)
        encoded, rec_ops = [], []
        for op, args, out in placed:
            e = ENCODERS[op.name](op, args, out, ctx)
            for one in e if isinstance(e, list) else [e]:
                encoded.append(one)
                rec_ops.append(op)
        records = np.zeros(len(encoded), dtype=RECORD_DTYPE)
        self.sized = []
        for i, (rec, e) in enumerate(zip(records, encoded)):
            places = {k: None if v is None else v.place for k, v in e.operands.items()}
            self.sized += [(i, *p) for p in sized_places(e.c_op, places, e.fields)]
            fill(rec, e.c_op, at_largest(places), at_largest(e.fields))
        return records, rec_ops, encoded


def state_types(planned: Module) -> list[TensorType]:
    """The type of each persistent buffer `state {index = i}` the program reads, by index (0..n-1)."""
    found = {op.attrs["index"]: op.result.type for op in planned.ops if op.name == "state"}
    if sorted(found) != list(range(len(found))):
        raise LoweringError(f"the program's states are numbered {sorted(found)}, not 0..{len(found) - 1}")
    return [found[i] for i in range(len(found))]


def _need_f32(op: Operation, *vals: Operand | None) -> None:
    for v in vals:
        if v is not None and v.type.dtype != "f32":
            raise LoweringError(f"{op.name} (%{op.result.name}): the C kernel takes float32, got {v.type}")


def _fail(op: Operation, why: str) -> LoweringError:
    return LoweringError(f"{op.name} (%{op.result.name}): {why}")


# ---- matmul ---------------------------------------------------------------------------------
def _leading_dim(stride, extent, other: int) -> int:
    """BLAS's leading dim for a dim of `extent` with this stride: one row needs only ld >= `other` (its
    stride then means nothing); a dynamic extent may be 1 or more, and both hold with max(stride, other)."""
    if not is_static(extent):
        return max(stride, other, 1)
    return max(stride if extent > 1 else other, other, 1)


def _blas_matrix(rows: int, cols: int, s_r: int, s_c: int, trans: bool):
    """Row-major BLAS view of a stored (rows x cols) matrix: (trans, ld), or None if not expressible."""
    if s_c == 1 or cols == 1:
        return trans, _leading_dim(s_r, rows, cols)
    if s_r == 1 or rows == 1:          # stored transposed: read it as its transpose
        return (not trans), _leading_dim(s_c, cols, rows)
    return None


def _batch_strides(v: Operand, out_batch: tuple[int, ...]) -> list[int]:
    shape, strides = v.type.shape[:-2], v.strides[:-2]
    res = [0] * (len(out_batch) - len(shape))
    for d, s in zip(shape, strides):
        res.append(0 if d == 1 else s)
    return res


def matmul_b_mode(ctx: Context, b: Operand, m: int, n: int, k: int, ta: bool, batch: list[int],
                  alpha: float) -> str:
    """How a MATMUL reads B (rt.abi ENUMS["b_mode"]), the one place this is decided.
    One row: "small" (matvec.c's loops: OpenBLAS's gemv set-up costs more than a 64x64 product) for a
    B of at most MATVEC_SMALL_ELEMS, else for a constant B
    "split" (B stored losslessly in 3.5 bytes per float: a one-row product is bound by reading B) where
    the target decodes it fast. Several rows with a constant B: oneDNN (its kernels beat BLAS there,
    docs/dev.md "oneDNN vs OpenBLAS"), with B "packed" once, or read in place ("onednn") when another
    op also reads that constant, so no weight is held twice (GPT-2's tied embedding / LM head). The
    split form stays even then: it is smaller than B, and the other readers of a model loaded from its
    file fault in only the pages of B they touch (an embedding: a few rows). BLAS for the rest.
    A dynamic row count (one record for every size) takes the several-rows modes: oneDNN makes a
    primitive per row count it meets; a dynamic N or K, BLAS (nothing can be prepared for B).
    Programs that share their weights (a generator's prefill and decode: ctx.weights_in_place) read
    every one in place: "onednn" for several rows, BLAS's gemv for one (measured as fast as the split
    form here, docs/architecture.md "Generation"), so the weights are held once."""
    if not is_static((n, k)):
        return "blas"
    one_row = is_static(m) and m == 1
    if one_row and k > 0 and n * k <= MATVEC_SMALL_ELEMS:
        return "small"
    if b.slot not in ctx.const_slots or batch != [1, 1] or k == 0:
        return "blas"
    if one_row:
        return "split" if not (ta or ctx.weights_in_place) and ctx.target.split_worthy(n, k) else "blas"
    if not ctx.target.onednn or alpha != 1.0:
        return "blas"
    return "onednn" if ctx.const_reads[b.slot] > 1 or ctx.weights_in_place else "packed"


@encoder("planned.matmul")
def _matmul(op, args, out, ctx):
    a, b, bias, res = padded(args, 4)
    _need_f32(op, a, b, bias, res)
    at = op.attrs
    ma = _blas_matrix(*a.type.shape[-2:], *a.strides[-2:], at.get("transpose_a", False))
    mb = _blas_matrix(*b.type.shape[-2:], *b.strides[-2:], at.get("transpose_b", False))
    if ma is None or mb is None:
        raise _fail(op, "an operand has no unit stride in its matrix dims")
    (ta, lda), (tb, ldb) = ma, mb
    m, n = out.type.shape[-2:]
    k = a.type.shape[-1] if not at.get("transpose_a", False) else a.type.shape[-2]
    out_batch = out.type.shape[:-2]
    sa, sb = _batch_strides(a, out_batch), _batch_strides(b, out_batch)
    sc = list(out.strides[:-2])
    batch = list(out_batch)
    # fold a's batch into M when b is shared and a's rows run on contiguously: one big GEMM
    if batch and all(s == 0 for s in sb) and not ta and all(
            sa[i] == m * lda * math.prod(batch[i + 1:]) for i in range(len(batch))):
        m, batch, sa, sb, sc = m * math.prod(batch), [], [], [], []
    while len(batch) > 2:   # merge leading batch dims that are contiguous in every operand
        for s in (sa, sb, sc):
            if s[0] != s[1] * batch[1] and not (s[0] == 0 and s[1] == 0):
                raise _fail(op, f"batch dims {out_batch} cannot be flattened to two")
        batch = [batch[0] * batch[1]] + batch[2:]
        for s in (sa, sb, sc):
            s[:] = [s[1]] + s[2:]
    while len(batch) < 2:
        batch.insert(0, 1)
        for s in (sa, sb, sc):
            s.insert(0, 0)
    alpha = float(at.get("alpha", 1.0))
    return Encoded("MATMUL", dict(a=a, b=b, bias=bias, residual=res, out=out), dict(
        b1=batch[0], b2=batch[1], M=m, N=n, K=k, trans_a=ta, trans_b=tb, lda=lda, ldb=ldb, ldc=n,
        sa1=sa[0], sa2=sa[1], sb1=sb[0], sb2=sb[1], sc1=sc[0], sc2=sc[1], act=at.get("act", "none"),
        b_mode=matmul_b_mode(ctx, b, m, n, k, ta, batch, alpha), alpha=alpha))


@encoder("planned.matmul_packed")
def _matmul_packed(op, args, out, ctx):
    """QMATMUL: a's rows (contiguous: the op reads no strides) times the packed constant weight."""
    a, w, bias, res = padded(args, 4)
    _need_f32(op, a, bias, res, out)
    at = REGISTRY[op.name].with_defaults(op.attrs)
    rows = math.prod(a.type.shape[:-1])
    scratch = None if at["format"] == "bf16" else _scratch(op)[0]
    return Encoded("QMATMUL", dict(a=a, w=w, bias=bias, residual=res, scratch=scratch, out=out), dict(
        M=rows, N=at["n"], K=at["k"], lda=at["k"], ldc=at["n"], format=at["format"], group=at["group"],
        zero_point=at["zero_point"], rotate=at["rotate"], act=at["act"], alpha=float(at["alpha"])))


# ---- elementwise ----------------------------------------------------------------------------
@encoder(*(f"planned.{n}" for n in UNARY_OPS))
def _unary(op, args, out, ctx):
    _need_f32(op, args[0], out)
    opdef = REGISTRY[op.name]
    attrs = opdef.with_defaults(op.attrs)
    params = dict(zip(("alpha", "beta"), (float(attrs[p]) for p in opdef.extra.get("params", ()))))
    return Encoded(op.name.split(".", 1)[1].upper(), dict(x=args[0], out=out), dict(n=out.type.numel, **params))


def _check_rank(op: Operation, rank: int) -> None:
    if rank > MAX_NDIM:
        raise _fail(op, f"rank {rank} > {MAX_NDIM}")


def _broadcast_strides(v: Operand, shape: tuple[int, ...]) -> list[int]:
    pad = len(shape) - v.type.rank
    return [0] * pad + [0 if d == 1 else s for d, s in zip(v.type.shape, v.strides)]


@encoder(*(f"planned.{n}" for n in BINARY_OPS))
def _binary(op, args, out, ctx):
    a, b = args
    shape = out.type.shape
    _check_rank(op, len(shape))
    return Encoded(op.name.split(".", 1)[1].upper(), dict(a=a, b=b, out=out), dict(
        ndim=len(shape), shape=shape, a_stride=_broadcast_strides(a, shape),
        b_stride=_broadcast_strides(b, shape), dtype=a.type.dtype))


@encoder(*(f"planned.{n}" for n in TERNARY_OPS))
def _ternary(op, args, out, ctx):
    a, b, c = args
    shape = out.type.shape
    _check_rank(op, len(shape))
    return Encoded(op.name.split(".", 1)[1].upper(), dict(a=a, b=b, c=c, out=out), dict(
        ndim=len(shape), shape=shape, a_stride=_broadcast_strides(a, shape), b_stride=_broadcast_strides(b, shape),
        c_stride=_broadcast_strides(c, shape), dtype=b.type.dtype))


def _copy_into(op: Operation, x: Operand, out: Operand) -> Encoded:
    """COPY of x into out, which has x's shape and its own strides."""
    _check_rank(op, x.type.rank)
    return Encoded("COPY", dict(x=x, out=out), dict(ndim=x.type.rank, shape=x.type.shape, stride=x.strides,
                                                    out_stride=out.strides, itemsize=x.type.np_dtype.itemsize))


@encoder("planned.copy")
def _copy(op, args, out, ctx):
    return _copy_into(op, args[0], out)


@encoder("planned.cache_write")
def _cache_write(op, args, out, ctx):
    """x copied into its rows of the cache (out is the cache itself)."""
    d, x = op.attrs["dim"], args[1]
    at = out.offset + op.attrs["start"] * out.strides[d] * out.type.np_dtype.itemsize
    return _copy_into(op, x, Operand(out.slot, at, out.strides, x.type))


@encoder("planned.cat")
def _cat(op, args, out, ctx):
    """One COPY per part, each into its slice of the result."""
    d = op.attrs["dim"]
    records, start = [], 0
    for x in args:
        at = out.offset + start * out.strides[d] * out.type.np_dtype.itemsize
        records.append(_copy_into(op, x, Operand(out.slot, at, out.strides, x.type)))
        start += x.type.shape[d]
    return records


@encoder(*(f"planned.{n}" for n in REDUCE_OPS))
def _reduce(op, args, out, ctx):
    """x's dims reordered kept-first, reduced-last (the kernel reads x through its strides)."""
    x = args[0]
    _check_rank(op, x.type.rank)
    red = sorted({normalize_dim(d, x.type.rank) for d in op.attrs["dims"]}) if x.type.rank else []
    order = [d for d in range(x.type.rank) if d not in red] + red
    return Encoded(op.name.split(".", 1)[1].upper(), dict(x=x, out=out), dict(
        ndim=len(order), nred=len(red), shape=[x.type.shape[d] for d in order],
        stride=[x.strides[d] for d in order], correction=float(op.attrs.get("correction", 0.0)), dtype=x.type.dtype))


def _last(op: Operation, v: Operand, d: int) -> tuple[list[int], list[int]]:
    """v's shape and strides with dim d moved last (a 0-d value as one item)."""
    if v.type.rank == 0:
        return [1], [1]
    order = [k for k in range(v.type.rank) if k != d] + [d]
    return [v.type.shape[k] for k in order], [v.strides[k] for k in order]


@encoder(*(f"planned.{n}" for n in SCAN_OPS))
def _scan(op, args, out, ctx):
    x = args[0]
    _check_rank(op, max(x.type.rank, 1))
    shape, stride = _last(op, x, op.attrs["dim"])
    return Encoded(op.name.split(".", 1)[1].upper(), dict(x=x, out=out), dict(
        ndim=len(shape), shape=shape, stride=stride, out_stride=_last(op, out, op.attrs["dim"])[1],
        dtype=x.type.dtype))


@encoder("planned.gather")
def _gather(op, args, out, ctx):
    x, idx = args
    _check_rank(op, max(out.type.rank, 1))
    d = op.attrs["dim"]
    if out.type.rank == 0:
        shape, xs, ids, xd, size = [1], [0], [0], 1, 1
    else:
        shape, xs, ids = list(out.type.shape), list(x.strides), list(idx.strides)
        xd, size = x.strides[d], x.type.shape[d]
    return Encoded("GATHER", dict(x=x, idx=idx, out=out), dict(
        ndim=len(shape), shape=shape, x_stride=xs, idx_stride=ids, dim=d, size=size, x_dim_stride=xd,
        itemsize=x.type.np_dtype.itemsize))


@encoder("planned.scatter")
def _scatter(op, args, out, ctx):
    x, idx, src = args
    at = REGISTRY[op.name].with_defaults(op.attrs)
    _check_rank(op, max(out.type.rank, 1))
    d = at["dim"]
    if out.type.rank == 0:
        shape, ids, ss, os_, od, size = [1], [0], [0], [0], 1, 1
    else:
        shape, ids, ss, os_ = list(idx.type.shape), list(idx.strides), list(src.strides), list(out.strides)
        od, size = out.strides[d], out.type.shape[d]
    return Encoded("SCATTER", dict(x=x, idx=idx, src=src, out=out), dict(
        ndim=len(shape), shape=shape, idx_stride=ids, src_stride=ss, out_stride=os_, dim=d, size=size,
        out_dim_stride=od, n=out.type.numel, reduce=at["reduce"], include_self=bool(at["include_self"]),
        dtype=out.type.dtype))


@encoder("planned.sort")
def _sort(op, args, out, ctx):
    x = args[0]
    _need_f32(op, x)
    _check_rank(op, x.type.rank)
    at = REGISTRY[op.name].with_defaults(op.attrs)
    return Encoded("SORT", dict(x=x, out=out), dict(
        ndim=x.type.rank, shape=x.type.shape, stride=x.strides, k=out.type.shape[-1],
        descending=bool(at["descending"]), result=int(at["result"])))


# ---- normalisations -------------------------------------------------------------------------
def _rows_cols(t: TensorType) -> dict:
    cols = t.shape[-1] if t.rank else 1
    return dict(rows=t.numel // cols if cols else 0, cols=cols)


@encoder("planned.softmax", "planned.log_softmax")
def _softmax(op, args, out, ctx):
    _need_f32(op, args[0], out)
    return Encoded(op.name.split(".", 1)[1].upper(), dict(x=args[0], out=out), _rows_cols(out.type))


@encoder("planned.layer_norm")
def _layer_norm(op, args, out, ctx):
    x, g, b = padded(args, 3)
    _need_f32(op, x, g, b, out)
    return Encoded("LAYER_NORM", dict(x=x, gamma=g, beta=b, out=out),
                   dict(_rows_cols(out.type), eps=float(op.attrs.get("eps", 1e-5))))


@encoder("planned.rms_norm")
def _rms_norm(op, args, out, ctx):
    x, g = padded(args, 2)
    _need_f32(op, x, g, out)
    groups = row_groups(x.type.shape, x.strides)
    if groups is None:
        raise _fail(op, "x's rows need more than two levels of strides")
    group, gs, rs = groups
    return Encoded("RMS_NORM", dict(x=x, gamma=g, out=out), dict(
        _rows_cols(out.type), group=group, x_gs=gs, x_rs=rs, eps=float(op.attrs.get("eps", 1e-6))))


@encoder("planned.add_layer_norm")
def _add_layer_norm(op, args, out, ctx):
    x, r, g, b = padded(args, 4)
    _need_f32(op, x, r, g, b, out)
    return Encoded("ADD_LAYER_NORM", dict(x=x, residual=r, gamma=g, beta=b, sum=None, out=out),
                   dict(_rows_cols(out.type), eps=float(op.attrs.get("eps", 1e-5))))


# ---- attention ------------------------------------------------------------------------------
def _bhs(v: Operand) -> tuple[int, int, int]:
    """(batch, head, seq) strides of a rank-3 [B,S,D] or rank-4 [B,H,S,D] operand."""
    if v.type.rank == 3:
        return v.strides[0], 0, v.strides[1]
    return tuple(v.strides[:3])


def _scratch(op: Operation) -> tuple[Operand, int]:
    """The arena scratch the planner gave `op`, and the thread count it was sized for."""
    if op.attrs.get("scratch") is None:
        raise _fail(op, "has no planned scratch")
    offset, nbytes, threads = op.attrs["scratch"]
    return Operand(0, offset, (1,), TensorType((nbytes // 4,), "f32")), threads


@encoder("planned.attention")
def _attention(op, args, out, ctx):
    q, k, v, mask = padded(args, 4)
    _need_f32(op, q, k, v, mask, out)
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.strides[-1] != 1 and t.type.shape[-1] > 1:
            raise _fail(op, f"{name} must have unit stride in its last dim")
    four = q.type.rank == 4
    b, h = (q.type.shape[0], q.type.shape[1]) if four else (q.type.shape[0], 1)
    sq, d = q.type.shape[-2:]
    sk, dv = k.type.shape[-2], v.type.shape[-1]
    if op.attrs.get("merge_heads", False):      # out is [B, S, H*Dv]: head h writes columns h*Dv..
        o = (sq * h * dv, dv, h * dv)
    else:
        o = _bhs(out)
    m = (0, 0, 0, 0)
    if mask is not None:
        shape4 = (1,) * (4 - mask.type.rank) + mask.type.shape
        strides4 = (0,) * (4 - mask.type.rank) + mask.strides
        m = tuple(0 if dim == 1 else s for dim, s in zip(shape4, strides4))
        if not four:    # a rank-3 problem has no head dim: [B, Sq, Sk] masks map to (b, -, q, k)
            m = (m[1], 0, m[2], m[3])
    scratch, threads = _scratch(op)
    fields = dict(B=b, H=h, Sq=sq, Sk=sk, D=d, Dv=dv, causal=bool(op.attrs.get("causal", False)),
                  threads=threads, kv_group=int(op.attrs.get("kv_group", 1)), scale=float(op.attrs.get("scale", 1.0)))
    for prefix, st in (("q", _bhs(q)), ("k", _bhs(k)), ("v", _bhs(v)), ("o", o)):
        fields.update({f"{prefix}_sb": st[0], f"{prefix}_sh": st[1], f"{prefix}_ss": st[2]})
    fields.update(m_sb=m[0], m_sh=m[1], m_sq=m[2], m_sk=m[3])
    return Encoded("ATTENTION", dict(q=q, k=k, v=v, mask=mask, scratch=scratch, out=out), fields)


# ---- rotary embedding -----------------------------------------------------------------------
def _table_strides(t: Operand) -> tuple[int, int]:
    """(batch, seq) strides of a [S, D], [B, S, D] or [B, 1, S, D] cos/sin table (batch 0 if shared)."""
    shape, st = t.type.shape, t.strides
    if t.type.rank == 2:
        return 0, st[0]
    return (0 if shape[0] == 1 else st[0]), st[-2]


@encoder("planned.rope")
def _rope(op, args, out, ctx):
    x, c, s = args
    _need_f32(op, x, c, s, out)
    for name, t in (("x", x), ("cos", c), ("sin", s), ("out", out)):
        if t.strides[-1] != 1 and t.type.shape[-1] > 1:
            raise _fail(op, f"{name} must have unit stride in its last dim")
    if c.strides != s.strides:
        raise _fail(op, "cos and sin must share a layout")
    b, h, sq, d = x.type.shape
    rot = op.attrs.get("rot", -1)
    cb, cs = _table_strides(c)
    return Encoded("ROPE", dict(x=x, cos=c, sin=s, out=out), dict(
        B=b, H=h, S=sq, D=d, rot=d if rot < 0 else rot, interleaved=bool(op.attrs.get("interleaved", False)),
        x_sb=x.strides[0], x_sh=x.strides[1], x_ss=x.strides[2], c_sb=cb, c_ss=cs,
        o_sb=out.strides[0], o_sh=out.strides[1], o_ss=out.strides[2]))


# ---- gathers and casts ----------------------------------------------------------------------
@encoder("planned.embedding")
def _embedding(op, args, out, ctx):
    table, idx = args
    _need_f32(op, table, out)
    if idx.type.dtype != "i64":
        raise _fail(op, f"indices must be int64, got {idx.type}")
    vocab, dim = table.type.shape
    return Encoded("EMBEDDING", dict(table=table, idx=idx, out=out), dict(
        n=idx.type.numel, vocab=vocab, dim=dim, row_stride=table.strides[0], col_stride=table.strides[1]))


@encoder("planned.cast")
def _cast(op, args, out, ctx):
    from ..abi import ENUMS
    x = args[0]
    for t in (x.type, out.type):
        if t.dtype not in ENUMS["dtype"]:
            raise _fail(op, f"no kernel casts {t.dtype}")
    return Encoded("CAST", dict(x=x, out=out), dict(n=out.type.numel, src=x.type.dtype, dst=out.type.dtype))



# ---- vision: convolution, pooling, resampling, padding ----------------------------------------
def _nchw(layout: str, v: Operand) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A spatial operand's (n, c, h, w) extents and strides, whatever its layout."""
    from ..dialects.fused_ops import to_nchw
    return to_nchw(v.type.shape, layout), to_nchw(v.strides, layout)


def _spatial(op: Operation, x: Operand, out: Operand) -> tuple[dict, dict]:
    """(the op's attributes, the extents and strides of its x and out as the C spatial families name them)."""
    at = REGISTRY[op.name].with_defaults(op.attrs)
    (n, c, h, w), xs = _nchw(at["layout"], x)
    (_, o, oh, ow), os_ = _nchw(at["layout"], out)
    return at, dict(N=n, C=c, H=h, W=w, OH=oh, OW=ow, **dict(zip(("x_sn", "x_sc", "x_sh", "x_sw"), xs)),
                    **dict(zip(("o_sn", "o_sc", "o_sh", "o_sw"), os_)))


def _contiguous(op: Operation, name: str, v: Operand | None) -> None:
    from ..dialects.strides import is_contiguous
    if v is not None and not is_contiguous(v.type.shape, v.strides):
        raise _fail(op, f"{name} must be contiguous")


@encoder("planned.conv2d", "planned.conv_transpose2d")
def _conv2d(op, args, out, ctx):
    x, w, bias, res = padded(args, 4)
    _need_f32(op, x, w, bias, res, out)
    if not ctx.target.onednn:
        raise _fail(op, "convolutions run on oneDNN, which this target does not have")
    _contiguous(op, "w", w)
    _contiguous(op, "bias", bias)
    at, f = _spatial(op, x, out)
    if not is_static(list(f.values())):
        raise _fail(op, "convolutions with a dynamic size are not supported yet (oneDNN's is made for one shape)")
    if res is not None and _nchw(at["layout"], res)[1] != _nchw(at["layout"], out)[1]:
        raise _fail(op, "the residual must be laid out as the result")
    from ..dialects.fused_ops import conv_out_channels
    kh, kw = w.type.shape[2:]
    (pt, pb, pl, pr), (sh, sw), (dh, dw) = at["padding"], at["stride"], at["dilation"]
    oph, opw = at.get("output_padding", (0, 0))
    clamp = at["act"] == "clamp"
    wino_tile = op.attrs.get("winograd") or 0       # the planner's choice, kept in the plan
    return Encoded("CONV", dict(x=x, w=w, bias=bias, residual=res, scratch=_scratch(op)[0] if wino_tile else None,
                                out=out), dict(
        f, O=conv_out_channels(op.name, w.type.shape, at["groups"]), KH=kh, KW=kw, sh=sh, sw=sw, pt=pt, pb=pb,
        pl=pl, pr=pr, dh=dh, dw=dw, G=at["groups"], act=at["act"], transposed="output_padding" in at, oph=oph,
        opw=opw, alpha=float(at["clamp_min"]) if clamp else 0.0, beta=float(at["clamp_max"]) if clamp else 0.0,
        wino_tile=wino_tile))


def _pool_fields(at: dict, f: dict, adaptive: bool) -> dict:
    if adaptive:
        return dict(f, KH=0, KW=0, sh=0, sw=0, pt=0, pb=0, pl=0, pr=0, dh=0, dw=0, adaptive=True, count_pad=False,
                    divisor=0)
    (kh, kw), (sh, sw), (pt, pb, pl, pr), (dh, dw) = at["kernel"], at["stride"], at["padding"], at["dilation"]
    return dict(f, KH=kh, KW=kw, sh=sh, sw=sw, pt=pt, pb=pb, pl=pl, pr=pr, dh=dh, dw=dw, adaptive=False,
                count_pad=bool(at.get("count_include_pad", False)), divisor=int(at.get("divisor", 0)))


@encoder("planned.max_pool2d", "planned.avg_pool2d", "planned.adaptive_max_pool2d", "planned.adaptive_avg_pool2d")
def _pool2d(op, args, out, ctx):
    _need_f32(op, args[0], out)
    at, f = _spatial(op, args[0], out)
    kind = "MAX_POOL" if "max" in op.name else "AVG_POOL"
    return Encoded(kind, dict(x=args[0], out=out), _pool_fields(at, f, "adaptive" in op.name))


@encoder("planned.upsample2d")
def _upsample2d(op, args, out, ctx):
    from ..dialects.fused_ops import upsample_scale
    _need_f32(op, args[0], out)
    at, f = _spatial(op, args[0], out)
    scales = list(at["scales"]) or [None, None]
    corners = at["align_corners"] and at["mode"] == "bilinear"
    return Encoded("RESAMPLE", dict(x=args[0], out=out), dict(
        f, mode=at["mode"], align_corners=corners, scale_h=upsample_scale(f["H"], f["OH"], scales[0], corners),
        scale_w=upsample_scale(f["W"], f["OW"], scales[1], corners)))


@encoder("planned.pad")
def _pad(op, args, out, ctx):
    x = args[0]
    _need_f32(op, x, out)
    _check_rank(op, x.type.rank)
    at = REGISTRY[op.name].with_defaults(op.attrs)
    return Encoded("PAD", dict(x=x, out=out), dict(ndim=x.type.rank, shape=out.type.shape, in_shape=x.type.shape,
                                                   lo=at["lo"], stride=x.strides, mode=at["mode"],
                                                   value=float(at["value"])))


@encoder("planned.group_norm")
def _group_norm(op, args, out, ctx):
    """[N, C, H, W] (either layout) as [N, C, S]: H and W must merge into one stride (they do in x's own
    layout, and in a permute view of the other)."""
    x, g, b = padded(args, 3)
    _need_f32(op, x, g, b, out)
    _contiguous(op, "gamma", g)
    _contiguous(op, "beta", b)
    at, f = _spatial(op, x, out)
    if f["H"] > 1 and f["W"] > 1 and (f["x_sh"] != f["x_sw"] * f["W"] or f["o_sh"] != f["o_sw"] * f["W"]):
        raise _fail(op, "H and W must be one strided run")
    s = "w" if f["W"] > 1 else "h"
    return Encoded("GROUP_NORM", dict(x=x, gamma=g, beta=b, out=out), dict(
        N=f["N"], C=f["C"], S=f["H"] * f["W"], G=at["groups"], x_sn=f["x_sn"], x_sc=f["x_sc"], x_ss=f[f"x_s{s}"],
        o_sn=f["o_sn"], o_sc=f["o_sc"], o_ss=f[f"o_s{s}"], eps=float(at["eps"])))
