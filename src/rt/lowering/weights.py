"""Constant weights of one-row matmuls stored in the layout the kernel reads fastest, transposed once at
compile time.

A one-row product (S=1 decoding) is OpenBLAS's gemv, bandwidth-bound, and its two kernels differ
(`python benchmarks/matmul_modes.py --m 1`, weights cold as in a model): a [K, N] weight streams at 26-32 GB/s
when the output is at least as wide as the contraction (GPT-2's c_attn 768x2304, c_fc 768x3072, the 768x768
projections, the 768x50257 LM head) and an [N, K] one (read with transpose_b) at 20-23; for a narrow output
(c_proj 3072x768) it is the other way round, 28.5 vs 21.3. Weights that arrive as [K, N] (GPT-2's Conv1D) or
as [N, K] (nn.Linear, read with transpose_b) are turned whichever way wins, when the matmul is their only
reader or the others only gather rows from them (a tied embedding). Products of several rows keep their
weights as they arrive: oneDNN packs either layout into its own when the program is built, so a transposed
copy here would only cost memory. (With BLAS, in a `-Donednn=false` build, [N, K] was ~9% faster for
N >= K: GPT-2 S=64 c_fc 2.62 -> 2.39 ms.) One-row products that will read their weight in the split form
(`Target.split_worthy` for the module's meta["target"]: rt re-lays it out when the program is built) keep it as it arrives too.
"""
from __future__ import annotations

import math
import numpy as np

from ..dialects.ir import Module, Operation, Value
from ..target import Target
from .passmanager import register_pass
from ..dialects.builder import Builder


def _one_row(op: Operation) -> bool:
    return math.prod(op.result.type.shape[:-1]) == 1


def _other_readers_are_embeddings(op: Operation, w: Value, readers: list[Operation]) -> bool:
    """Whether w's readers besides the matmul `op` only gather rows from it as an embedding table (a
    tied LM head): they can read the transposed copy through a permute view, so one copy serves all."""
    return all(u is op or (u.name == "fused.embedding" and u.operands[0] is w and u.operands[1] is not w)
               for u in readers) and sum(u is op for u in readers) == 1 and op.operands[0] is not w


def _store_transposed(module: Module, names: set[str], users: dict, op: Operation, w: Value,
                      arr: np.ndarray) -> None:
    """matmul op reads the transpose of its constant weight w (flipping transpose_b); the transposed
    copy (and the tables' permuted view of it) take the original's place."""
    b = Builder(module, names, w.name)
    wt = b.const(np.ascontiguousarray(arr.T), hint=w.producer.attrs["name"] + ".T")
    op.operands[1] = wt
    if op.attrs.get("transpose_b", False):
        del op.attrs["transpose_b"]
    else:
        op.attrs["transpose_b"] = True
    tables = [u for u in users[w] if u is not op]
    if tables:
        table = b.op("fused.permute", [wt], {"perm": [1, 0]})
        for u in tables:
            u.operands[0] = table
    at = module.ops.index(w.producer)
    module.ops[at + 1:at + 1] = b.new_ops


@register_pass("layout-weights", dialect="fused")
def layout_weights(module: Module) -> None:
    target = module.meta.get("target") or Target()
    users = module.users()
    names = {v.name for v in module.values()}
    for op in list(module.ops):
        w = op.operands[1] if op.name == "fused.matmul" else None
        arr = module.const_value(w)
        if (arr is None or arr.ndim != 2 or not _one_row(op)
                or not _other_readers_are_embeddings(op, w, users[w])):
            continue
        stored_n_by_k = op.attrs.get("transpose_b", False)
        k, n = arr.shape[::-1] if stored_n_by_k else arr.shape
        if (k > n) == stored_n_by_k or target.split_worthy(n, k):      # [N, K] only for a narrow output
            continue
        _store_transposed(module, names, users, op, w, arr)
    module.invalidate_names()


def weights_n_by_k(module: Module) -> int:
    """Every matmul's constant 2-D weight stored [N, K] (read with transpose_b), transposed once where it
    arrives [K, N] (GPT-2's Conv1D), where the matmul is its only reader or the others only gather rows
    from it. For programs that read each weight in place and share it (a generator's prefill on
    oneDNN, decode on gemv): oneDNN reads [N, K] in place as fast as its packed copy, [K, N] at up to
    half that (`benchmarks/matmul_modes.py --m 128`), and gemv streams both at 25-27 GB/s. Returns the
    number of weights transposed; the originals are left to dead-code elimination."""
    users = module.users()
    names = {v.name for v in module.values()}
    moved = 0
    for op in list(module.ops):
        w = op.operands[1] if op.name == "fused.matmul" else None
        arr = module.const_value(w)
        if (arr is None or arr.ndim != 2 or op.attrs.get("transpose_b", False)
                or not _other_readers_are_embeddings(op, w, users[w])):
            continue
        _store_transposed(module, names, users, op, w, arr)
        moved += 1
    module.invalidate_names()
    return moved
