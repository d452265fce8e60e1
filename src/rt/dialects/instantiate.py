"""A module with dynamic sizes, at given sizes: the same ops and plan with every symbol bound.

The debugging executors (op by op, numpy reference) run a dynamic program this way; the production
executor never re-walks the IR per size (rt.kernels.bind patches its records instead).
"""
from __future__ import annotations

from typing import Mapping

from ..errors import InputError
from .ir import Module, Operation, Storage, TensorType, Value
from .symbolic import Sym, evaluate


def instantiate(module: Module, env: Mapping[str, int]) -> Module:
    if not module.meta.get("symbols"):
        return module
    m = Module(module.name, constants=module.constants,
               meta={k: v for k, v in module.meta.items() if k != "symbols" and not k.startswith("_")})
    new: dict[Value, Value] = {}

    def value(v: Value) -> Value:
        out = Value(v.name, TensorType(evaluate(v.type.shape, env), v.type.dtype))
        if v.storage is not None:
            st = v.storage
            out.storage = Storage(st.kind, evaluate(st.offset, env), evaluate(st.size, env), st.index,
                                  new[st.base] if st.base is not None else None,
                                  evaluate(st.strides, env))
        new[v] = out
        return out

    m.inputs = [value(v) for v in module.inputs]
    for op in module.ops:
        res = value(op.result)
        new_op = Operation(op.name, [None if v is None else new[v] for v in op.operands], evaluate(op.attrs, env), res)
        res.producer = new_op
        m.ops.append(new_op)
    m.outputs = [new[v] for v in module.outputs]
    return m


def sizes_of(module: Module, shapes: list[tuple[int, ...]]) -> dict[str, int]:
    """The value of each size symbol, read off the inputs' shapes (in the module's input order);
    InputError naming the input, its dim, the size and the range when a size is out of range or the
    inputs disagree."""
    ranges = module.meta.get("symbols") or {}
    env: dict[str, int] = {}
    for v, shape in zip(module.inputs, shapes):
        if len(shape) != v.type.rank:
            raise InputError(f"input {v.name!r} has shape {list(shape)}, expected {v.type.rank} dims "
                             f"({_spec(v.type)})")
        for d, (want, got) in enumerate(zip(v.type.shape, shape)):
            if isinstance(want, Sym) and len(want.symbols) == 1 and str(want) in ranges:
                name = str(want)
                lo, hi = ranges[name]
                if not lo <= got <= hi:
                    raise InputError(f"input {v.name!r} dim {d} is {got}; its dynamic size {name} takes "
                                     f"{lo}..{hi}")
                if env.setdefault(name, got) != got:
                    raise InputError(f"input {v.name!r} dim {d} is {got}, but {name} = {env[name]} from an "
                                     "earlier input")
    for v, shape in zip(module.inputs, shapes):
        want = evaluate(v.type.shape, env) if all(s in env for s in _symbols(v.type)) else None
        if want is None or tuple(want) != tuple(shape):
            raise InputError(f"input {v.name!r} has shape {list(shape)}, expected {_spec(v.type)}")
    return env


def _symbols(t: TensorType) -> set[str]:
    return {s for d in t.shape if isinstance(d, Sym) for s in d.symbols}


def _spec(t: TensorType) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + f"] {t.np_dtype}"
