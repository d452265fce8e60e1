"""The IR core shared by every dialect: tensor types, values, operations, modules.

A module is one graph in SSA form: an ordered list of operations, its inputs, its outputs and its
constants (numpy arrays kept by reference; the text form names them, never embeds them).
Each operation has exactly one result.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .symbolic import Size, Sym, format_size

# dtype spelling in the text form -> numpy dtype
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i64": np.dtype(np.int64),
    "i32": np.dtype(np.int32),
    "bool": np.dtype(np.bool_),
    "u8": np.dtype(np.uint8),       # packed weights (rt/weight_formats.py)
}
_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: Any) -> str:
    """The IR spelling of a numpy dtype ('f32', 'i64', ...)."""
    dt = np.dtype(dtype)
    if dt not in _DTYPE_NAMES:
        raise TypeError(f"dtype {dt} has no IR spelling (supported: {', '.join(DTYPES)})")
    return _DTYPE_NAMES[dt]


# Each dialect's slice op: how a constant folded at the largest dynamic size is read at any size.
SLICE_OP = {"torch": "torch.slice.Tensor", "fused": "fused.slice"}


@dataclass(frozen=True)
class TensorType:
    """A dim is an int, or a Sym (a dynamic size, rt.dialects.symbolic); numel and nbytes follow."""
    shape: tuple[Size, ...]
    dtype: str = "f32"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(d if isinstance(d, Sym) else int(d) for d in self.shape))
        if self.dtype not in DTYPES:
            raise TypeError(f"unknown dtype {self.dtype!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return not any(isinstance(d, Sym) for d in self.shape)

    @property
    def numel(self) -> Size:
        return math.prod(self.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.numel * self.np_dtype.itemsize

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(self.shape, dtype)

    @staticmethod
    def of(array: np.ndarray) -> "TensorType":
        return TensorType(tuple(array.shape), dtype_name(array.dtype))

    def __str__(self) -> str:
        dims = "".join(f"{format_size(d)}x" for d in self.shape)
        return f"tensor<{dims}{self.dtype}>"


# Ops that make a value without computing it: a named constant (`const "name"`) and a persistent
# buffer (`state {index = i}`: a generator's KV cache, kept between calls; rt.lowering.kv_cache).
ROOT_OPS = frozenset({"const", "state"})


@dataclass(eq=False)
class Storage:
    """Where a planned value lives. kind: 'arena' | 'input' | 'output' | 'const' | 'state' | 'view'.

    arena: offset/size in bytes. input/output/state: index (state: a persistent buffer the caller
    binds, kept between calls). view: base value, byte offset from the base's
    start and element strides (None = contiguous)."""
    kind: str
    offset: int = 0
    size: int = 0
    index: int = 0
    base: "Value | None" = None
    strides: tuple[int, ...] | None = None


@dataclass(eq=False)
class Value:
    name: str
    type: TensorType
    producer: "Operation | None" = None
    storage: Storage | None = None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Operation:
    name: str                       # dialect-qualified: 'torch.addmm', 'fused.matmul', 'const'
    operands: list[Value | None]    # None = an absent optional operand
    attrs: dict[str, Any]
    result: Value

    @property
    def dialect(self) -> str:
        return self.name.split(".", 1)[0] if "." in self.name else ""

    def present_operands(self) -> list[Value]:
        return [v for v in self.operands if v is not None]

    def __repr__(self) -> str:
        return f"<{self.name} -> %{self.result.name}>"


@dataclass(eq=False)
class Module:
    name: str
    inputs: list[Value] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    ops: list[Operation] = field(default_factory=list)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)      # e.g. plan facts, source locations

    # ---- queries -------------------------------------------------------------------------
    def users(self) -> dict[Value, list[Operation]]:
        uses: dict[Value, list[Operation]] = {}
        for op in self.ops:
            for v in op.present_operands():
                uses.setdefault(v, []).append(op)
        return uses

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for op in self.ops:
            yield op.result

    def const_value(self, v: Value | None) -> np.ndarray | None:
        """The array behind a value produced by a `const` op, else None."""
        if v is None or v.producer is None or v.producer.name != "const":
            return None
        return self.constants.get(v.producer.attrs["name"])

    def corner_of(self, v: Value | None) -> np.ndarray | None:
        """The constant whose leading corner v is (v = a chain of slices from 0 with step 1 of a `const`:
        a value folded at the largest dynamic size, rt.lowering.fold.SizedFold), else None."""
        while v is not None and v.producer is not None and v.producer.name in SLICE_OP.values():
            at = v.producer.attrs
            if at.get("start") not in (0, None) or at.get("step", 1) != 1:
                return None
            v = v.producer.operands[0]
        return self.const_value(v)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts

    def clone(self, rename=lambda name: name) -> "Module":
        """A copy with fresh values and ops (constants shared by reference); `rename` maps op names."""
        m = Module(self.name, constants=dict(self.constants),
                   meta={k: (dict(v) if isinstance(v, dict) else v)
                         for k, v in self.meta.items() if not k.startswith("_")})
        env: dict[Value, Value] = {}
        for v in self.inputs:
            env[v] = Value(v.name, v.type)
            m.inputs.append(env[v])
        for op in self.ops:
            res = Value(op.result.name, op.result.type)
            new = Operation(rename(op.name), [None if v is None else env[v] for v in op.operands],
                            dict(op.attrs), res)
            res.producer = new
            env[op.result] = res
            m.ops.append(new)
        m.outputs = [env[v] for v in self.outputs]
        return m

    # ---- building ------------------------------------------------------------------------
    def fresh_name(self, hint: str = "v") -> str:
        """A value name not yet used in this module (the one rule: `unique_name`)."""
        used = self.meta.get("_names")
        if used is None:
            used = self.meta["_names"] = {v.name for v in self.values()}
        return unique_name(hint, used)

    def add_constant(self, array: np.ndarray, hint: str = "c") -> str:
        name = hint
        i = 0
        while name in self.constants:
            i += 1
            name = f"{hint}.{i}"
        self.constants[name] = array
        return name

    def invalidate_names(self) -> None:
        self.meta.pop("_names", None)


_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def unique_name(hint: str, taken: set[str]) -> str:
    """The one naming rule for new values: hint (characters other than letters, digits and '_' as
    '_') if not taken, else the first free hint_N (N = 0, 1, ...; torch.fx numbers its nodes from
    _1, so a value derived from node `linear` is `linear_0`, never confused with node `linear_1`).
    The name is added to `taken`."""
    base = _NOT_NAME.sub("_", str(hint)) or "v"
    name, i = base, 0
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def replace_all_uses(module: Module, old: Value, new: Value) -> None:
    for op in module.ops:
        op.operands = [new if v is old else v for v in op.operands]
    module.outputs = [new if v is old else v for v in module.outputs]


def padded(values, n: int) -> list:
    """The first n of values, absent trailing optional operands filled in as None."""
    values = list(values)
    return (values + [None] * n)[:n]


def remap(values: list[Value | None], replace: dict[Value, Value]) -> list[Value | None]:
    """values with each replaced value swapped for its replacement (None, an absent operand, stays):
    for passes that rewrite in one forward sweep and remap each op's operands as they reach it."""
    return [replace.get(v, v) for v in values]
