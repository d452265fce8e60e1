"""Planned-dialect verification: every value has a storage, the one its op makes (planned_proof), arena
slices are aligned and inside the arena, and two buffers live at the same step never overlap (except
an in-place op's result over the operand that dies at that op)."""
from __future__ import annotations

from ..abi import ALIGN
from ..errors import VerificationError
from .ir import Module, Value
from .planned_proof import prove_storages
from .registry import REGISTRY


def _root(v: Value) -> Value:
    while v.storage is not None and v.storage.kind == "view":
        v = v.storage.base
    return v


def arena_lifetimes(m: Module) -> list[tuple[Value, int, int]]:
    """(value, first step, last step) of every arena value, in the module's order (uses through views
    count as uses of the viewed value)."""
    last: dict[Value, int] = {}
    for s, op in enumerate(m.ops):
        for v in op.present_operands():
            last[_root(v)] = s
    return [(op.result, s, max(last.get(op.result, s), s))
            for s, op in enumerate(m.ops) if op.result.storage is not None and op.result.storage.kind == "arena"]


def verify_plan(m: Module) -> None:
    plan = m.meta.get("plan")
    arena = plan["arena_bytes"] if plan else None
    step = {}
    for s, op in enumerate(m.ops):
        st = op.result.storage
        if st is None:
            raise VerificationError(f"op {op.name} (%{op.result.name}): value has no storage")
        step[op.result] = s
        if st.kind == "arena":
            if st.offset % ALIGN:
                raise VerificationError(f"op {op.name} (%{op.result.name}): arena offset {st.offset} "
                                        f"is not {ALIGN}-byte aligned")
            if st.size < op.result.type.nbytes:
                raise VerificationError(f"op {op.name} (%{op.result.name}): slice of {st.size} bytes "
                                        f"holds no {op.result.type}")
            if arena is not None and st.offset + st.size > arena:
                raise VerificationError(f"op {op.name} (%{op.result.name}): slice "
                                        f"[{st.offset}, {st.offset + st.size}) leaves the arena of {arena} bytes")
    prove_storages(m)
    # (what, offset, size, first step, last step, value or None for kernel scratch)
    regions = [(f"%{v.name}", v.storage.offset, v.storage.size, s, e, v) for v, s, e in arena_lifetimes(m)]
    for step, op in enumerate(m.ops):
        if op.attrs.get("scratch") is not None:
            off, size, _ = op.attrs["scratch"]
            if off % ALIGN or (arena is not None and off + size > arena):
                raise VerificationError(f"op {op.name} (%{op.result.name}): scratch [{off}, {off + size}) is "
                                        f"misaligned or leaves the arena")
            regions.append((f"scratch of %{op.result.name}", off, size, step, step, None))
    for i, (na, oa, za, sa, ea, a) in enumerate(regions):
        for nb, ob, zb, sb, eb, b in regions[i + 1:]:
            if sa > eb or sb > ea or max(oa, ob) >= min(oa + za, ob + zb):
                continue
            op = m.ops[max(sb, sa)]
            inplace = REGISTRY[op.name].extra.get("inplace_operands", ())
            in_place = (a is not None and b is not None and ea == sb and oa == ob
                        and any(i < len(op.operands) and op.operands[i] is a for i in inplace))
            if not in_place:
                raise VerificationError(f"op {op.name} (%{op.result.name}): {nb} overlaps {na} while both "
                                        f"are live (steps {sa}-{ea} and {sb}-{eb})")
