"""Op registries: each op is declared once, with everything known about it.

An OpDef carries its operands, typed attributes, type inference, an optional extra verifier, a numpy
reference implementation and traits. Passes, the planner and both executors ask the registry; no pass
keeps a private table of op facts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .symbolic import Sym

from .ir import Operation, TensorType

# ---- traits ---------------------------------------------------------------------------------
ELEMENTWISE = "elementwise"     # output element i depends only on input element i (after broadcast)
COMMUTATIVE = "commutative"     # first two operands may be swapped
VIEW = "view"                   # result reads the operand's storage (no computation)
FOLD_ONLY = "fold_only"         # must be constant-folded away before the fused dialect
SHAPE_ONLY = "shape_only"       # reads only its operands' shapes/dtypes (new_ones(x)): folds even if x is not constant


# ---- attribute types ------------------------------------------------------------------------
def _is_int(v):
    """An int, or a dynamic size (rt.dialects.symbolic.Sym)."""
    return (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) or isinstance(v, Sym)


_ATTR_CHECKS: dict[str, Callable[[Any], bool]] = {
    "int": _is_int,
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "ints": lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) for x in v),
    "floats": lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v),
    "scalar": lambda v: isinstance(v, (int, float, bool, Sym)),
    "any": lambda v: True,
}

_REQUIRED = object()


@dataclass(frozen=True)
class Attr:
    type: str
    default: Any = _REQUIRED
    optional: bool = False          # may be None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, value) -> bool:
        if value is None:
            return self.optional
        return _ATTR_CHECKS[self.type](value)


InferFn = Callable[[list[TensorType | None], dict[str, Any]], TensorType]
RefFn = Callable[[list[np.ndarray | None], dict[str, Any]], np.ndarray]
VerifyFn = Callable[[Operation, list[TensorType | None]], str | None]


@dataclass
class OpDef:
    name: str                          # dialect-qualified
    operands: tuple[str, ...]          # 'x', optional 'bias?', variadic 'xs*' (last only)
    infer: InferFn
    reference: RefFn | None = None
    attrs: dict[str, Attr] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    verify: VerifyFn | None = None
    extra: dict[str, Any] = field(default_factory=dict)   # dialect-specific facts (e.g. kernel encoding)

    def has(self, trait: str) -> bool:
        return trait in self.traits

    def operand_range(self) -> tuple[int, int | None]:
        """(minimum, maximum or None for variadic) operand count."""
        lo = sum(1 for o in self.operands if not o.endswith(("?", "*")))
        hi = None if any(o.endswith("*") for o in self.operands) else len(self.operands)
        return lo, hi

    def with_defaults(self, attrs: dict[str, Any]) -> dict[str, Any]:
        full = {k: a.default for k, a in self.attrs.items() if not a.required}
        full.update(attrs)
        return full


class Registry:
    """All dialects' op definitions, by qualified name."""

    def __init__(self):
        self._ops: dict[str, OpDef] = {}

    def register(self, opdef: OpDef) -> OpDef:
        if opdef.name in self._ops:
            raise ValueError(f"op {opdef.name} declared twice")
        self._ops[opdef.name] = opdef
        return opdef

    def get(self, name: str) -> OpDef | None:
        return self._ops.get(name)

    def __getitem__(self, name: str) -> OpDef:
        opdef = self._ops.get(name)
        if opdef is None:
            raise KeyError(f"unknown op {name!r}")
        return opdef

    def __contains__(self, name: str) -> bool:
        return name in self._ops

    def dialect_ops(self, dialect: str) -> list[OpDef]:
        return [d for n, d in self._ops.items() if n.startswith(dialect + ".")]


REGISTRY = Registry()


def op(name: str, operands: tuple[str, ...] | list[str], infer: InferFn, reference: RefFn | None = None,
       attrs: dict[str, Attr] | None = None, traits=(), verify: VerifyFn | None = None, **extra) -> OpDef:
    """Declare an op in the global registry."""
    return REGISTRY.register(OpDef(name, tuple(operands), infer, reference, dict(attrs or {}),
                                   frozenset(traits), verify, extra))


# ---- common inference helpers ---------------------------------------------------------------
def same_as_first(types, attrs) -> TensorType:
    return types[0]


def normalize_dim(d: int, rank: int) -> int:
    """The one reading of a dim argument, as torch's: d in [-rank, rank) counted from the end when
    negative, returned in [0, rank); a 0-d tensor takes dim 0 or -1. Anything else is a ValueError."""
    rank = max(rank, 1)
    if not -rank <= d < rank:
        raise ValueError(f"dim {d} out of range for rank {rank}")
    return d % rank


def broadcast_shapes(*shapes: tuple) -> tuple:
    """numpy's broadcasting rule over sizes that may be dynamic (a dynamic dim meets 1 or itself)."""
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(dims) > 1:
            raise ValueError(f"shapes {' and '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_infer(types, attrs) -> TensorType:
    present = [t for t in types if t is not None]
    return TensorType(broadcast_shapes(*(t.shape for t in present)), present[0].dtype)
