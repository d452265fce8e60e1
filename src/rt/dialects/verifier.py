"""The verifier: every value defined before use, types agree with inference, attributes are typed,
each dialect admits only its own ops (plus the shared `const` and `state`), the fused dialect admits no fold-only op,
and planned buffers never overlap while both are live."""
from __future__ import annotations

from ..errors import VerificationError
from .ir import ROOT_OPS, Module, Operation
from .symbolic import size_ranges
from .registry import FOLD_ONLY, REGISTRY

SHARED_OPS = ROOT_OPS


def _fail(op: Operation | None, msg: str):
    where = f"op {op.name} (%{op.result.name}): " if op is not None else ""
    raise VerificationError(where + msg)


def verify_op(op: Operation, dialect: str | None = None) -> None:
    if op.name in SHARED_OPS:
        if op.name == "const" and "name" not in op.attrs:
            _fail(op, "const needs a name")
        if op.name == "state" and (set(op.attrs) != {"index"} or type(op.attrs["index"]) is not int
                                   or op.attrs["index"] < 0 or not op.result.type.is_static):
            _fail(op, "state takes one attribute, its index (an int >= 0), and a static type")
        return
    if dialect is not None and op.dialect != dialect:
        _fail(op, f"op of dialect '{op.dialect}' is not allowed in the {dialect} dialect")
    opdef = REGISTRY.get(op.name)
    if opdef is None:
        _fail(op, "unknown op")
    if dialect == "fused" and opdef.has(FOLD_ONLY):
        _fail(op, "fold-only op reached the fused dialect (it must be constant-folded)")
    lo, hi = opdef.operand_range()
    n = len(op.operands)
    if n < lo or (hi is not None and n > hi):
        _fail(op, f"takes {lo}..{hi if hi is not None else 'n'} operands, got {n}")
    for i, (spec, v) in enumerate(zip(opdef.operands, op.operands)):
        if v is None and not spec.endswith(("?", "*")):
            _fail(op, f"required operand '{spec}' (#{i}) is missing")
    for key, value in op.attrs.items():
        spec = opdef.attrs.get(key)
        if spec is None:
            _fail(op, f"unknown attribute '{key}'")
        if not spec.check(value):
            _fail(op, f"attribute '{key}' = {value!r} is not of type {spec.type}")
    for key, spec in opdef.attrs.items():
        if spec.required and key not in op.attrs:
            _fail(op, f"missing required attribute '{key}'")
    types = [None if v is None else v.type for v in op.operands]
    attrs = opdef.with_defaults(op.attrs)
    if opdef.verify is not None:
        msg = opdef.verify(op, types)
        if msg:
            _fail(op, msg)
    try:
        inferred = opdef.infer(types, attrs)
    except VerificationError:
        raise
    except Exception as e:  # an inference that cannot apply is a verification failure
        _fail(op, f"type inference failed: {e}")
    if inferred != op.result.type:
        _fail(op, f"result type {op.result.type} does not match inferred {inferred}")


def verify_module(module: Module, dialect: str | None = None) -> None:
    """Raise VerificationError naming the first op that breaks the rules."""
    with size_ranges(module.meta.get("symbols")):
        _verify_module(module, dialect)


def _verify_module(module: Module, dialect: str | None) -> None:
    defined = set()
    for v in module.inputs:
        if v in defined:
            _fail(None, f"input %{v.name} declared twice")
        defined.add(v)
    names = {v.name for v in module.inputs}
    for op in module.ops:
        for v in op.present_operands():
            if v not in defined:
                _fail(op, f"operand %{v.name} is used before it is defined")
        if op.result.name in names:
            _fail(op, f"value %{op.result.name} defined twice")
        if op.result.producer is not op:
            _fail(op, "result's producer link is broken")
        if op.name == "const" and op.attrs.get("name") in module.constants:
            # modules parsed from text may lack a constant's data; a known array must match its type
            arr = module.constants[op.attrs["name"]]
            if tuple(arr.shape) != op.result.type.shape or arr.dtype != op.result.type.np_dtype:
                _fail(op, f"constant {arr.dtype}{list(arr.shape)} does not match {op.result.type}")
        verify_op(op, dialect)
        defined.add(op.result)
        names.add(op.result.name)
    for v in module.outputs:
        if v not in defined:
            _fail(None, f"output %{v.name} is not defined")
    if dialect == "planned":
        from .planned_check import verify_plan   # planned-only facts: storage, overlap, alignment
        verify_plan(module)
