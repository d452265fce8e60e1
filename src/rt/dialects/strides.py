"""Strides: the layout facts shared by the dialects' view ops, the planner and the executors."""
from __future__ import annotations

import math

import numpy as np

from .symbolic import Sym


def contiguous_strides(shape) -> tuple[int, ...]:
    strides, acc = [], 1
    for d in reversed(tuple(shape)):
        strides.append(acc)
        acc *= d if isinstance(d, Sym) else max(int(d), 1)     # a dynamic size is >= 1
    return tuple(reversed(strides))


def is_contiguous(shape, strides) -> bool:
    """Whether `strides` (None = contiguous) lay `shape` out row-major with no gaps (size-1 dims ignored)."""
    if strides is None:
        return True
    want = contiguous_strides(shape)
    return all(s == w for d, s, w in zip(shape, strides, want) if d != 1)


def reshape_strides(old_shape, old_strides, new_shape) -> tuple[int, ...] | None:
    """Strides that let `new_shape` read the storage of (old_shape, old_strides), or None (torch's
    computeStride rule: only dims that are contiguous with each other may be merged)."""
    old_shape, new_shape = tuple(old_shape), tuple(new_shape)
    if old_strides is None:
        return contiguous_strides(new_shape)
    if math.prod(old_shape) == 0 or len(old_shape) == 0:
        return contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk = old_strides[-1]
    tensor_numel, view_numel = 1, 1
    for tensor_d in range(len(old_shape) - 1, -1, -1):
        tensor_numel *= old_shape[tensor_d]
        if tensor_d == 0 or (old_shape[tensor_d - 1] != 1
                             and old_strides[tensor_d - 1] != tensor_numel * chunk):
            # `!=` rather than `<`: the same for sizes >= 1 (an overshoot never comes back), and decidable
            # for dynamic ones
            while view_d >= 0 and (view_numel != tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk = old_strides[tensor_d - 1]
                tensor_numel, view_numel = 1, 1
    if view_d != -1:
        return None
    return tuple(new_strides)


def row_groups(shape: tuple[int, ...], strides: tuple[int, ...]) -> tuple[int, int, int] | None:
    """The rows of a [..., cols] operand with unit stride in cols as [rows / group, group] with strides
    (group stride, row stride): (group, group stride, row stride), or None when its row dims need
    more levels than two (or cols is not contiguous)."""
    cols = shape[-1] if shape else 1
    if cols > 1 and strides[-1] != 1:
        return None
    if any(d == 0 for d in shape):
        return 1, cols, cols
    merged: list[list[int]] = []          # [size, stride] of row dims, outer first
    for d, s in zip(shape[:-1], strides[:-1]):
        if d == 1:
            continue
        if merged and merged[-1][1] == s * d:
            merged[-1] = [merged[-1][0] * d, s]
        else:
            merged.append([d, s])
    if len(merged) > 2:
        return None
    if not merged:
        return 1, cols, cols
    if len(merged) == 1:
        return merged[0][0], merged[0][0] * merged[0][1], merged[0][1]
    return merged[1][0], merged[0][1], merged[1][1]
