"""absorb-matmul-operands: a transpose of a matmul operand becomes a transpose flag, a scalar multiply
or divide around a matmul becomes its alpha; after a matmul with a bias (alpha would not scale it), it
scales the constant weight and bias instead, when nothing else reads them (a query scaled after its
projection, as Whisper's)."""
from __future__ import annotations

import numpy as np

from ...dialects.ir import Module
from ..passmanager import register_pass
from ..rewrite import Const, N, Pattern, Scalar, apply_patterns

MM = "fused.matmul"


def _swap_last_two(perm) -> bool:
    n = len(perm)
    return n >= 2 and list(perm) == list(range(n - 2)) + [n - 1, n - 2]


def _absorb_transpose(which: int):
    flag = "transpose_a" if which == 0 else "transpose_b"

    def rw(m, b):
        if not _swap_last_two(m.attr("t", "perm")):
            return None
        return m.rebuild(b, "mm", {which: m["$x"]}, **{flag: not m.attr("mm", flag)})
    return rw


def _scale_out(divide: bool, through_reshape: bool):
    def rw(m, b):
        s = m.scalar("$s")
        if divide and s == 0:
            return None
        src = m["src"] if through_reshape else m["mm"]
        if m["$s"].type.dtype != "f32" or m["u"].type.shape != src.type.shape:
            return None
        alpha = m.attr("mm", "alpha") * (1.0 / s if divide else s)
        y = m.rebuild(b, "mm", alpha=float(alpha))
        return b.reshape(y, m["u"].type.shape) if through_reshape else y
    return rw


def _scale_weights(divide: bool, through_reshape: bool):
    def rw(m, b):
        s = m.scalar("$s")
        src = m["src"] if through_reshape else m["mm"]
        w, c = m["$w"], m["$c"]
        if (divide and s == 0) or m["$s"].type.dtype != "f32" or m["u"].type.shape != src.type.shape \
                or w.type.dtype != "f32" or c.type.dtype != "f32":
            return None
        if any(v is w or v is c for op in m.module.ops if op is not m.op("mm") for v in op.operands):
            return None                   # a shared weight or bias: scaling it would need a second copy
        f = np.float32(1.0 / s if divide else s)
        scaled = [b.const((m.array(k) * f).astype(np.float32), hint=f"{m[k].producer.attrs['name']}.scaled")
                  for k in ("$w", "$c")]
        y = m.rebuild(b, "mm", {1: scaled[0], 2: scaled[1]})
        return b.reshape(y, m["u"].type.shape) if through_reshape else y
    return rw


def _scale_in(which: int, divide: bool):
    def rw(m, b):
        s = m.scalar("$s")
        x = m["$x"]
        if (divide and s == 0) or m["sc"].type != x.type:
            return None
        alpha = m.attr("mm", "alpha") * (1.0 / s if divide else s)
        return m.rebuild(b, "mm", {which: x}, alpha=float(alpha))
    return rw


ABSORB_MATMUL = [
    Pattern("transpose-into-matmul-a", "mm", {"t": N("fused.permute", ["$x"]), "mm": N(MM, ["t", "$b", "$c?", "$r?"])},
            _absorb_transpose(0), shared=("t",)),
    Pattern("transpose-into-matmul-b", "mm", {"t": N("fused.permute", ["$x"]), "mm": N(MM, ["$a", "t", "$c?", "$r?"])},
            _absorb_transpose(1), shared=("t",)),
]
for _div, _op in ((False, "fused.mul"), (True, "fused.div")):
    _n = _op[len("fused."):]
    ABSORB_MATMUL += [
        Pattern(f"{_n}-scalar-into-matmul", "u",
                {"mm": N(MM, ["$a", "$b"], act="none"), "u": N(_op, ["mm", Scalar(capture="$s")], commutative=not _div)},
                _scale_out(_div, False)),
        Pattern(f"{_n}-scalar-into-matmul-through-reshape", "u",
                {"mm": N(MM, ["$a", "$b"], act="none"), "src": N("fused.reshape", ["mm"]),
                 "u": N(_op, ["src", Scalar(capture="$s")], commutative=not _div)},
                _scale_out(_div, True)),
        Pattern(f"{_n}-scalar-into-matmul-weights", "u",
                {"mm": N(MM, ["$a", Const("$w"), Const("$c")], act="none"),
                 "u": N(_op, ["mm", Scalar(capture="$s")], commutative=not _div)},
                _scale_weights(_div, False)),
        Pattern(f"{_n}-scalar-into-matmul-weights-through-reshape", "u",
                {"mm": N(MM, ["$a", Const("$w"), Const("$c")], act="none"), "src": N("fused.reshape", ["mm"]),
                 "u": N(_op, ["src", Scalar(capture="$s")], commutative=not _div)},
                _scale_weights(_div, True)),
        Pattern(f"{_n}-scalar-into-matmul-a", "mm",
                {"sc": N(_op, ["$x", Scalar(capture="$s")], commutative=not _div), "mm": N(MM, ["sc", "$b"], act="none")},
                _scale_in(0, _div), shared=("sc",)),
        Pattern(f"{_n}-scalar-into-matmul-b", "mm",
                {"sc": N(_op, ["$x", Scalar(capture="$s")], commutative=not _div), "mm": N(MM, ["$a", "sc"], act="none")},
                _scale_in(1, _div), shared=("sc",)),
    ]


@register_pass("absorb-matmul-operands", dialect="fused")
def absorb_matmul_operands(module: Module):
    """Transposes of matmul operands -> transpose flags; scalar mul/div around a matmul -> alpha."""
    apply_patterns(module, ABSORB_MATMUL)
