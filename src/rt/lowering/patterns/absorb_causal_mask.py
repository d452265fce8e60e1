"""absorb-causal-mask: an attention whose constant mask is the causal pattern becomes causal = true
with no mask operand (the kernel then skips the masked blocks instead of adding -inf)."""
from __future__ import annotations

import numpy as np

from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import N, Pattern, apply_patterns


def is_causal_mask(arr: np.ndarray, sq: int, sk: int, big: float = -1e4) -> bool:
    """True if the additive mask is exactly 'query i sees keys j <= i' for every broadcast slice."""
    if arr is None or arr.dtype != np.float32 or arr.shape[-2:] not in ((sq, sk), (1, sk)) or arr.ndim < 2:
        return False
    a = np.broadcast_to(arr, arr.shape[:-2] + (sq, sk))
    open_ = np.tril(np.ones((sq, sk), dtype=bool))
    return bool(np.all(a[..., open_] == 0) and np.all(a[..., ~open_] <= big))


def _absorb_causal(m, b):
    """A constant mask, or the leading corner of one folded at the largest size (then Sq and Sk are
    the same size, and every leading corner of a causal square is causal)."""
    a = m.op("a")
    q, k = m["$q"], m["$k"]
    sq, sk = q.type.shape[-2], k.type.shape[-2]
    mask = m.array("$mask")
    if mask is None:        # the corner must be [0:Sq, 0:Sk] of a square, with Sq = Sk
        mask = m.module.corner_of(m["$mask"])
        if (mask is None or sq != sk or mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]
                or m["$mask"].type.shape[-2:] != (sq, sk)):
            return None
        sq = sk = mask.shape[-1]
    if not is_causal_mask(mask, sq, sk):
        return None
    return b.op("fused.attention", [q, k, m["$v"]], {**a.attrs, "causal": True})


CAUSAL = [Pattern("absorb-causal-mask", "a", {"a": N("fused.attention", ["$q", "$k", "$v", "$mask"])},
                  _absorb_causal)]


@register_pass("absorb-causal-mask", dialect="fused")
def absorb_causal_mask(module: Module):
    """An attention whose constant mask is the causal pattern becomes causal = true, no mask."""
    apply_patterns(module, CAUSAL)
