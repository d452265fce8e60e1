"""Constant folding through the registry's numpy references, and dead-code elimination.

An op folds when every operand is a constant: its reference implementation runs once and a `const`
replaces it. Fold-only ops (arange, comparisons, cumsum, index, expand, casts, ...) always fold; a
view of a large constant (a weight) does not, so a transposed weight is read through strides (or its
transpose is absorbed into a matmul) instead of being copied.
"""
from __future__ import annotations

import numpy as np

from ..dialects.ir import Module, Operation, TensorType, Value, remap
from ..dialects.registry import FOLD_ONLY, REGISTRY, SHAPE_ONLY, VIEW
from ..errors import LoweringError
from .passmanager import register_pass

BIG_VIEW = 1 << 16     # elements: a view of a constant larger than this stays a view


def _const_op(module: Module, array: np.ndarray, name_hint: str, result_name: str) -> Operation:
    cname = module.add_constant(np.asarray(array, order="C"), name_hint)
    v = Value(result_name, TensorType.of(array))
    op = Operation("const", [], {"name": cname}, v)
    v.producer = op
    return op


def fold_constants(module: Module) -> int:
    """Fold every op whose operands are all constants. Returns the number of folded ops."""
    folded = 0
    new_ops: list[Operation] = []
    replace: dict[Value, Value] = {}
    for op in module.ops:
        if replace:
            op.operands = remap(op.operands, replace)
        if op.name == "const":
            new_ops.append(op)
            continue
        opdef = REGISTRY.get(op.name)
        shape_only = opdef is not None and opdef.has(SHAPE_ONLY)
        present = op.present_operands()
        arrays = [module.const_value(v) if v is not None else None for v in op.operands]
        consts_ok = shape_only or all(a is not None for v, a in zip(op.operands, arrays) if v is not None)
        if opdef is None or opdef.reference is None or not consts_ok:
            new_ops.append(op)
            continue
        if (opdef.has(VIEW) and not opdef.has(FOLD_ONLY) and present
                and op.result.type.numel > BIG_VIEW):
            new_ops.append(op)
            continue
        if shape_only:
            arrays = [None if v is None else np.zeros(v.type.shape, v.type.np_dtype) for v in op.operands]
        try:
            out = np.asarray(opdef.reference(arrays, opdef.with_defaults(op.attrs)))
        except Exception as e:  # a reference that cannot run here: keep the op, say which
            raise LoweringError(f"constant folding {op.name} (%{op.result.name}) failed: {e}") from e
        want = op.result.type
        if out.shape != want.shape:
            raise LoweringError(f"folding {op.name} gave shape {out.shape}, type says {want}")
        out = np.asarray(out.astype(want.np_dtype, copy=False), order="C")
        cop = _const_op(module, out, f"fold.{op.result.name}", op.result.name)
        replace[op.result] = cop.result
        new_ops.append(cop)
        folded += 1
    module.ops = new_ops
    if replace:
        module.outputs = remap(module.outputs, replace)
    module.invalidate_names()
    return folded


def dead_code_elimination(module: Module) -> int:
    """Remove ops whose result nobody uses (and constants nobody references). Returns ops removed."""
    live = set(module.outputs)
    keep: list[Operation] = []
    for op in reversed(module.ops):
        if op.result in live:
            keep.append(op)
            live.update(op.present_operands())
    removed = len(module.ops) - len(keep)
    module.ops = keep[::-1]
    used = {op.attrs["name"] for op in module.ops if op.name == "const"}
    for k in [k for k in module.constants if k not in used]:
        del module.constants[k]
    module.invalidate_names()
    return removed


def _merge_equal(module: Module, key_of) -> int:
    """Replace every op whose key (key_of(op), None = keep) was seen before by that earlier op's result."""
    seen: dict = {}
    replace: dict[Value, Value] = {}
    ops = []
    for op in module.ops:
        if replace:
            op.operands = remap(op.operands, replace)
        key = key_of(op)
        first = seen.get(key) if key is not None else None
        if first is not None and first.type == op.result.type:
            replace[op.result] = first
            continue
        if key is not None:
            seen[key] = op.result
        ops.append(op)
    module.ops = ops
    module.outputs = remap(module.outputs, replace)
    return len(replace)


def dedupe_constants(module: Module) -> int:
    """One const op per constant name (folding can create several refs to the same data)."""
    return _merge_equal(module, lambda op: op.attrs["name"] if op.name == "const" else None)


@register_pass("fold-constants")
def fold_pass(module: Module):
    """Evaluate ops whose operands are all constants (registry references); fold-only ops vanish."""
    fold_constants(module)
    dead_code_elimination(module)


@register_pass("check-folded", dialect="torch")
def check_folded(module: Module):
    """Fail, naming the op and its source line, if a fold-only op depends on a model input and no
    lowering knows it."""
    from .legalize import CONVERTERS
    bad = [op for op in module.ops if op.name != "const" and REGISTRY[op.name].has(FOLD_ONLY)
           and op.name not in CONVERTERS]
    if bad:
        src = module.meta.get("source", {})
        lines = [f"  - {op.name} (%{op.result.name}) at {src.get(op.result.name, '?')}" for op in bad]
        raise LoweringError("these ops are supported only when rt can compute them at compile time (as when "
                            "they build a mask from shapes), but here they depend on a model input:\n"
                            + "\n".join(lines))


@register_pass("dce")
def dce_pass(module: Module):
    """Dead-code elimination (ops and constants)."""
    dedupe_constants(module)
    dead_code_elimination(module)


def _attr_key(v):
    if isinstance(v, (list, tuple)):
        return tuple(_attr_key(x) for x in v)
    return (type(v).__name__, v)


SMALL_CONST = 1       # elements: equal scalar constants are merged by value (named weights never are)


def common_subexpressions(module: Module) -> int:
    """Merge ops that compute the same thing from the same operands (and equal scalar constants)."""
    def key_of(op):
        if op.name == "const":
            arr = module.constants.get(op.attrs["name"])
            if arr is not None and arr.size <= SMALL_CONST:
                return ("const-value", arr.dtype.str, arr.shape, np.ascontiguousarray(arr).tobytes())
            return ("const", op.attrs["name"])
        return (op.name, tuple(id(v) for v in op.operands),
                tuple(sorted((k, _attr_key(v)) for k, v in op.attrs.items())))
    return _merge_equal(module, key_of)


@register_pass("cse")
def cse_pass(module: Module):
    """Common-subexpression elimination (same op, same operands, same attributes)."""
    common_subexpressions(module)
    dead_code_elimination(module)
