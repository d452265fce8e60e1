"""fuse-attention: matmul(q, k^T) -> scale -> [+ mask] -> softmax -> matmul(., v) becomes one
fused.attention (the scale was absorbed into the first matmul's alpha by absorb-matmul-operands)."""
from __future__ import annotations

import numpy as np

from ...dialects.ir import Module
from ...dialects.registry import broadcast_shapes
from ..passmanager import register_pass
from ..rewrite import Const, N, Pattern, apply_patterns

MM = "fused.matmul"


def _mask_fits(mask, scores) -> bool:
    """An f32 additive mask that broadcasts to the scores' shape."""
    if mask.type.dtype != "f32":
        return False
    try:
        return tuple(broadcast_shapes(mask.type.shape, scores)) == tuple(scores)
    except ValueError:
        return False


def _fill_as_additive(m, b):
    """scores * keep + fill with constant keep (0/1) and fill (0 where kept, <= -1e4 elsewhere): under
    softmax the same as adding a 0 / -inf mask; None if the constants are anything else."""
    keep, fill = m.array("$keep"), m.array("$fill")
    if keep is None or fill is None:
        return None
    kb = np.broadcast_to(keep, np.broadcast_shapes(keep.shape, fill.shape))
    fb = np.broadcast_to(fill, kb.shape)
    if not (np.all((kb == 0) | (kb == 1)) and np.all(fb[kb == 1] == 0) and np.all(fb[kb == 0] <= -1e4)):
        return None
    return b.const(np.where(kb == 1, 0.0, -np.inf).astype(np.float32), "mask")


def _attention(mask_kind: str):
    def rw(m, b):
        q, k, v = m["$q"], m["$k"], m["$v"]
        if not m.attr("sc", "transpose_b"):
            perm = list(range(k.type.rank))
            perm[-1], perm[-2] = perm[-2], perm[-1]
            k = b.op("fused.permute", [k], {"perm": perm})
        if q.type.rank not in (3, 4) or not (q.type.shape[:-2] == k.type.shape[:-2] == v.type.shape[:-2]):
            return None
        if any(t.type.dtype != "f32" for t in (q, k, v)):
            return None
        mask = None
        if mask_kind == "add":
            mask = m["$mask"]
        elif mask_kind == "fill":
            mask = _fill_as_additive(m, b)
            if mask is None:
                return None
        if mask is not None and not _mask_fits(mask, m["sc"].type.shape):
            return None
        return b.op("fused.attention", [q, k, v, mask], {"scale": float(m.attr("sc", "alpha"))})
    return rw


# scores = q @ k^T (k^T as a flag or not: the rewrite permutes k when not) times alpha; out = p @ v
_SCORES = {"sc": N(MM, ["$q", "$k"], transpose_a=False, act="none")}
_PV = N(MM, ["p", "$v"], transpose_a=False, transpose_b=False, alpha=1.0, act="none")
ATTENTION = [
    Pattern("attention", "pv", {**_SCORES, "p": N("fused.softmax", ["sc"]), "pv": _PV},
            _attention("none")),
    Pattern("attention-mask", "pv", {**_SCORES, "ms": N("fused.add", ["sc", "$mask"]), "p": N("fused.softmax", ["ms"]),
                                     "pv": _PV}, _attention("add")),
    # masked_fill(scores, const mask, -1e9) lowered as scores * keep + fill: under softmax, additive
    Pattern("attention-fill-mask", "pv", {**_SCORES, "k": N("fused.mul", ["sc", Const("$keep")]),
                                          "ms": N("fused.add", ["k", Const("$fill")]),
                                          "p": N("fused.softmax", ["ms"]), "pv": _PV},
            _attention("fill")),
]


# ---- grouped-query attention: K/V repeated per query group (HF repeat_kv: unsqueeze(2), expand,
# reshape) are read once per group instead (the kernel's kv_group) ---------------------------------
def _repeat_group(m, kv: str) -> int | None:
    """g when the "kv" chain repeats [B, Hkv, S, D] g times into [B, Hkv*g, S, D], else None."""
    src, unsq, exp, out = m[f"${kv}"].type, m[f"{kv}u"].type, m[f"{kv}e"].type, m[f"{kv}r"].type
    if src.rank != 4:
        return None
    b, h, s, d = src.shape
    g = exp.shape[2] if exp.rank == 5 else 0
    ok = unsq.shape == (b, h, 1, s, d) and exp.shape == (b, h, g, s, d) and out.shape == (b, h * g, s, d)
    return g if ok and g >= 1 else None


def _grouped(m, b):
    a = m.op("out")
    gk, gv = _repeat_group(m, "k"), _repeat_group(m, "v")
    if gk is None or gk != gv or a.attrs.get("kv_group", 1) != 1:
        return None
    return m.rebuild(b, "out", {1: m["$k"], 2: m["$v"]}, kv_group=gk)


_REPEAT = {f"{kv}{n}": node for kv in ("k", "v") for n, node in (
    ("u", N("fused.reshape", [f"${kv}"])), ("e", N("fused.expand", [f"{kv}u"])), ("r", N("fused.reshape", [f"{kv}e"])))}
ATTENTION.append(Pattern("attention-grouped-kv", "out", {**_REPEAT, "out": N("fused.attention", ["$q", "kr", "vr", "$mask?"])},
                         _grouped))


@register_pass("fuse-attention", dialect="fused")
def fuse_attention(module: Module):
    """matmul(q, k^T) -> scale -> [+ mask] -> softmax -> matmul(., v)  =>  fused.attention."""
    apply_patterns(module, ATTENTION)
