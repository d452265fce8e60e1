"""Both executors over one planned program.

`CompiledProgram` builds the flat op-record array once and runs the whole program in one C call.
`OpByOpProgram` runs the very same records one at a time (the arena is then an ordinary buffer
bound like an input), timing each op: the debugging and profiling executor. The numpy-reference
executor is rt.interpreter.run_reference.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..dialects.ir import Module, Operation, Value
from ..dialects.planned_kernels import Operand
from ..dialects.registry import REGISTRY, VIEW
from ..errors import LoweringError
from ..dialects.strides import contiguous_strides
from . import _runtime


class ProgramLayout:
    """Slot table of a planned module: 0 = arena, then inputs, outputs, constants."""

    def __init__(self, planned: Module):
        self.module = planned
        self.arena_bytes = planned.meta["plan"]["arena_bytes"]
        self.input_slots = [1 + i for i in range(len(planned.inputs))]
        self.output_slots = [1 + len(planned.inputs) + i for i in range(len(planned.outputs))]
        self.const_slot: dict[str, int] = {}
        self.constants: dict[int, np.ndarray] = {}
        nbytes = [self.arena_bytes] + [v.type.nbytes for v in planned.inputs] + \
                 [v.type.nbytes for v in planned.outputs]
        for op in planned.ops:
            if op.name == "const" and op.attrs["name"] not in self.const_slot:
                arr = np.ascontiguousarray(planned.constants[op.attrs["name"]])
                self.const_slot[op.attrs["name"]] = len(nbytes)
                self.constants[len(nbytes)] = arr
                nbytes.append(arr.nbytes)
        self.slot_nbytes = np.array(nbytes, dtype=np.int64)

    def operand(self, v: Value) -> Operand:
        """Where a value lives: slot, byte offset and element strides. A view's storage is relative to
        its root (the planner resolves view chains)."""
        offset, strides = 0, None
        ttype = v.type
        if v.storage.kind == "view":
            offset, strides = v.storage.offset, v.storage.strides
            v = v.storage.base
        st = v.storage
        if st.kind == "arena":
            slot, offset = 0, offset + st.offset
        elif st.kind == "input":
            slot = self.input_slots[st.index]
        elif st.kind == "output":
            slot = self.output_slots[st.index]
        elif st.kind == "const":
            slot = self.const_slot[v.producer.attrs["name"]]
        else:
            raise LoweringError(f"%{v.name}: unknown storage {st.kind}")
        return Operand(slot, offset, strides if strides is not None else contiguous_strides(ttype.shape), ttype)

    def encode(self) -> tuple[np.ndarray, list[Operation]]:
        """The op-record array, and the planned op each record runs."""
        rows, ops = [], []
        for op in self.module.ops:
            if op.name == "const" or REGISTRY[op.name].has(VIEW):
                continue
            facts = REGISTRY[op.name].extra
            if "encode" not in facts:
                raise LoweringError(f"{op.name} (%{op.result.name}) has no C kernel yet")
            args = [None if v is None else self.operand(v) for v in op.operands]
            kargs, ip, fp = facts["encode"](op, args, self.operand(op.result))
            rows.append((facts["c_op"], kargs, ip, fp))
            ops.append(op)
        codes = _runtime.op_codes()
        records = np.zeros(len(rows), dtype=_runtime.RECORD_DTYPE)
        for i, (kname, kargs, ip, fp) in enumerate(rows):
            r = records[i]
            r["code"] = codes[kname]
            r["nargs"] = len(kargs)
            r["slot"][:] = -1
            for j, a in enumerate(kargs):
                if a is not None:
                    r["slot"][j] = a.slot
                    r["offset"][j] = a.offset
            r["ip"][:len(ip)] = ip
            r["fp"][:len(fp)] = fp
        _share_packed_constants(records, set(self.constants))
        return records, ops


_MATMUL = _runtime.op_codes()["MATMUL"]
_COPIES_B = (_runtime.MATMUL_B_MODES["packed"], _runtime.MATMUL_B_MODES["split"])


def _packs_b(record) -> bool:
    """Whether the op keeps a copy of its operand 1 (a MATMUL's constant B: oneDNN-packed or split)
    and reads the original no more."""
    return record["code"] == _MATMUL and record["ip"][19] in _COPIES_B


def _share_packed_constants(records: np.ndarray, const_slots: set[int]) -> None:
    """A matmul packs its constant B for oneDNN only when no other operand anywhere reads that constant
    (e.g. GPT-2's tied embedding / LM-head table): else it reads B in place, so no weight is held twice
    at full size. The split form stays even then: it is smaller than B, and the other readers of a
    model loaded from its file fault in only the pages of B they touch (an embedding: a few rows)."""
    reads: dict[int, int] = {}
    for r in records:
        for slot in r["slot"][:r["nargs"]]:
            if slot in const_slots:
                reads[int(slot)] = reads.get(int(slot), 0) + 1
    for r in records:
        if r["code"] == _MATMUL and r["ip"][19] == _runtime.MATMUL_B_MODES["packed"] and reads[int(r["slot"][1])] > 1:
            r["ip"][19] = _runtime.MATMUL_B_MODES["onednn"]


def _outputs_for(module: Module) -> list[np.ndarray]:
    return [np.empty(v.type.shape, dtype=v.type.np_dtype) for v in module.outputs]


class CompiledProgram:
    """The production executor: one C call per run, GIL released inside."""

    def __init__(self, planned: Module, drop_packed: Callable[[np.ndarray], None] | None = None):
        """drop_packed(constant) is called as soon as a matmul holds its own copy of that constant
        (oneDNN-packed or split), so the original's pages may be given back before the next is made
        (a split table's other reader, an embedding, faults back in only the rows it gathers)."""
        self.layout = ProgramLayout(planned)
        records, _ = self.layout.encode()
        lay = self.layout
        after_prepare = None
        if drop_packed is not None:
            def after_prepare(i: int) -> None:
                if _packs_b(records[i]):
                    drop_packed(lay.constants[int(records[i]["slot"][1])])
        self.program = _runtime.Program(records, lay.slot_nbytes, lay.constants,
                                        lay.input_slots, lay.output_slots, after_prepare)
        self.records = self.program.records    # as they run (a split weight may have fallen back to BLAS)
        self.program.set_signature([(v.type.shape, v.type.np_dtype) for v in planned.inputs],
                                   [(v.type.shape, v.type.np_dtype) for v in planned.outputs])

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        outs = _outputs_for(self.layout.module)
        self.program.run(inputs, outs)
        return outs


class OpByOpProgram:
    """The same records run one per C call, with a persistent arena, timing each op."""

    def __init__(self, planned: Module):
        lay = ProgramLayout(planned)
        self.layout = lay
        records, self.ops = lay.encode()
        n = len(lay.slot_nbytes)
        arena_slot = n               # the arena becomes an ordinary caller-bound (writable) buffer
        slot_nbytes = np.append(lay.slot_nbytes, lay.arena_bytes).astype(np.int64)
        slot_nbytes[0] = 0
        self.programs = []
        for i in range(len(records)):
            rec = records[i:i + 1].copy()
            rec["slot"][rec["slot"] == 0] = arena_slot
            self.programs.append(_runtime.Program(rec, slot_nbytes, lay.constants,
                                                  lay.input_slots, [arena_slot] + lay.output_slots))

    def run(self, inputs: list[np.ndarray], timings: list | None = None) -> list[np.ndarray]:
        """timings, when given, receives (planned op, start, seconds) per op."""
        outs = _outputs_for(self.layout.module)
        arena = np.empty(self.layout.arena_bytes, dtype=np.uint8)
        bound = [arena] + outs
        for op, prog in zip(self.ops, self.programs):
            t0 = time.perf_counter()
            prog.run(inputs, bound)
            if timings is not None:
                timings.append((op, t0, time.perf_counter() - t0))
        return outs
