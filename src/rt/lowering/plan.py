"""Lowering fused -> planned: execution order, lifetimes, views, in-place reuse, arena offsets.

Nothing is left to decide at run time: every value of the result has a storage (arena slice, input,
output, constant, persistent state or a strided view of another value), and `module.meta["plan"]` reports the arena
size, the lower bound (the largest total of bytes live at one step in the chosen order) and the
no-reuse total.
"""
from __future__ import annotations

from ..dialects.ir import ROOT_OPS, Module, Operation, Storage, Value
from ..dialects.planned_proof import Layout, reads_strided
from ..dialects.registry import REGISTRY, VIEW
from ..abi import ALIGN, align
from ..errors import LoweringError
from ..target import Target
from ..dialects.strides import contiguous_strides, is_contiguous
from ..dialects.symbolic import at_largest, size_ranges
from .plan_offsets import assign_offsets, lower_bound
from .plan_order import choose_order


# ---- 1. clone the fused module into planned ops -----------------------------------------------
def _planned_name(name: str) -> str:
    if name in ROOT_OPS:
        return name
    twin = "planned." + name.split(".", 1)[1]
    if twin not in REGISTRY:
        raise LoweringError(f"{name} has no planned form")
    return twin


def _insert_copy(m: Module, value: Value, before: int) -> Value:
    res = Value(m.fresh_name(value.name + "_copy"), value.type)
    op = Operation("planned.copy", [value], {}, res)
    res.producer = op
    m.ops.insert(before, op)
    return res


# ---- 2. views: resolve strided reads, copy where a consumer cannot read by strides --------------
def _resolve_views(m: Module) -> dict[Value, Layout]:
    layout: dict[Value, Layout] = {}

    def of(v: Value) -> Layout:
        if v not in layout:
            layout[v] = Layout(v, 0, contiguous_strides(v.type.shape))
        return layout[v]

    for v in m.inputs:
        of(v)
    i = 0
    while i < len(m.ops):
        op = m.ops[i]
        if op.name in ROOT_OPS:
            of(op.result)
            i += 1
            continue
        opdef = REGISTRY[op.name]
        strided_ok = opdef.extra.get("strided_operands", ())
        for j, v in enumerate(op.operands):
            if v is None:
                continue
            lv = of(v)
            if opdef.has(VIEW) or reads_strided(strided_ok, j, v.type.shape, lv.strides):
                continue
            if not is_contiguous(v.type.shape, lv.strides):
                op.operands[j] = _insert_copy(m, v, i)   # materialise, then revisit this op
                i += 1
                of(op.operands[j])
        if opdef.has(VIEW):
            src = op.operands[0]
            ls = of(src)
            fact = opdef.extra["view"](opdef.with_defaults(op.attrs), src.type, ls.strides, op.result.type)
            if fact is None:
                copy = _insert_copy(m, src, i)
                op.operands[0] = copy
                i += 1
                ls = of(copy)
                fact = opdef.extra["view"](opdef.with_defaults(op.attrs), src.type, ls.strides, op.result.type)
                if fact is None:
                    raise LoweringError(f"{op.name} (%{op.result.name}) is not a view of a contiguous buffer")
            off, strides = fact
            layout[op.result] = Layout(ls.root, ls.elem_offset + off, tuple(strides))
        elif "updates_operand" in opdef.extra:       # the op returns the buffer it updates: a state
            updated = of(op.operands[opdef.extra["updates_operand"]])
            if updated.root.producer is None or updated.root.producer.name != "state" or updated.elem_offset \
                    or not is_contiguous(updated.root.type.shape, updated.strides):
                raise LoweringError(f"{op.name} (%{op.result.name}) must update a whole state buffer")
            layout[op.result] = updated
        else:
            of(op.result)
        i += 1
    return layout


# ---- 3. outputs are computed straight into the caller's buffers ---------------------------------
def _own_outputs(m: Module, layout: dict[Value, "Layout"]) -> dict[Value, int]:
    """{storage owner: output index}. An output that an op computes (or a full contiguous view of such
    a value, e.g. the LM head's reshape) is written straight into the caller's buffer; inputs,
    constants, partial or strided views and repeated outputs are copied there."""
    owners: dict[Value, int] = {}
    for i, v in enumerate(m.outputs):
        lv = layout[v]
        root = lv.root
        direct = (root.producer is not None and root.producer.name not in ROOT_OPS and root not in owners
                  and lv.elem_offset == 0 and is_contiguous(v.type.shape, lv.strides)
                  and v.type.nbytes == root.type.nbytes)
        if not direct:
            v = m.outputs[i] = _insert_copy(m, v, len(m.ops))
            layout[v] = Layout(v, 0, contiguous_strides(v.type.shape))
            root = v
        owners[root] = i
    return owners


# ---- 4.-6. lifetimes, in-place, offsets ---------------------------------------------------------
def _buffers(m: Module, layout: dict[Value, Layout], outputs: dict[Value, int]):
    """Arena buffers as groups of root values (in-place chains share one), with [start, end] steps."""
    step = {op.result: s for s, op in enumerate(m.ops)}
    in_arena = {op.result for op in m.ops
                if op.name not in ROOT_OPS and layout[op.result].root is op.result and op.result not in outputs}
    last_use: dict[Value, int] = {}
    for s, op in enumerate(m.ops):
        for v in op.present_operands():
            root = layout[v].root
            last_use[root] = max(last_use.get(root, -1), s)
    group: dict[Value, Value] = {}        # root -> representative of its in-place group
    for s, op in enumerate(m.ops):
        r = op.result
        if r not in in_arena:
            continue
        group[r] = r
        inplace = REGISTRY[op.name].extra.get("inplace_operands", ())
        for v in (op.operands[i] for i in inplace if i < len(op.operands)):
            if (v is not None and v in in_arena and layout[v].root is v and last_use.get(v) == s
                    and v.type.nbytes == r.type.nbytes and v.type.dtype == r.type.dtype
                    and v.type.shape == r.type.shape):
                group[r] = group[v]
                break
    spans: dict[Value, list[int]] = {}
    for r, rep in group.items():
        start = step[r]
        end = max(last_use.get(r, start), start)
        lo_hi = spans.setdefault(rep, [start, end])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], start), max(lo_hi[1], end)
    sizes = {rep: align(at_largest(rep.type.nbytes)) for rep in spans}
    return group, spans, sizes


def _record_kernel_choices(m: Module) -> None:
    """Each op's kernel choices (registry fact `kernel_choices(op) -> attrs`) as its attributes."""
    for op in m.ops:
        choose = REGISTRY[op.name].extra.get("kernel_choices") if op.name not in ROOT_OPS else None
        if choose is not None:
            op.attrs.update(choose(op))


def _scratch_buffers(m: Module, spans: dict, sizes: dict, threads: int) -> dict:
    """Kernel scratch (registry fact `scratch(op, threads)`) as buffers live at their op's step only,
    sized for the target's thread count (a kernel never runs on more threads than its scratch holds)."""
    keys = {}
    for step, op in enumerate(m.ops):
        need = REGISTRY[op.name].extra.get("scratch") if op.name not in ROOT_OPS else None
        nbytes = align(at_largest(need(op, threads))) if need is not None else 0
        if nbytes:
            key = ("scratch", step, threads)
            spans[key] = [step, step]
            sizes[key] = nbytes
            keys[op] = key
    return keys


def to_planned(fused: Module, target: Target | None = None) -> Module:
    """Plan a fused module for `target` (default: the one the fused module was lowered for, else a
    generic one-thread target); the result records it in meta["target"]. Dynamic sizes are planned at
    the top of their ranges: every buffer at a smaller size is a prefix of its slot, so the one plan
    holds for every size in range."""
    with size_ranges(fused.meta.get("symbols")):
        return _to_planned(fused, target)


def _to_planned(fused: Module, target: Target | None) -> Module:
    m = fused.clone(_planned_name)
    target = target or fused.meta.get("target") or Target()
    m.meta["target"] = target
    layout = _resolve_views(m)
    out_index = _own_outputs(m, layout)
    m.ops = choose_order(m, layout_root=lambda v: layout[v].root, outputs=set(out_index))
    group, spans, sizes = _buffers(m, layout, out_index)
    _record_kernel_choices(m)
    scratch = _scratch_buffers(m, spans, sizes, target.threads)
    offsets, arena = assign_offsets(spans, sizes, ALIGN)
    for op, key in scratch.items():
        op.attrs["scratch"] = [offsets[key], sizes[key], key[2]]
    for i, v in enumerate(m.inputs):
        v.storage = Storage("input", index=i)
    for op in m.ops:
        r = op.result
        lr = layout[r]
        if op.name == "const":
            r.storage = Storage("const")
        elif op.name == "state":
            r.storage = Storage("state", index=op.attrs["index"])
        elif lr.root is not r:
            r.storage = Storage("view", offset=lr.elem_offset * r.type.np_dtype.itemsize, base=lr.root,
                                strides=None if is_contiguous(r.type.shape, lr.strides) else lr.strides)
        elif r in out_index:
            r.storage = Storage("output", index=out_index[r])
        else:
            rep = group[r]
            r.storage = Storage("arena", offset=offsets[rep], size=at_largest(r.type.nbytes))
    m.meta["plan"] = {
        "arena_bytes": arena,
        "lower_bound_bytes": lower_bound(spans, sizes),
        "no_reuse_bytes": sum(align(at_largest(op.result.type.nbytes)) for op in m.ops
                              if op.result.storage.kind == "arena") + sum(sizes[k] for k in scratch.values()),
    }
    m.invalidate_names()
    return m
