"""Constant folding through the registry's numpy references, and dead-code elimination.

An op folds when every operand is a constant: its reference implementation runs once and a `const`
replaces it. Fold-only ops (arange, comparisons, cumsum, index, expand, casts, ...) always fold; a
view of a large constant (a weight) does not, so a transposed weight is read through strides (or its
transpose is absorbed into a matmul) instead of being copied.
"""
from __future__ import annotations

import numpy as np

from ..dialects.ir import SLICE_OP, Module, Operation, TensorType, Value, remap
from ..dialects.registry import FOLD_ONLY, REGISTRY, SHAPE_ONLY, VIEW
from ..dialects.symbolic import Sym, evaluate, symbols_of
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
    """Fold every op whose operands are all constants. Returns the number of folded ops.
    An op whose result depends on a dynamic size folds at every size at once (sized_fold)."""
    folded = 0
    new_ops: list[Operation] = []
    replace: dict[Value, Value] = {}
    sized = SizedFold(module)
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
        if sized.takes(op, opdef, arrays):
            new_ops.append(op)
            continue
        if (opdef is None or opdef.reference is None or not consts_ok or not op.result.type.is_static
                or symbols_of(op.attrs)):     # a size-dependent op outside the torch dialect stays
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
    return folded + sized.materialize()


class SizedFold:
    """Folding where a dynamic size is involved (a position-id range, a causal mask of [S, S]): such
    an op is evaluated at the largest size, and also at the range's smallest, a middle and the
    next-to-largest sizes, where its value must be the leading corner of the largest (arange(S)[:s]
    is arange(s)). A folded value some other op reads then becomes one constant at the largest size
    and a leading slice of it per dynamic dim, so nothing is folded per call. A value that is not
    such a corner cannot be folded once: that is an error naming the op."""

    def __init__(self, module: Module):
        self.module = module
        ranges = module.meta.get("symbols") or {}
        largest = {k: hi for k, (lo, hi) in ranges.items()}
        self.envs = [largest] + [dict(e) for e in {
            tuple((k, v) for k, v in sorted(env.items()))
            for env in ({k: lo for k, (lo, hi) in ranges.items()},
                        {k: (lo + hi) // 2 for k, (lo, hi) in ranges.items()},
                        {k: max(lo, hi - 1) for k, (lo, hi) in ranges.items()})} if dict(e) != largest]
        self.values: dict[Value, list[np.ndarray]] = {}     # folded value -> its array at each env
        self.ops: dict[Value, Operation] = {}
        self.corners: set[Value] = set()       # slices of a constant: already materialized

    def takes(self, op: Operation, opdef, arrays) -> bool:
        """Fold op at every env if it involves a dynamic size and all its operands are known."""
        if len(self.envs) == 1 or opdef is None or opdef.reference is None or op.dialect not in SLICE_OP:
            return False
        if op.result.type.is_static and not symbols_of(op.attrs) and not any(
                v in self.values for v in op.present_operands()):
            return False
        shape_only = opdef.has(SHAPE_ONLY)
        for v, a in zip(op.operands, arrays):
            if v is not None and a is None and v not in self.values and not shape_only:
                return False
        results = []
        for i, env in enumerate(self.envs):
            args = []
            for v, a in zip(op.operands, arrays):
                if v is None:
                    args.append(None)
                elif v in self.values:
                    args.append(self.values[v][i])
                elif shape_only:
                    args.append(np.zeros(evaluate(v.type.shape, env), v.type.np_dtype))
                else:
                    args.append(a)
            try:
                out = np.asarray(opdef.reference(args, evaluate(opdef.with_defaults(op.attrs), env)))
            except Exception as e:
                hint = " (the model may not run at every size of the dynamic range: lower its max)" if i == 0 else ""
                raise LoweringError(f"constant folding {op.name} (%{op.result.name}) at sizes {env} failed: {e}"
                                    f"{hint}") from e
            want = evaluate(op.result.type.shape, env)
            if out.shape != tuple(want):
                raise LoweringError(f"folding {op.name} at sizes {env} gave shape {out.shape}, type says {want}")
            results.append(np.ascontiguousarray(out.astype(op.result.type.np_dtype, copy=False)))
        self.values[op.result] = results
        self.ops[op.result] = op
        if op.name == SLICE_OP[op.dialect] and self.module.corner_of(op.result) is not None:
            self.corners.add(op.result)
        return True

    def materialize(self) -> int:
        """Each folded value that an unfolded op (or the output) reads: one constant and its slices."""
        m = self.module
        readers = {v for op in m.ops if op.result not in self.values for v in op.present_operands()}
        readers.update(m.outputs)
        replace = {}
        inserts: dict[Operation, list[Operation]] = {}
        for v, arrays in self.values.items():
            if v not in readers or v in self.corners:
                continue
            full = arrays[0]
            for env, a in zip(self.envs[1:], arrays[1:]):
                corner = full[tuple(slice(0, n) for n in a.shape)]
                if corner.shape != a.shape or not np.array_equal(corner, a, equal_nan=a.dtype.kind == "f"):
                    raise LoweringError(
                        f"{self.ops[v].name} (%{v.name}) at {m.meta.get('source', {}).get(v.name, '?')} depends "
                        f"on the dynamic size(s) {sorted(symbols_of(v.type.shape))} in a way rt cannot fold once "
                        f"(its value at sizes {env} is not the leading corner of its value at the largest)")
            ops = [_const_op(m, full, f"fold.{v.name}", m.fresh_name(v.name + "_full"))]
            for d, n in enumerate(v.type.shape):
                if isinstance(n, Sym):
                    res = Value(m.fresh_name(v.name + "_slice"), ops[-1].result.type.with_shape(
                        ops[-1].result.type.shape[:d] + (n,) + ops[-1].result.type.shape[d + 1:]))
                    sl = Operation(SLICE_OP[self.ops[v].dialect], [ops[-1].result],
                                   {"dim": d, "start": 0, "end": n, "step": 1}, res)
                    res.producer = sl
                    ops.append(sl)
            if ops[-1].result.type != v.type:
                raise LoweringError(f"folding %{v.name}: {ops[-1].result.type} is not {v.type}")
            inserts[self.ops[v]] = ops
            replace[v] = ops[-1].result
        if not replace:
            return 0
        new_ops = []
        for op in m.ops:
            op.operands = remap(op.operands, replace)
            new_ops.extend(inserts.get(op, [op]))
        m.ops = new_ops
        m.outputs = remap(m.outputs, replace)
        m.invalidate_names()
        return len(replace)


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
