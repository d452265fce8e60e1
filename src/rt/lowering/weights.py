"""Constant matmul weights stored in the layout the BLAS reads fastest.

Measured here (docs/architecture.md): a matrix-vector product (one row) streams an [N, K] weight read
with transpose_b at a higher bandwidth than a [K, N] one read column block by column block, and for
matrix products the [N, K] layout is as fast or faster when the output is at least as wide as the
contraction (N >= K: GPT-2's c_attn and c_fc), slower when it is narrower (c_proj). GPT-2's Conv1D
weights arrive as [K, N]; this pass transposes them once, at compile time.
"""
from __future__ import annotations

import numpy as np

from ..dialects.ir import Module, Operation, TensorType, Value
from .passmanager import register_pass


def _wants_n_by_k(op: Operation, weight: np.ndarray) -> bool:
    k, n = weight.shape
    rows = int(np.prod(op.result.type.shape[:-1], dtype=np.int64))
    return rows == 1 or n >= k


@register_pass("layout-weights", dialect="fused")
def layout_weights(module: Module) -> None:
    users = module.users()
    i = 0
    while i < len(module.ops):
        op = module.ops[i]
        w = op.operands[1] if op.name == "fused.matmul" else None
        arr = module.const_value(w)
        if (arr is None or arr.ndim != 2 or op.attrs.get("transpose_b", False) or len(users[w]) != 1
                or not _wants_n_by_k(op, arr)):
            i += 1
            continue
        name = module.add_constant(np.ascontiguousarray(arr.T), hint=w.producer.attrs["name"] + ".T")
        wt = Value(module.fresh_name(w.name + "_t"), TensorType((arr.shape[1], arr.shape[0]), w.type.dtype))
        const = Operation("const", [], {"name": name}, wt)
        wt.producer = const
        module.ops.insert(i, const)
        op.operands[1] = wt
        op.attrs["transpose_b"] = True
        i += 2
