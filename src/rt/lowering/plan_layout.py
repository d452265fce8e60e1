"""Layout facts the planner needs: contiguous strides, view resolution through the registry."""
from __future__ import annotations

from ..dialects.ir import TensorType


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(strides))


def is_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None) -> bool:
    if strides is None:
        return True
    want = contiguous_strides(shape)
    return all(s == w for d, s, w in zip(shape, strides, want) if d != 1)


def span_elements(ttype: TensorType, strides: tuple[int, ...] | None) -> int:
    """Elements from the first to one past the last element reachable with these strides."""
    if ttype.numel == 0:
        return 0
    if strides is None:
        return ttype.numel
    return 1 + sum((d - 1) * s for d, s in zip(ttype.shape, strides))
