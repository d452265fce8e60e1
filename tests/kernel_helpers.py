"""Helpers of the kernel tests: one-op programs whose operands and fields are named (rt/abi.py)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from rt.abi import ENUMS, OP_BY_NAME
from rt.dialects.strides import contiguous_strides
from rt.kernels import Program, make_record
from rt.kernels.records import op_name

def _array_and_offset(spec) -> tuple[np.ndarray | None, int]:
    if spec is None or isinstance(spec, np.ndarray):
        return spec, 0
    arr, off = spec
    return arr, off


def build_program(op: str, operands: Mapping[str, Any], constant: Iterable[str] = (),
                  **fields) -> tuple[Program, list[np.ndarray], list[np.ndarray]]:
    """A one-op Program. operands: the family's arg names -> array, (array, byte offset), or None
    (absent; so is a name left out). Operands that are the same array share its slot; the operands
    named in `constant` are bound as constants (when the program is built); the arrays of operands the
    kernel writes (rt.abi: the out, and e.g. ADD_LAYER_NORM's sum) are outputs, every other array an
    input. Returns the program, its inputs and its outputs (in slot order)."""
    placed = {name: _array_and_offset(spec) for name, spec in operands.items()}
    arrays: list[np.ndarray] = []
    for arr, _ in placed.values():
        if arr is not None and not any(arr is a for a in arrays):
            arrays.append(arr)

    def slot_of(arr: np.ndarray) -> int:
        return 1 + next(j for j, a in enumerate(arrays) if a is arr)

    rec = make_record(op, {name: None if arr is None else (slot_of(arr), off)
                           for name, (arr, off) in placed.items()}, **fields)
    written = {f.name for f in OP_BY_NAME[op].family.args if f.written}
    outs = [a for a in arrays if any(a is placed[n][0] for n in written if n in placed)]
    consts = {slot_of(placed[name][0]): placed[name][0] for name in constant}
    inputs = [a for a in arrays if not any(a is o for o in outs) and slot_of(a) not in consts]
    prog = Program(rec, [0] + [a.nbytes for a in arrays], consts, [slot_of(a) for a in inputs],
                   [slot_of(a) for a in outs])
    return prog, inputs, outs


def run_program(op: str, operands: Mapping[str, Any], constant: Iterable[str] = (), **fields) -> Program:
    """build_program, then one run (writing into the written operands' arrays); returns the program."""
    prog, inputs, outs = build_program(op, operands, constant, **fields)
    prog.run(inputs, outs)
    return prog


def matmul_fields(M: int, N: int, K: int, /, trans_b: bool = False, **changes) -> dict:
    """Every MATMUL field for one plain product of contiguous x[M, K] and w ([K, N], or [N, K] with
    trans_b) into out[M, N]: BLAS, no activation, alpha 1; `changes` overrides any field."""
    fields = dict(b1=1, b2=1, M=M, N=N, K=K, trans_a=False, trans_b=trans_b, lda=K, ldb=K if trans_b else N,
                  ldc=N, sa1=0, sa2=0, sb1=0, sb2=0, sc1=0, sc2=0, act="none", b_mode="blas", alpha=1.0)
    unknown = set(changes) - set(fields)
    assert not unknown, f"not MATMUL fields: {unknown}"
    fields.update(changes)
    return fields


def attention_fields(*, B, H, Sq, Sk, D, Dv, q, k, v, o, causal, mask=(0, 0, 0, 0), scale, threads=2,
                     kv_group=1) -> dict:
    """Every ATTENTION field; q, k, v, o: (batch, head, seq) element strides, mask: (batch, head,
    query, key) strides."""
    fields = dict(B=B, H=H, Sq=Sq, Sk=Sk, D=D, Dv=Dv, causal=bool(causal), threads=threads, kv_group=kv_group,
                  scale=scale)
    for prefix, (sb, sh, ss) in (("q", q), ("k", k), ("v", v), ("o", o)):
        fields.update({f"{prefix}_sb": sb, f"{prefix}_sh": sh, f"{prefix}_ss": ss})
    fields.update(m_sb=mask[0], m_sh=mask[1], m_sq=mask[2], m_sk=mask[3])
    return fields


def copy_fields(shape, stride, itemsize: int, out_stride=None) -> dict:
    """Every COPY field: items of `shape` read through element strides `stride`, written through
    `out_stride` (default: a contiguous out)."""
    return dict(ndim=len(shape), shape=shape, stride=stride,
                out_stride=contiguous_strides(shape) if out_stride is None else out_stride, itemsize=itemsize)


def set_raw_field(rec: np.ndarray, name: str, value: int, element: int = 0) -> None:
    """Write a raw int into int field `name` (element `element` of an array field) of a one-record
    array, past make_record's enum names: for records C must refuse."""
    r = rec.reshape(-1)[0]
    at, f = OP_BY_NAME[op_name(r)].family.int_offsets()[name]
    assert 0 <= element < f.count
    r["ip"][at + element] = value


def zero_fields(op: str) -> dict:
    """Every field of op's family at zero (enums at their first name, flags off)."""
    fam = OP_BY_NAME[op].family
    out: dict[str, Any] = {}
    for f in fam.ints:
        if f.count > 1:
            out[f.name] = [0] * f.count
        elif f.enum == "bool":
            out[f.name] = False
        elif f.enum:
            out[f.name] = ENUMS[f.enum][0]
        else:
            out[f.name] = 0
    out.update({f.name: 0.0 for f in fam.floats})
    return out


def empty(shape, dtype=np.float32) -> np.ndarray:
    """Outputs start as NaN so an element the kernel forgets to write fails the test."""
    return np.full(shape, np.nan, dtype)
