"""The one way to add values and ops to a module: the frontend, the legalisation and fusion passes and
the layout pass all build through `Builder`.

    b = Builder(module, hint="y")          # names from the module's values; new ops go to b.new_ops
    t = b.op("fused.matmul", [x, w], {"transpose_b": True})   # type inferred through the registry
    y = b.reshape(t, [2, 3, 8])
    module.ops[i:i] = b.new_ops            # the caller decides where they go

Naming has one rule (`unique_name`): the hint itself if free, else hint_0, hint_1, ... Attributes equal
to their declared default are left out (and, past the torch dialect, trailing absent optional operands
dropped), so the same op always prints the same way, whoever built it.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import LoweringError
from .ir import Module, Operation, TensorType, Value, unique_name
from .registry import REGISTRY
from .symbolic import as_size


def same_attr(a, b, rel: float = 0.0) -> bool:
    """Attribute equality: bools only equal bools, numbers compared as floats (within `rel`), lists by
    element."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_num(a) and _is_num(b):
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=0.0) if rel else float(a) == float(b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_attr(x, y, rel) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _is_num(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


class Builder:
    """Creates ops (types inferred through the registry) and appends them to `new_ops`.

    names: the set of names in use, shared by every Builder of one pass (default: the module's values).
    hint: the name new values get when no other hint is given. into: the list new ops are appended
    to (default: a fresh one the caller splices into module.ops)."""

    trim_absent = True      # drop trailing absent optional operands (the torch dialect keeps ATen's)

    def __init__(self, module: Module, names: set[str] | None = None, hint: str = "v",
                 into: list[Operation] | None = None):
        self.module = module
        self.names = {v.name for v in module.values()} if names is None else names
        self.hint = hint
        self.new_ops: list[Operation] = [] if into is None else into

    def fresh(self, hint: str | None = None) -> str:
        return unique_name(hint or self.hint, self.names)

    def _add(self, name: str, operands: list, attrs: dict, rtype: TensorType, hint: str | None) -> Value:
        v = Value(self.fresh(hint), rtype)
        v.producer = Operation(name, list(operands), attrs, v)
        self.new_ops.append(v.producer)
        return v

    def op(self, name: str, operands: list[Value | None], attrs: dict | None = None,
           hint: str | None = None) -> Value:
        opdef = REGISTRY[name]
        attrs = dict(attrs or {})
        for k in list(attrs):
            spec = opdef.attrs.get(k)
            if spec is None:
                raise LoweringError(f"{name} has no attribute {k!r}")
            if not spec.required and same_attr(spec.default, attrs[k]):
                del attrs[k]
        operands = list(operands)
        while self.trim_absent and len(operands) > opdef.operand_range()[0] and operands[-1] is None:
            operands.pop()
        types = [None if v is None else v.type for v in operands]
        try:
            rtype = opdef.infer(types, opdef.with_defaults(attrs))
        except Exception as e:
            raise LoweringError(f"cannot build {name} from {[str(t) for t in types]} {attrs}: {e}") from e
        return self._add(name, operands, attrs, rtype, hint)

    def const(self, array: np.ndarray, hint: str = "c", name: str | None = None) -> Value:
        """A `const` op for `array`, stored under `name` (default: a new constant name from `hint`);
        its value is named after the constant (`%w_T = const "w.T"`)."""
        array = np.asarray(array)
        if name is None:
            name = self.module.add_constant(array, hint)
        else:
            self.module.constants[name] = array
        return self._add("const", [], {"name": name}, TensorType.of(array), name)

    def scalar(self, x: float, dtype=np.float32) -> Value:
        return self.const(np.array(x, dtype=dtype), "scalar")

    def rename(self, value: Value, name: str) -> Value:
        """Give a value built here the name `name` (a replacement taking over the name of the op it
        replaces); values built elsewhere keep theirs."""
        if value.producer is not None and value.producer in self.new_ops and value.name != name:
            self.names.discard(value.name)
            value.name = name
            self.names.add(name)
        return value

    # ---- fused-dialect helpers (every pass after legalisation builds fused IR) ------------
    def reshape(self, x: Value, shape) -> Value:
        """x reshaped to `shape` (x itself when it already has that shape)."""
        shape = [as_size(s) for s in shape]
        if tuple(shape) == x.type.shape:
            return x
        return self.op("fused.reshape", [x], {"shape": shape})

    def expand(self, x: Value, shape) -> Value:
        """x broadcast (a stride-0 view) to `shape` (x itself when it already has that shape)."""
        shape = [as_size(s) for s in shape]
        if tuple(shape) == x.type.shape:
            return x
        return self.op("fused.expand", [x], {"shape": shape})

    def cast(self, x: Value, dtype: str) -> Value:
        """x as `dtype` (x itself when it has it; a scalar constant is converted here, not at run time)."""
        if x.type.dtype == dtype:
            return x
        arr = self.module.const_value(x)
        if arr is not None and arr.ndim == 0:
            return self.const(np.asarray(arr).astype(x.type.with_dtype(dtype).np_dtype), "scalar")
        return self.op("fused.cast", [x], {"dtype": dtype})
