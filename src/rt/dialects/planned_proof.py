"""What a planned program's storages must be, derived from the ops' own semantics (the planner makes
them so; a program read from a file is held to it): inputs in their own slots, in order; a constant's
storage is its constant; a state's its own state slot, once, and an op that updates a state (a cache
write) returns it as a view of it; every view exactly what its view op makes of its operand (base, byte offset,
strides), and read by strides only by an operand the kernel reads so; each output computed once,
straight into its own slot, by the op whose value is returned (or a full contiguous view of it);
kernel scratch of the size the kernel's own formula gives for the threads it runs on."""
from __future__ import annotations

from dataclasses import dataclass

from ..abi import align
from ..errors import VerificationError
from .ir import ROOT_OPS, Module, Operation, Value
from .registry import REGISTRY, VIEW
from .strides import contiguous_strides, is_contiguous
from .symbolic import at_largest

# A file may not ask a kernel for more threads' scratch than this.
MAX_SCRATCH_THREADS = 1024


@dataclass(frozen=True)
class Layout:
    root: Value            # the value that owns the storage
    elem_offset: int       # from the root's first element
    strides: tuple[int, ...]


def _fail(op: Operation | None, msg: str):
    where = f"op {op.name} (%{op.result.name}): " if op is not None else ""
    raise VerificationError(where + msg)


def reads_strided(fact, j: int, shape, strides) -> bool:
    """Whether a kernel reads operand j in this strided layout (registry fact strided_operands)."""
    if callable(fact):
        return fact(j, shape, strides)
    return fact == "all" or j in fact


def derive_layouts(m: Module) -> dict[Value, Layout]:
    """Every value's layout as its ops make it: a view op's from its operand's, any other its own."""
    layout = {v: Layout(v, 0, contiguous_strides(v.type.shape)) for v in m.inputs}
    for op in m.ops:
        r = op.result
        opdef = REGISTRY.get(op.name)
        if opdef is not None and opdef.has(VIEW):
            src = layout[op.operands[0]]
            fact = opdef.extra["view"](opdef.with_defaults(op.attrs), op.operands[0].type, src.strides, r.type)
            if fact is None:
                _fail(op, "is not a view of its operand's layout")
            off, strides = fact
            layout[r] = Layout(src.root, src.elem_offset + off, tuple(strides))
        elif opdef is not None and "updates_operand" in opdef.extra:    # returns the buffer it updated
            layout[r] = layout[op.operands[opdef.extra["updates_operand"]]]
        else:
            layout[r] = Layout(r, 0, contiguous_strides(r.type.shape))
    return layout


def _check_view(op: Operation, lay: Layout) -> None:
    st, r = op.result.storage, op.result
    if st.kind != "view":
        _fail(op, f"a view op's value must be stored as a view of %{lay.root.name}, not {st.kind}")
    want_off = lay.elem_offset * r.type.np_dtype.itemsize
    strides_ok = (is_contiguous(r.type.shape, lay.strides) if st.strides is None
                  else tuple(st.strides) == lay.strides)
    if st.base is not lay.root or st.offset != want_off or not strides_ok:
        _fail(op, f"stored as view(%{st.base.name if st.base else '?'}, {st.offset}, {st.strides}); its op "
                  f"makes view(%{lay.root.name}, {want_off}, {list(lay.strides)})")


def _check_scratch(op: Operation) -> None:
    need = REGISTRY[op.name].extra.get("scratch")
    have = op.attrs.get("scratch")
    if need is None or have is None:
        if need is not None and need(op, 1):
            _fail(op, "has no scratch, which its kernel needs")
        return
    if len(have) != 3:
        _fail(op, f"scratch {have} is not [offset, bytes, threads]")
    _, nbytes, threads = have
    if not 1 <= threads <= MAX_SCRATCH_THREADS:
        _fail(op, f"scratch for {threads} threads (1..{MAX_SCRATCH_THREADS})")
    want = align(at_largest(need(op, threads)))
    if nbytes != want:
        _fail(op, f"scratch of {nbytes} bytes; its kernel needs {want} for {threads} threads")


def prove_storages(m: Module) -> None:
    """Raise VerificationError naming the first storage that is not what the ops make it."""
    for j, v in enumerate(m.inputs):
        if v.storage is None or v.storage.kind != "input" or v.storage.index != j:
            _fail(None, f"input %{v.name} (#{j}) must be stored in input[{j}]")
    layout = derive_layouts(m)
    output_at: dict[int, Value] = {}
    state_at: dict[int, Value] = {}
    for op in m.ops:
        r, st = op.result, op.result.storage
        opdef = REGISTRY.get(op.name)
        is_view = opdef is not None and opdef.has(VIEW)
        updates = opdef is not None and "updates_operand" in opdef.extra
        if is_view or updates:
            _check_view(op, layout[r])
        elif st.kind == "view" or st.kind == "input" or (st.kind == "const") != (op.name == "const") \
                or (st.kind == "state") != (op.name == "state"):
            _fail(op, f"{op.name} cannot be stored in {st.kind}")
        if updates and (layout[r].root.producer is None or layout[r].root.producer.name != "state"):
            _fail(op, "updates a buffer that is not a state")
        if op.name == "state":
            if st.index != op.attrs["index"] or st.index in state_at:
                _fail(op, f"state {op.attrs['index']} stored in state[{st.index}] (each state once, in its own slot)")
            state_at[st.index] = r
        if st.kind == "arena" and st.size != at_largest(r.type.nbytes):
            _fail(op, f"arena slice of {st.size} bytes for a {r.type} ({at_largest(r.type.nbytes)} bytes "
                      "at its largest)")
        if st.kind == "output":
            if st.index in output_at:
                _fail(op, f"output[{st.index}] is written by %{output_at[st.index].name} too")
            output_at[st.index] = r
        if op.name not in ROOT_OPS:
            _check_scratch(op)
            fact = REGISTRY[op.name].extra.get("strided_operands", ())
            for j, v in enumerate(op.operands):
                lv = None if v is None else layout[v]
                if lv is not None and not is_view and not is_contiguous(v.type.shape, lv.strides) \
                        and not reads_strided(fact, j, v.type.shape, lv.strides):
                    _fail(op, f"operand #{j} (%{v.name}) is strided {list(lv.strides)}; its kernel reads it "
                              "contiguous")
    for i, v in enumerate(m.outputs):
        lay = layout[v]
        owner = output_at.get(i)
        if (owner is not lay.root or lay.elem_offset or not is_contiguous(v.type.shape, lay.strides)
                or v.type.nbytes != owner.type.nbytes):
            _fail(None, f"output #{i} (%{v.name}) must be computed into output[{i}] (by its op, or a "
                        "full contiguous view of it)")
    if len(output_at) != len(m.outputs):
        extra = sorted(set(output_at) - set(range(len(m.outputs))))
        _fail(None, f"values stored in output{extra}, which the program does not return")
