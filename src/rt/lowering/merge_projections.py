"""merge-projections: matmuls that read the same input with constant weights (attention's Q/K/V, a gated
MLP's gate and up) become one matmul on the weights concatenated once at compile time; each former
result is a column slice of the merged one, which its readers take by strides (no copy). One pass over
the input instead of several, and one bigger product for the kernels."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..dialects.builder import Builder
from ..dialects.ir import Module, Operation, padded, replace_all_uses
from .passmanager import register_pass

MM = "fused.matmul"


def _key(module: Module, op: Operation):
    """What matmuls must share to merge, or None when this one cannot: the input, the weight's
    orientation, alpha, and a bias or not (no residual, no activation, 2-D constant weight)."""
    if op.name != MM:
        return None
    a, w, bias, res = padded(op.operands, 4)
    arr = module.const_value(w)
    at = op.attrs
    if (arr is None or arr.ndim != 2 or res is not None or at.get("act", "none") != "none"
            or at.get("transpose_a", False) or a.type.rank != 2 or arr.dtype != np.float32
            or (bias is not None and module.const_value(bias) is None)):
        return None
    return (id(a), bool(at.get("transpose_b", False)), float(at.get("alpha", 1.0)), bias is not None)


@register_pass("merge-projections", dialect="fused")
def merge_projections(module: Module) -> None:
    groups: dict[tuple, list[Operation]] = defaultdict(list)
    for op in module.ops:
        key = _key(module, op)
        if key is not None:
            groups[key].append(op)
    names = {v.name for v in module.values()}
    for (_, tb, alpha, has_bias), ops in groups.items():
        if len(ops) < 2:
            continue
        first = ops[0]
        weights = [module.const_value(o.operands[1]) for o in ops]
        widths = [w.shape[0] if tb else w.shape[1] for w in weights]
        b = Builder(module, names, "+".join(o.result.name for o in ops))
        hint = first.operands[1].producer.attrs["name"]
        w = b.const(np.concatenate(weights, axis=0 if tb else 1), hint=hint + ".merged")
        bias = b.const(np.concatenate([module.const_value(o.operands[2]) for o in ops]), hint=hint + ".merged_bias") \
            if has_bias else None
        merged = b.op(MM, [first.operands[0], w, bias], {k: v for k, v in first.attrs.items()})
        slices, start = [], 0
        for o, n in zip(ops, widths):
            sl = b.op("fused.slice", [merged], {"dim": 1, "start": start, "end": start + n})
            slices.append(b.rename(sl, o.result.name))   # each former result's name goes to its slice
            start += n
        at = module.ops.index(first)
        module.ops[at:at] = b.new_ops
        for o, s in zip(ops, slices):
            replace_all_uses(module, o.result, s)
            module.ops.remove(o)
    module.invalidate_names()
