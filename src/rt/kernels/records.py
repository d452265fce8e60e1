"""Op records by field name: the numpy mirror of C's rt_op, filled and read through rt/abi.py.

This module and rt.abi are the only code that knows where a field sits in a record; everything else
names fields (`make_record("MATMUL", {"a": (1, 0), ...}, M=4, act="relu", alpha=1.0)`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..abi import ENUMS, MAX_ARGS, MAX_FP, MAX_IP, OP_BY_NAME, OP_CODES, OPS, Family, Field
from ..errors import ProgramError

RECORD_DTYPE = np.dtype(
    [
        ("code", "<i4"),
        ("nargs", "<i4"),
        ("slot", "<i4", (MAX_ARGS,)),
        ("offset", "<i8", (MAX_ARGS,)),
        ("ip", "<i8", (MAX_IP,)),
        ("fp", "<f8", (MAX_FP,)),
        ("state", "<u8"),           # C's own (rt_op_prepare); whatever Python puts here is ignored
    ],
    align=True,
)

Place = tuple[int, int]     # (slot, byte offset)


def _int_value(fam: Family, f: Field, v: Any) -> int:
    if f.enum == "bool":
        if v not in (0, 1):      # True, False, 0, 1
            raise ProgramError(f"{fam.name} field {f.name} is a flag (0 or 1), got {v!r}")
        return int(v)
    if f.enum is None:
        if isinstance(v, (list, tuple)):
            raise ProgramError(f"{fam.name} field {f.name} takes one int, got {v!r}")
        return int(v)
    if not isinstance(v, str) or v not in ENUMS[f.enum]:
        raise ProgramError(f"{fam.name} field {f.name} takes one of {ENUMS[f.enum]}, got {v!r}")
    return ENUMS[f.enum].index(v)


def fill(rec: np.void, op: str, operands: Mapping[str, Place | None], fields: Mapping[str, Any]) -> None:
    """Write op `op` into record `rec`: operands by the family's arg names (None or missing = absent),
    every int and float field by name (an array from a sequence of at most its length, rest 0)."""
    if op not in OP_BY_NAME:
        raise ProgramError(f"unknown C op {op!r}")
    fam = OP_BY_NAME[op].family
    names = {a.name for a in fam.args}
    unknown = (set(operands) - names) | (set(fields) - {f.name for f in fam.ints + fam.floats})
    if unknown:
        raise ProgramError(f"{op} ({fam.name}) has no field(s) {sorted(unknown)}")
    missing = [f.name for f in fam.ints + fam.floats if f.name not in fields and f.default is None]
    if missing:
        raise ProgramError(f"{op} ({fam.name}) record misses field(s) {missing}")
    rec["code"] = OP_CODES[op]
    rec["nargs"] = len(fam.args)
    rec["slot"][:] = -1
    rec["offset"][:] = 0
    for i, a in enumerate(fam.args):
        place = operands.get(a.name)
        if place is not None:
            rec["slot"][i], rec["offset"][i] = place
    rec["ip"][:] = 0
    for name, (at, f) in fam.int_offsets().items():
        v = fields[name]
        if f.count > 1:
            if not isinstance(v, (list, tuple)):
                raise ProgramError(f"{op} field {name} takes up to {f.count} ints, got {v!r}")
            vals = [int(x) for x in v]
            if len(vals) > f.count:
                raise ProgramError(f"{op} field {name} holds {f.count} values, got {len(vals)}")
            rec["ip"][at:at + len(vals)] = vals
        else:
            rec["ip"][at] = _int_value(fam, f, v)
    rec["fp"][:] = 0.0
    for at, f in enumerate(fam.floats):
        rec["fp"][at] = float(fields.get(f.name, f.default))


def make_record(op: str, operands: Mapping[str, Place | None], **fields) -> np.ndarray:
    """One record (an array of one) for op `op`."""
    recs = np.zeros(1, RECORD_DTYPE)
    fill(recs[0], op, operands, fields)
    return recs


def op_name(rec: np.void) -> str:
    code = int(rec["code"])
    if not 0 <= code < len(OPS):
        raise ProgramError(f"unknown op code {code}")
    return OPS[code].name


def read_fields(rec: np.void) -> dict[str, Any]:
    """A record's fields by name (enums by name, arrays as lists, flags as bools)."""
    fam = OP_BY_NAME[op_name(rec)].family
    out: dict[str, Any] = {}
    for name, (at, f) in fam.int_offsets().items():
        if f.count > 1:
            out[name] = [int(x) for x in rec["ip"][at:at + f.count]]
        elif f.enum == "bool":
            out[name] = bool(rec["ip"][at])
        elif f.enum:
            out[name] = ENUMS[f.enum][int(rec["ip"][at])]
        else:
            out[name] = int(rec["ip"][at])
    for at, f in enumerate(fam.floats):
        out[f.name] = float(rec["fp"][at])
    return out


def operand_places(rec: np.void) -> dict[str, Place | None]:
    """A record's operands by name: (slot, byte offset), or None when absent."""
    fam = OP_BY_NAME[op_name(rec)].family
    return {a.name: (None if rec["slot"][i] < 0 else (int(rec["slot"][i]), int(rec["offset"][i])))
            for i, a in enumerate(fam.args)}


def arg_names(op: str) -> Sequence[str]:
    return [a.name for a in OP_BY_NAME[op].family.args]


def sized_places(op: str, operands: Mapping[str, tuple[int, Any] | None], fields: Mapping[str, Any]) -> list:
    """Where the dynamic sizes of record `op` go (fields and operand offsets that are Syms, see
    rt.dialects.symbolic): ("ip", index into ip, size) per int field or array element, ("offset",
    operand index, size) per operand offset. rt.kernels.bind writes them per call."""
    from ..dialects.symbolic import Sym
    fam = OP_BY_NAME[op].family
    places = []
    for name, (at, f) in fam.int_offsets().items():
        v = fields.get(name)
        for j, x in enumerate(v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(x, Sym):
                places.append(("ip", at + j, x))
    for i, a in enumerate(fam.args):
        place = operands.get(a.name)
        if place is not None and isinstance(place[1], Sym):
            places.append(("offset", i, place[1]))
    return places
