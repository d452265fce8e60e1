"""What the planner must know of the C kernel that runs each planned op (no record layouts here:
those belong to the records step, rt.kernels.encode).

`extra["strided_operands"]`: operands the kernel reads through strides: their indices, "all", or
`accepts(index, shape, strides) -> bool` for a kernel that reads some strided layouts only (the
planner copies any other non-contiguous operand first); `extra["inplace_operands"]`: operands the kernel may overwrite with its
result (the planner reuses such an operand's buffer when it dies at the op); `extra["scratch"]`:
`scratch(op, threads) -> bytes` of arena scratch the kernel needs (0: none), which the planner places and
records in the op's `scratch = [offset, bytes, threads]` attribute; `extra["kernel_choices"]`:
`choose(op) -> attrs`, how the kernel will run the op (e.g. a convolution's Winograd tile), which the
planner records on the op before it sizes scratch, so that a saved plan keeps the choice it was made
with; `extra["updates_operand"]`: the operand whose buffer the op updates in place and returns (a KV cache write): its result is stored as
that operand.
"""
from __future__ import annotations

import math
from typing import Callable

from ..abi import (BINARY_OPS, REDUCE_OPS, SCAN_OPS, TERNARY_OPS, UNARY_OPS, WINO_MIN_CHANNELS, WINO_MIN_TILES,
                   WINO_TILES, attention_scratch_floats, conv_winograd_scratch_bytes, conv_winograd_tiles,
                   qmatmul_scratch_bytes)
from .ir import Operation
from .strides import row_groups
from .symbolic import at_largest
from .registry import REGISTRY, Attr


StridedFact = tuple[int, ...] | str | Callable[[int, tuple, tuple], bool]


def kernel_facts(name: str, strided: StridedFact = (), inplace: tuple[int, ...] = (),
                 scratch: Callable[[Operation, int], int] | None = None, updates: int | None = None,
                 choices: tuple[Callable[[Operation], dict], dict[str, Attr]] | None = None) -> None:
    opdef = REGISTRY[name]
    opdef.extra.update(strided_operands=strided, inplace_operands=inplace)
    if choices is not None:
        opdef.extra["kernel_choices"] = choices[0]
        opdef.attrs.update(choices[1])
    if updates is not None:
        opdef.extra["updates_operand"] = updates
    if scratch is not None:
        opdef.extra["scratch"] = scratch
        opdef.attrs["scratch"] = Attr("ints", None, optional=True)


def _attention_scratch(op: Operation, threads: int) -> int:
    q, k, v = (o.type for o in op.operands[:3])
    return attention_scratch_floats(*at_largest((k.shape[-2], q.shape[-1], v.shape[-1]))) * threads * 4


def _packed_matmul_scratch(op: Operation, threads: int) -> int:
    a = op.operands[0].type
    return qmatmul_scratch_bytes(op.attrs["format"], at_largest(math.prod(a.shape[:-1])), a.shape[-1])


kernel_facts("planned.matmul", strided=(0, 1), inplace=(3,))
kernel_facts("planned.matmul_packed", inplace=(3,), scratch=_packed_matmul_scratch)
for _name in UNARY_OPS:
    kernel_facts(f"planned.{_name}", inplace=(0,))
for _name in BINARY_OPS:
    kernel_facts(f"planned.{_name}", strided=(0, 1), inplace=(0, 1))
for _name in TERNARY_OPS:
    kernel_facts(f"planned.{_name}", strided=(0, 1, 2))
for _name in REDUCE_OPS:
    kernel_facts(f"planned.{_name}", strided=(0,))
for _name in SCAN_OPS:
    kernel_facts(f"planned.{_name}", strided=(0,))
kernel_facts("planned.gather", strided=(0, 1))
kernel_facts("planned.scatter", strided=(1, 2), inplace=(0,))
kernel_facts("planned.sort", strided=(0,))
kernel_facts("planned.log_softmax", inplace=(0,))
kernel_facts("planned.copy", strided=(0,))
kernel_facts("planned.cache_write", strided=(1,), updates=0)
kernel_facts("planned.cat", strided="all")
kernel_facts("planned.softmax", inplace=(0,))
kernel_facts("planned.layer_norm", inplace=(0,))
kernel_facts("planned.add_layer_norm", inplace=(0, 1))
kernel_facts("planned.rms_norm", inplace=(0,), strided=lambda j, shape, strides: j == 0 and
             row_groups(shape, strides) is not None)
kernel_facts("planned.rope", strided=(0, 1, 2), inplace=(0,))
kernel_facts("planned.attention", strided=(0, 1, 2, 3), scratch=_attention_scratch)
kernel_facts("planned.embedding", strided=(0,))
kernel_facts("planned.cast")

# ---- vision (fused_ops' spatial ops): x read through its strides; a convolution reads its operands
# as laid out by its `layout` (the layout pass makes NHWC chains; any other layout is a planned copy)
# and may add the residual into its own output.
def _conv_extents(op: Operation) -> tuple:
    """A planned conv2d's (images, output rows, output columns, channels in, channels out)."""
    from .fused_ops import to_nchw
    n, _, oh, ow = to_nchw(op.result.type.shape, REGISTRY[op.name].with_defaults(op.attrs)["layout"])
    o, c = op.operands[1].type.shape[:2]
    return n, oh, ow, c, o


def winograd_tile(op: Operation) -> int:
    """The output tile m of Winograd's F(m x m, 3x3) a planned convolution runs (abi.py, WINO_*), 0 for
    oneDNN's direct kernel: 3x3, stride 1, undilated, ungrouped, its weights a constant (transformed
    once), enough channels, and the largest m that still has enough tiles."""
    if op.name != "planned.conv2d":
        return 0
    at = REGISTRY[op.name].with_defaults(op.attrs)
    w = op.operands[1]
    kh, kw = w.type.shape[2:]
    n, oh, ow, c, o = _conv_extents(op)
    if not ((kh, kw) == (3, 3) and tuple(at["stride"]) == (1, 1) and tuple(at["dilation"]) == (1, 1)
            and at["groups"] == 1 and w.producer is not None and w.producer.name == "const"
            and all(isinstance(d, int) for d in (n, oh, ow)) and min(c, o) >= WINO_MIN_CHANNELS):
        return 0
    return next((m for m in WINO_TILES if conv_winograd_tiles(n, oh, ow, m) >= WINO_MIN_TILES), 0)


def _conv_scratch(op: Operation, threads: int) -> int:
    m = op.attrs.get("winograd") or 0      # the planner's choice (a plan without one: direct)
    return conv_winograd_scratch_bytes(*_conv_extents(op), m) if m else 0


kernel_facts("planned.conv2d", inplace=(3,), scratch=_conv_scratch,
             choices=(lambda op: {"winograd": m} if (m := winograd_tile(op)) else {},
                      {"winograd": Attr("int", None, optional=True)}))
kernel_facts("planned.conv_transpose2d", inplace=(3,))
for _name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "upsample2d", "pad"):
    kernel_facts(f"planned.{_name}", strided=(0,))
kernel_facts("planned.group_norm", strided=(0,), inplace=(0,))
