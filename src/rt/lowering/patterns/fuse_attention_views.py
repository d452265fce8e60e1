"""fuse-attention-views: attention -> transpose(1, 2) -> reshape becomes attention{merge_heads},
which writes [B, S, H*D] directly (no copy for the transpose)."""
from __future__ import annotations

from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import N, Pattern, apply_patterns
from .canonicalize import CANONICALIZE


def _merge_heads(m, b):
    a = m.op("a")
    if m.attr("a", "merge_heads") or a.result.type.rank != 4 or list(m.attr("t", "perm")) != [0, 2, 1, 3]:
        return None
    y = m.rebuild(b, "a", merge_heads=True)
    return b.reshape(y, m["t"].type.shape)


VIEWS = [Pattern("attention-merge-heads", "t", {"a": N("fused.attention", ["$q", "$k", "$v", "$m?"]),
                                                "t": N("fused.permute", ["a"])}, _merge_heads)]


@register_pass("fuse-attention-views", dialect="fused")
def fuse_attention_views(module: Module):
    """attention -> transpose(1, 2) -> reshape  =>  attention{merge_heads} writing [B, S, H*D]."""
    apply_patterns(module, VIEWS)
    apply_patterns(module, CANONICALIZE)     # the reshape chain left behind merges
