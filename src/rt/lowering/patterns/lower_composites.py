"""lower-composites: the composite ops fusion left over (no kernel of their own) become kernels: pow
with a small exponent -> mul/sqrt/rsqrt/div, a last-dim mean/sum -> a matmul with a ones vector."""
from __future__ import annotations

import math
import numpy as np

from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import N, Pattern, apply_patterns


def _pow_lower(m, b):
    e = m.attr("p", "exponent")
    x = m["$x"]
    if e == 1.0:
        return x
    if e == 2.0:
        return b.op("fused.mul", [x, x])
    if e == 3.0:
        return b.op("fused.mul", [b.op("fused.mul", [x, x]), x])
    if e == 0.5:
        return b.op("fused.sqrt", [x])
    if e == -0.5:
        return b.op("fused.rsqrt", [x])
    if e == -1.0:
        return b.op("fused.div", [b.const(np.array(1, x.type.np_dtype), "scalar"), x])
    return None


def _reduce_lower(m, b):
    """mean/sum over the last dim = x[M, N] @ ones[N, 1] (alpha = 1/N for mean): a GEMV."""
    r = m.op("r")
    x = m["$x"]
    if x.type.dtype != "f32" or list(m.attr("r", "dims")) != [x.type.rank - 1] or x.type.rank < 1:
        return None
    n = x.type.shape[-1]
    rows = math.prod(x.type.shape[:-1])
    ones = b.const(np.ones((n, 1), np.float32), "ones")
    alpha = 1.0 / n if r.name == "fused.mean" else 1.0
    y = b.op("fused.matmul", [b.reshape(x, [rows, n]), ones], {"alpha": alpha})
    return b.reshape(y, r.result.type.shape)


LOWER_COMPOSITES = [
    Pattern("pow-to-kernels", "p", {"p": N("fused.pow", ["$x"])}, _pow_lower),
    Pattern("mean-sum-to-matmul", "r", {"r": N(("fused.mean", "fused.sum"), ["$x"])}, _reduce_lower),
]


@register_pass("lower-composites", dialect="fused")
def lower_composites(module: Module):
    """pow with small exponents -> mul/sqrt/rsqrt; last-dim mean/sum -> matmul with a ones vector."""
    apply_patterns(module, LOWER_COMPOSITES)
