"""Both executors over one planned program.

`CompiledProgram` builds the op-record array once (the records step, encode.py) and runs the whole
program in one C call. `OpByOpProgram` runs the very same records one at a time (the arena is then an
ordinary buffer bound like an input), timing each op: the debugging and profiling executor. The
numpy-reference executor is rt.interpreter.run_reference.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

import numpy as np

from ..abi import ENUMS
from ..dialects.ir import Module, Operation, Value
from ..errors import IndexOutOfRangeError, KernelError
from ..target import Target
from . import _runtime
from ..dialects.instantiate import sizes_of
from .bind import SizeBinder
from .encode import Encoded, ProgramLayout

# Modes in which a MATMUL keeps its own copy of B (oneDNN-packed or split) and reads the original no more.
_COPIES_B = {"packed", "split"}
# Programs bound to distinct sizes kept per dynamic model (records only: they share constants and arenas).
BOUND_SIZES = 16


def _source_input(v: Value) -> str | None:
    """The model input a value was computed from through views and casts, if any."""
    while v.producer is not None and v.storage is not None and v.storage.kind != "input":
        ops = [o for o in v.producer.operands if o is not None]
        if len(ops) != 1:
            return None
        v = ops[0]
    return v.name if v.storage is not None and v.storage.kind == "input" else None


def _explainer(ops: list[Operation], encoded: list[Encoded]):
    """explain(error, i, detail) for _runtime.Program: a failed run in the model's terms."""
    def explain(error: str, i: int, detail: int) -> Exception:
        op = ops[i]
        where = f"{op.name} (%{op.result.name})"
        if error == "index" and encoded[i].c_op == "EMBEDDING":
            idx = op.operands[1]
            src = _source_input(idx)
            vocab = encoded[i].fields["vocab"]
            what = f"input {src!r}" if src else f"%{idx.name}"
            return IndexOutOfRangeError(f"{what} holds index {detail}, outside [0, {vocab}) for the "
                                        f"embedding table of {vocab} rows read by {where}")
        if error == "backend":
            return KernelError(f"{where}: oneDNN failed to run the op (dnnl_status_t {detail})")
        if error == "nomem":
            return KernelError(f"{where}: out of memory")
        return KernelError(f"{where}: kernel failed ({error}, detail {detail})")
    return explain


def _outputs_for(module: Module) -> list[np.ndarray]:
    return [np.empty(v.type.shape, dtype=v.type.np_dtype) for v in module.outputs]


class CompiledProgram:
    """The production executor: one C call per run, GIL released inside."""

    def __init__(self, planned: Module, target: Target,
                 drop_packed: Callable[[np.ndarray], None] | None = None, weights_in_place: bool = False):
        """drop_packed(constant) is called as soon as a matmul holds its own copy of that constant
        (oneDNN-packed or split), so the original's pages may be given back before the next is made
        (a split table's other reader, an embedding, faults back in only the rows it gathers).
        weights_in_place: every op reads its weights where they are (programs sharing them)."""
        self.layout = lay = ProgramLayout(planned)
        self.target = target
        records, self.ops, self.encoded = lay.encode(target, weights_in_place)
        self.dynamic = bool(lay.symbols)
        after_prepare = None
        if drop_packed is not None:
            def after_prepare(i: int) -> None:
                e = self.encoded[i]
                if e.c_op == "MATMUL" and e.fields["b_mode"] in _COPIES_B:
                    drop_packed(lay.constants[e.operands["b"].slot])
        self._explain = _explainer(self.ops, self.encoded)
        # states (persistent buffers: a generator's KV caches) are bound like outputs, after them
        self._out_slots = lay.output_slots + lay.state_slots
        self.program = _runtime.Program(records, lay.slot_nbytes, lay.constants, lay.input_slots,
                                        self._out_slots, after_prepare, self._explain)
        if self.dynamic:     # self.program is the one at the largest sizes; others are bound per size
            self.binder = SizeBinder(records.dtype, lay.sized, lay.slot_sizes,
                                     [v.type.shape for v in planned.inputs + planned.outputs])
            self._at_sizes: OrderedDict = OrderedDict()
            self._at_sizes_lock = threading.Lock()
            return
        self.program.set_signature([(v.type.shape, v.type.np_dtype) for v in planned.inputs],
                                   [(v.type.shape, v.type.np_dtype) for v in planned.outputs]
                                   + [(t.shape, t.np_dtype) for t in lay.state_types])

    def run(self, inputs: list[np.ndarray], states: list[np.ndarray] = (),
            sizes: dict[str, int] | None = None) -> list[np.ndarray]:
        """states: the persistent buffers (ProgramLayout.state_types), updated in place; sizes: the
        dynamic sizes the inputs' shapes do not give (a KV cache's past length)."""
        if self.dynamic:
            env = dict(sizes or {})
            env.update(sizes_of(self.layout.module, [x.shape for x in inputs]))
            program, shapes = self.at_sizes(env)
            outs = [np.empty(s, dtype=v.type.np_dtype) for s, v in zip(shapes, self.layout.module.outputs)]
            program.run(inputs, outs + list(states))
            return outs
        outs = _outputs_for(self.layout.module)
        self.program.run(inputs, outs + list(states))
        return outs

    def at_sizes(self, env: dict[str, int]) -> tuple["_runtime.Program", list[tuple]]:
        """The program bound to these sizes, and its outputs' shapes (the last BOUND_SIZES kept)."""
        key = tuple(env[s] for s in self.binder.symbols)
        with self._at_sizes_lock:       # calls from several threads share the cache
            hit = self._at_sizes.get(key)
            if hit is not None:
                self._at_sizes.move_to_end(key)
                return hit
        values, slot_nbytes, shapes = self.binder.bind(env)
        program = self.program.bound_to_sizes(self.binder.words, values, slot_nbytes)
        hit = (program, shapes[len(self.layout.module.inputs):])
        with self._at_sizes_lock:
            self._at_sizes[key] = hit
            if len(self._at_sizes) > BOUND_SIZES:
                self._at_sizes.popitem(last=False)
        return hit

    def kernel_plan(self) -> list[dict]:
        """Per C op as it runs: the planned op, the kernel, and for a MATMUL its mode (after preparing:
        a split weight the form could not hold runs on BLAS), B's layout and whether B is a weight
        packed/split into rt's own copy or read in place while shared with other ops; for a CONV its
        mode ("direct": oneDNN's convolution, "winograd4x4" / "winograd2x2": rt's Winograd tiles)."""
        plan = []
        lay = self.layout
        for i, (op, e) in enumerate(zip(self.ops, self.encoded)):
            row = {"op": op.name, "value": op.result.name, "kernel": e.c_op}
            if e.c_op == "MATMUL":
                mode = ENUMS["b_mode"][self.program.variant(i)]
                b = e.operands["b"]
                const = b.slot in lay.constants
                row.update(mode=mode, b_layout="[N, K]" if e.fields["trans_b"] else "[K, N]",
                           b_constant=const,
                           b_shared=const and self.program_reads(b.slot) > 1,
                           b_copy=mode in _COPIES_B,
                           shape=(e.fields["M"], e.fields["N"], e.fields["K"]))
            elif e.c_op == "CONV":
                m = e.fields["wino_tile"]
                row.update(mode=f"winograd{m}x{m}" if m else "direct")
            plan.append(row)
        return plan

    def constants_read_in_place(self) -> list[np.ndarray]:
        """The constants some op still reads where they were given (all but those a MATMUL holds its
        own packed or split copy of, as it runs after preparing)."""
        lay = self.layout
        read = {v.slot for i, e in enumerate(self.encoded) for name, v in e.operands.items()
                if v is not None and v.slot in lay.constants
                and not (e.c_op == "MATMUL" and name == "b" and ENUMS["b_mode"][self.program.variant(i)] in _COPIES_B)}
        return [lay.constants[s] for s in sorted(read)]

    def program_reads(self, slot: int) -> int:
        return sum(1 for e in self.encoded for v in e.operands.values() if v is not None and v.slot == slot)


class OpByOpProgram:
    """The same records run one per C call, with a persistent arena, timing each op."""

    def __init__(self, planned: Module, target: Target):
        lay = ProgramLayout(planned)
        self.layout = lay
        records, self.ops, encoded = lay.encode(target)
        n = len(lay.slot_nbytes)
        arena_slot = n               # the arena becomes an ordinary caller-bound (writable) buffer
        slot_nbytes = np.append(lay.slot_nbytes, lay.arena_bytes).astype(np.int64)
        slot_nbytes[0] = 0
        self.programs = []
        for i in range(len(records)):
            rec = records[i:i + 1].copy()
            rec["slot"][rec["slot"] == 0] = arena_slot
            explain = _explainer(self.ops[i:i + 1], encoded[i:i + 1])
            self.programs.append(_runtime.Program(rec, slot_nbytes, lay.constants, lay.input_slots,
                                                  [arena_slot] + lay.output_slots + lay.state_slots, None,
                                                  explain))

    def run(self, inputs: list[np.ndarray], timings: list | None = None,
            states: list[np.ndarray] = ()) -> list[np.ndarray]:
        """timings, when given, receives (planned op, start, seconds) per op; states as for
        CompiledProgram.run."""
        outs = _outputs_for(self.layout.module)
        arena = np.empty(self.layout.arena_bytes, dtype=np.uint8)
        bound = [arena] + outs + list(states)
        for op, prog in zip(self.ops, self.programs):
            t0 = time.perf_counter()
            prog.run(inputs, bound)
            if timings is not None:
                timings.append((op, t0, time.perf_counter() - t0))
        return outs
