# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Python face of the C runtime: Program (validate, prepare and run op records), threads, and this
machine's facts (CPU features, oneDNN in the build).

Ops, record fields and constants are declared in rt/abi.py (C reads them as the generated rt_abi.h);
records are written by rt.kernels.records; this module checks both sides agree, then binds buffers.
"""
import os
import sys

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

cnp.import_array()

from rt.abi import ENUMS, OPS
from rt.errors import KernelError, ProgramError, UsageError
from rt.kernels.records import RECORD_DTYPE

cdef extern from "rt_program.h" nogil:
    enum:
        RT_MAX_ARGS
        RT_OP_COUNT
        RT_OK
        RT_ERR_INDEX
        RT_ERR_NOMEM
        RT_ERR_BACKEND

    ctypedef struct rt_op:       # the fields Python touches; ip/fp are filled by rt.kernels.records
        int32_t code
        int32_t nargs
        int32_t slot[8]
        int64_t offset[8]
        void *state

    ctypedef struct rt_status:
        int32_t code
        int32_t op_index
        int64_t detail

    const char *rt_op_name(int32_t code)
    int64_t rt_attention_scratch_floats(int64_t Sk, int64_t D, int64_t Dv)
    int64_t rt_qweight_bytes(int fmt, int64_t n, int64_t k, int64_t group, int zp)
    int64_t rt_qmatmul_scratch_bytes(int fmt, int64_t m, int64_t k)
    int64_t rt_conv_winograd_scratch_bytes(int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t o, int64_t m)
    int64_t rt_program_check(const rt_op *ops, int64_t nops, const int64_t *slot_nbytes,
                             int64_t nslots, char *msg, size_t msglen)
    int rt_program_run(const rt_op *ops, int64_t nops, char *const *slots, rt_status *st)
    int rt_op_prepare(rt_op *op, char *const *arg, char *msg, size_t msglen)
    void rt_op_release(rt_op *op)
    int rt_op_variant(const rt_op *op)
    void rt_program_prepared(const rt_op *ops, int64_t nops)
    int rt_have_onednn()
    int rt_split_fast()
    int64_t rt_cpu_features()
    void rt_set_num_threads(int n, int adapt)
    int rt_get_num_threads()
    int rt_threads_in_use()

cdef extern from *:
    """
    #include <stdlib.h>
    #include "rt_program.h"
    static const size_t rt_record_layout_[8] = {
        sizeof(rt_op), offsetof(rt_op, code), offsetof(rt_op, nargs), offsetof(rt_op, slot),
        offsetof(rt_op, offset), offsetof(rt_op, ip), offsetof(rt_op, fp), offsetof(rt_op, state)};
    static void *rt_arena_alloc(size_t n) {
        /* RT_ALIGN-aligned; touched once here so runs never page-fault on it. */
        size_t size = (n + RT_ALIGN - 1) & ~(size_t)(RT_ALIGN - 1);
        void *p = aligned_alloc(RT_ALIGN, size ? size : RT_ALIGN);
        if (p) memset(p, 0, size);
        return p;
    }
    """
    const size_t rt_record_layout_[8]
    void *rt_arena_alloc(size_t n) nogil

HAVE_ONEDNN = bool(rt_have_onednn())   # this build has oneDNN
SPLIT_FAST = bool(rt_split_fast())     # this CPU decodes split weights with AVX-512 (matvec_split.c)


def cpu_features():
    """This CPU's features among rt.abi.CPU_FEATURES (C asks the CPU)."""
    from rt.abi import CPU_FEATURES
    bits = rt_cpu_features()
    return tuple(f for i, f in enumerate(CPU_FEATURES) if bits >> i & 1)


def record_layout():
    """C's sizeof(rt_op) and field offsets, to check RECORD_DTYPE against."""
    names = ("itemsize", "code", "nargs", "slot", "offset", "ip", "fp", "state")
    return {n: int(rt_record_layout_[i]) for i, n in enumerate(names)}


def _check_abi():
    layout = record_layout()
    mine = {"itemsize": RECORD_DTYPE.itemsize}
    mine.update({n: RECORD_DTYPE.fields[n][1] for n in RECORD_DTYPE.names})
    if mine != layout:
        raise ImportError(f"RECORD_DTYPE {mine} does not match the C rt_op layout {layout}")
    names = tuple(rt_op_name(i).decode() for i in range(RT_OP_COUNT))
    if names != tuple(o.name for o in OPS):
        raise ImportError(f"the compiled runtime's ops {names} are not rt.abi's: rebuild rt")


_check_abi()

# Where a record's size fields sit, in int64 words (bound_to_sizes rewrites only these).
cdef int64_t _OFFSET_WORD = rt_record_layout_[4] // 8
cdef int64_t _IP_WORD = rt_record_layout_[5] // 8
cdef int64_t _FP_WORD = rt_record_layout_[6] // 8

# Per op code: the operand indices its kernel writes.
_WRITTEN = tuple(frozenset(i for i, f in enumerate(o.family.args) if f.written) for o in OPS)


def attention_scratch_floats(int64_t Sk, int64_t D, int64_t Dv):
    """C's own count of ATTENTION's per-thread scratch floats (rt.abi mirrors it)."""
    return rt_attention_scratch_floats(Sk, D, Dv)


def qweight_bytes(str fmt, int64_t n, int64_t k, int64_t group, bint zero_point):
    """C's own size of a packed weight (rt.abi mirrors it)."""
    return rt_qweight_bytes(ENUMS["weight_format"].index(fmt), n, k, group, zero_point)


def qmatmul_scratch_bytes(str fmt, int64_t m, int64_t k):
    """C's own size of QMATMUL's scratch (rt.abi mirrors it)."""
    return rt_qmatmul_scratch_bytes(ENUMS["weight_format"].index(fmt), m, k)


def conv_winograd_scratch_bytes(int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t o, int64_t m):
    """C's own size of a Winograd CONV's scratch (rt.abi mirrors it)."""
    return rt_conv_winograd_scratch_bytes(n, oh, ow, c, o, m)


def set_num_threads(int n, adapt=None):
    """Threads for rt's OpenMP loops (OpenBLAS stays on one). With adapt (default: RT_ADAPT_THREADS, on),
    runs use fewer while other processes keep cores busy (csrc/threads.c); adapt=False pins the count."""
    if n < 1:
        raise UsageError(f"need at least one thread, got {n}")
    rt_set_num_threads(n, _default_adapt() if adapt is None else bool(adapt))


def get_num_threads():
    """The thread count asked for (set_num_threads, RT_NUM_THREADS, or this process's cores)."""
    return rt_get_num_threads()


def threads_in_use():
    """The threads runs use now: get_num_threads(), or fewer while other processes hold cores."""
    return rt_threads_in_use()


def _default_threads():
    env = os.environ.get("RT_NUM_THREADS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise UsageError(f"RT_NUM_THREADS must be a positive integer, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _default_adapt():
    env = os.environ.get("RT_ADAPT_THREADS", "1")
    if env not in ("0", "1"):
        raise UsageError(f"RT_ADAPT_THREADS must be 0 (a fixed thread count) or 1, got {env!r}")
    return env == "1"


set_num_threads(_default_threads())

cdef enum:
    # Slots bound per call up to this count live on the stack.
    STACK_SLOTS = 32
    # Arenas kept for reuse; more concurrent calls than this allocate and free their own.
    POOL_CAP = 8

cdef enum SlotKind:
    UNBOUND, ARENA, CONSTANT, INPUT, OUTPUT


cdef class Program:
    """A validated op array plus its buffer slots; run() executes it in one C call.

    Slot 0 is the arena (per-call scratch, pooled); constants are bound once and held
    by reference; input and output slots are bound at each run().
    """
    cdef object _records     # the validated records self.ops points into: never handed out
    cdef object _constants
    cdef dict _constant_slots            # the slot -> array dict it was built with
    cdef list _kinds                     # each slot's binding (ARENA, CONSTANT, INPUT, OUTPUT, UNBOUND)
    cdef rt_op *ops
    cdef readonly int64_t nops
    cdef int64_t nprepared
    cdef int64_t nslots
    cdef readonly int64_t arena_nbytes
    cdef int64_t *slot_nbytes
    cdef char **template
    cdef int32_t *in_slots
    cdef int32_t *out_slots
    cdef int32_t *const_slots
    cdef Py_ssize_t nin, nout, nconst
    # Idle arenas. Taken and given back only while holding the GIL (this module does not
    # declare itself free-threading safe, so the GIL exists), which is their lock.
    cdef void *pool[POOL_CAP]
    cdef int npool
    cdef tuple _in_types, _out_types
    cdef list _in_dims, _out_dims      # per input / output: its shape as npy_intp (C-level checks, PyArray_EMPTY)
    cdef object _explain
    cdef Program _arena_owner          # the program whose arenas and prepared state this one uses, or None

    def __init__(self, records, slot_nbytes, dict constants, list input_slots, list output_slots,
                 after_prepare=None, explain=None):
        """after_prepare(i), when given, is called once op i has made something of its own (its
        state: a primitive, a packed or split copy of a constant; see _prepare). explain(error, i,
        detail), when given, makes the exception a failed run raises (error: a name of
        rt.abi.ENUMS["error"]; i: the failing op; detail: e.g. the bad index), so the message can
        speak of the model rather than of records. A dynamic model's program at other sizes comes
        from bound_to_sizes."""
        if self.slot_nbytes != NULL:
            raise RuntimeError("Program is already initialised")
        # Private copies: the caller cannot change what was validated.
        recs = np.array(records, dtype=RECORD_DTYPE, copy=True, order="C").reshape(-1)
        sizes = np.array(slot_nbytes, dtype=np.int64, copy=True).reshape(-1)
        cdef int64_t i, nslots = sizes.shape[0]
        if nslots < 1:
            raise ProgramError("need at least slot 0 (the arena)")
        if (sizes < 0).any():
            raise ProgramError(f"negative slot size in {sizes.tolist()}")
        self._records = recs
        self._explain = explain
        self.nops = recs.shape[0]
        self.nslots = nslots
        self.arena_nbytes = sizes[0]
        self.ops = <rt_op *>cnp.PyArray_DATA(recs)
        for i in range(self.nops):
            self.ops[i].state = NULL
        self.slot_nbytes = <int64_t *>malloc(nslots * sizeof(int64_t))
        self.template = <char **>malloc(nslots * sizeof(char *))
        self.in_slots = <int32_t *>malloc((len(input_slots) + 1) * sizeof(int32_t))
        self.out_slots = <int32_t *>malloc((len(output_slots) + 1) * sizeof(int32_t))
        self.const_slots = <int32_t *>malloc((len(constants) + 1) * sizeof(int32_t))
        if not (self.slot_nbytes and self.template and self.in_slots and self.out_slots and self.const_slots):
            raise KernelError("out of memory building the program's slot tables")
        memcpy(self.slot_nbytes, cnp.PyArray_DATA(sizes), nslots * sizeof(int64_t))
        memset(self.template, 0, nslots * sizeof(char *))

        kind = [UNBOUND] * nslots
        kind[0] = ARENA
        bindings = [(s, CONSTANT, "constant") for s in constants]
        bindings += [(s, INPUT, "input") for s in input_slots]
        bindings += [(s, OUTPUT, "output") for s in output_slots]
        for slot, k, what in bindings:
            if not 0 < slot < nslots:
                raise ProgramError(f"{what} slot {slot} out of range [1, {nslots})")
            if kind[slot] != UNBOUND:
                raise ProgramError(f"{what} slot {slot} is bound twice")
            kind[slot] = k

        for i, (slot, arr) in enumerate(constants.items()):
            self._check_array(arr, slot, f"constant for slot {slot}", False)
            self.template[slot] = <char *>cnp.PyArray_DATA(arr)
            self.const_slots[i] = slot
        self.nconst = len(constants)
        self._constants = list(constants.values())
        self._constant_slots = constants
        self.nin, self.nout = len(input_slots), len(output_slots)
        for i, slot in enumerate(input_slots):
            self.in_slots[i] = slot
        for i, slot in enumerate(output_slots):
            self.out_slots[i] = slot

        cdef char msg[512]
        cdef int64_t bad = rt_program_check(self.ops, self.nops, self.slot_nbytes, nslots,
                                            msg, sizeof(msg))
        if bad >= 0:
            raise ProgramError(f"op #{bad} ({self._name(bad)}): {msg.decode()}")
        cdef int a
        self._kinds = kind
        for i in range(self.nops):
            for a in range(self.ops[i].nargs):
                s = self.ops[i].slot[a]
                if s < 0:
                    continue
                if kind[s] == UNBOUND:
                    raise ProgramError(f"op #{i} ({self._name(i)}): operand {a} uses unbound slot {s}")
                # the operands a kernel writes (its out, and those rt.abi marks written)
                if a in _WRITTEN[self.ops[i].code] and kind[s] in (CONSTANT, INPUT):
                    raise ProgramError(f"op #{i} ({self._name(i)}): writes into "
                                     f"{'constant' if kind[s] == CONSTANT else 'input'} slot {s}")
        self._prepare(after_prepare)

    def bound_to_sizes(self, cnp.ndarray words, cnp.ndarray values, slot_nbytes):
        """This program at other (smaller) sizes, for a dynamic model (rt.kernels.bind): its records
        with words[j] (an index into the records as int64 words, inside an op's ip fields or operand
        offsets) set to values[j], and these slot sizes; checked again in C, run on this program's
        prepared state (oneDNN primitives, packed weights: each kernel adapts them to its record's
        sizes) and its arenas. Costs a copy of the records and the check, nothing per op in Python."""
        if self._arena_owner is not None:
            raise ProgramError("bind sizes on the program at the largest sizes")
        words = np.ascontiguousarray(words, dtype=np.intp).reshape(-1)
        values = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
        sizes = np.ascontiguousarray(slot_nbytes, dtype=np.int64).reshape(-1)
        if words.shape[0] != values.shape[0] or sizes.shape[0] != self.nslots:
            raise ProgramError(f"bound_to_sizes: {words.shape[0]} words for {values.shape[0]} values, "
                               f"{sizes.shape[0]} slot sizes for {self.nslots} slots")
        cdef const cnp.npy_intp *w = <const cnp.npy_intp *>cnp.PyArray_DATA(words)
        cdef const int64_t *v = <const int64_t *>cnp.PyArray_DATA(values)
        cdef const int64_t *n = <const int64_t *>cnp.PyArray_DATA(sizes)
        cdef Py_ssize_t j, nwords = words.shape[0]
        cdef int64_t i, per = sizeof(rt_op) // 8, at
        for j in range(nwords):
            at = w[j] % per if w[j] >= 0 else -1
            if w[j] >= self.nops * per or not (_OFFSET_WORD <= at < _OFFSET_WORD + RT_MAX_ARGS
                                               or _IP_WORD <= at < _FP_WORD):
                raise ProgramError(f"bound_to_sizes: word {w[j]} is not an op's size field")
        for i in range(self.nslots):
            if n[i] < 0:
                raise ProgramError(f"bound_to_sizes: slot {i} of {n[i]} bytes")
        if n[0] > self.arena_nbytes:
            raise ProgramError(f"bound_to_sizes: an arena of {n[0]} bytes, more than the "
                               f"{self.arena_nbytes} planned")
        for j in range(self.nconst):
            if n[self.const_slots[j]] != self.slot_nbytes[self.const_slots[j]]:
                raise ProgramError(f"bound_to_sizes: constant slot {self.const_slots[j]} changes size")

        cdef Program p = Program.__new__(Program)
        recs = np.empty_like(self._records)     # a bytewise copy: numpy copies records field by field
        cdef int64_t *rw = <int64_t *>cnp.PyArray_DATA(recs)
        memcpy(rw, self.ops, self.nops * sizeof(rt_op))
        for j in range(nwords):
            rw[w[j]] = v[j]
        p._records = recs
        p.ops = <rt_op *>rw
        p._explain = self._explain
        p.nops, p.nslots, p.arena_nbytes = self.nops, self.nslots, n[0]
        p._arena_owner = self
        p.slot_nbytes = <int64_t *>malloc(self.nslots * sizeof(int64_t))
        p.template = <char **>malloc(self.nslots * sizeof(char *))
        p.in_slots = <int32_t *>malloc((self.nin + 1) * sizeof(int32_t))
        p.out_slots = <int32_t *>malloc((self.nout + 1) * sizeof(int32_t))
        p.const_slots = <int32_t *>malloc((self.nconst + 1) * sizeof(int32_t))
        if not (p.slot_nbytes and p.template and p.in_slots and p.out_slots and p.const_slots):
            raise KernelError("out of memory building the program's slot tables")
        memcpy(p.slot_nbytes, n, self.nslots * sizeof(int64_t))
        memcpy(p.template, self.template, self.nslots * sizeof(char *))
        memcpy(p.in_slots, self.in_slots, self.nin * sizeof(int32_t))
        memcpy(p.out_slots, self.out_slots, self.nout * sizeof(int32_t))
        memcpy(p.const_slots, self.const_slots, self.nconst * sizeof(int32_t))
        p.nin, p.nout, p.nconst = self.nin, self.nout, self.nconst
        p._constants, p._constant_slots, p._kinds = self._constants, self._constant_slots, self._kinds
        cdef char msg[512]
        cdef int64_t bad = rt_program_check(p.ops, p.nops, p.slot_nbytes, p.nslots, msg, sizeof(msg))
        if bad >= 0:
            raise ProgramError(f"op #{bad} ({p._name(bad)}): {msg.decode()}")
        cdef int a
        for i in range(self.nops):      # prepared state was made for these constants: they stay put
            if self.ops[i].state == NULL:
                continue
            for a in range(self.ops[i].nargs):
                if (self.ops[i].slot[a] > 0 and self.template[self.ops[i].slot[a]] != NULL
                        and p.ops[i].offset[a] != self.ops[i].offset[a]):
                    raise ProgramError(f"op #{i} ({self._name(i)}): bound to other constants")
        return p

    cdef _prepare(self, after_prepare):
        """Let each op make what it needs once (oneDNN primitives, packed weights). It sees only
        the constants: every other operand is NULL, as nothing else is bound yet."""
        cdef char *arg[RT_MAX_ARGS]
        cdef char msg[512]
        cdef int a
        cdef int32_t s
        for i in range(self.nops):
            for a in range(RT_MAX_ARGS):
                s = self.ops[i].slot[a] if a < self.ops[i].nargs else -1
                arg[a] = self.template[s] + self.ops[i].offset[a] if s > 0 else NULL
            if rt_op_prepare(&self.ops[i], arg, msg, sizeof(msg)):
                raise ProgramError(f"op #{i} ({self._name(i)}): {msg.decode()}")
            self.nprepared = i + 1
            if after_prepare is not None and self.ops[i].state != NULL:
                after_prepare(i)
        rt_program_prepared(self.ops, self.nops)

    def variant(self, int64_t i):
        """How prepared op i runs where that differs by state from its record: a MATMUL's b_mode
        (rt.abi.ENUMS["b_mode"] index) after preparing; -1 for ops without such a choice."""
        if not 0 <= i < self.nops:
            raise IndexError(i)
        return rt_op_variant(&self.ops[i])

    @property
    def records(self):
        """A copy of the validated records (state cleared): changing it changes nothing that runs."""
        out = self._records.copy()
        out["state"] = 0
        return out

    def __dealloc__(self):
        cdef int64_t i
        for i in range(self.nprepared):
            rt_op_release(&self.ops[i])
        for i in range(self.npool):
            free(self.pool[i])
        free(self.slot_nbytes)
        free(self.template)
        free(self.in_slots)
        free(self.out_slots)
        free(self.const_slots)

    cdef str _name(self, int64_t i):
        cdef const char *n = rt_op_name(self.ops[i].code)
        return n.decode() if n != NULL else "?"

    cdef int _check_array(self, object obj, int64_t slot, str what, bint writable) except -1:
        if not isinstance(obj, cnp.ndarray):
            raise ProgramError(f"{what}: expected a numpy array, got {type(obj).__name__}")
        cdef cnp.ndarray arr = <cnp.ndarray>obj
        cdef int need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        if writable:
            need |= cnp.NPY_ARRAY_WRITEABLE
        if (cnp.PyArray_FLAGS(arr) & need) != need:
            raise ProgramError(f"{what}: array must be C-contiguous, aligned"
                             f"{' and writeable' if writable else ''}")
        if not cnp.PyArray_ISNOTSWAPPED(arr):
            raise ProgramError(f"{what}: array is in non-native byte order ({arr.dtype.str}); "
                             "convert it with .astype(arr.dtype.newbyteorder('='))")
        if cnp.PyArray_NBYTES(arr) != self.slot_nbytes[slot]:
            raise ProgramError(f"{what}: has {cnp.PyArray_NBYTES(arr)} bytes, "
                             f"slot {slot} holds {self.slot_nbytes[slot]}")
        return 0

    cdef void *_take_arena(self) except NULL:
        cdef void *p = NULL
        if self._arena_owner is not None:
            return self._arena_owner._take_arena()
        if self.npool > 0:
            self.npool -= 1
            p = self.pool[self.npool]
        if p == NULL:
            p = rt_arena_alloc(self.arena_nbytes)
            if p == NULL:
                raise KernelError(f"out of memory: cannot allocate an arena of {self.arena_nbytes} bytes")
        return p

    cdef void _give_arena(self, void *p):
        if self._arena_owner is not None:
            self._arena_owner._give_arena(p)
            return
        if self.npool < POOL_CAP:
            self.pool[self.npool] = p
            self.npool += 1
            p = NULL
        free(p)

    def run(self, list inputs, list outputs):
        """Run the program on input arrays, writing into output arrays (exact sizes)."""
        if len(inputs) != self.nin or len(outputs) != self.nout:
            raise ProgramError(f"expected {self.nin} inputs and {self.nout} outputs, "
                             f"got {len(inputs)} and {len(outputs)}")
        cdef Py_ssize_t i
        for i in range(self.nin):
            self._check_array(inputs[i], self.in_slots[i], f"input {i}", False)
        for i in range(self.nout):
            self._check_array(outputs[i], self.out_slots[i], f"output {i}", True)
        self._execute(tuple(inputs), outputs)

    def set_signature(self, list input_types, list output_types):
        """Declare each input's and output's exact (shape, dtype): enables call()."""
        if len(input_types) != self.nin or len(output_types) != self.nout:
            raise ProgramError("one (shape, dtype) per input and per output")
        for i, (shape, dtype) in enumerate(input_types):
            if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != self.slot_nbytes[self.in_slots[i]]:
                raise ProgramError(f"input {i}: {shape} {dtype} does not fill its slot")
        for i, (shape, dtype) in enumerate(output_types):
            if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != self.slot_nbytes[self.out_slots[i]]:
                raise ProgramError(f"output {i}: {shape} {dtype} does not fill its slot")
        self._in_types = tuple((len(s), np.dtype(d).num) for s, d in input_types)
        self._in_dims = [np.array(s, dtype=np.intp).reshape(-1) for s, _ in input_types]
        self._out_types = tuple((len(s), np.dtype(d).num) for s, d in output_types)
        self._out_dims = [np.array(s, dtype=np.intp).reshape(-1) for s, _ in output_types]

    cdef list _call_exact(self, tuple args):
        """The fast path: run on positional C-contiguous arrays of exactly the declared shapes and
        dtypes and return new outputs, or None when an argument does not fit (the caller then
        checks it the slow way and explains what is wrong)."""
        if self._in_types is None or len(args) != self.nin:
            return None
        cdef Py_ssize_t i
        cdef cnp.ndarray arr
        cdef int need = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED
        cdef int ndim, typenum
        for i in range(self.nin):
            x = args[i]
            if type(x) is not np.ndarray:
                return None
            arr = <cnp.ndarray>x
            ndim, typenum = self._in_types[i]
            if (cnp.PyArray_TYPE(arr) != typenum or (cnp.PyArray_FLAGS(arr) & need) != need
                    or not cnp.PyArray_ISNOTSWAPPED(arr) or cnp.PyArray_NDIM(arr) != ndim
                    or memcmp(cnp.PyArray_DIMS(arr), cnp.PyArray_DATA(self._in_dims[i]),
                              ndim * sizeof(cnp.npy_intp)) != 0):
                return None
        cdef int typenum_out
        outputs = []
        for i in range(self.nout):
            ndim, typenum_out = self._out_types[i]
            outputs.append(cnp.PyArray_EMPTY(ndim, <cnp.npy_intp *>cnp.PyArray_DATA(self._out_dims[i]),
                                             typenum_out, 0))
        self._execute(args, outputs)
        return outputs

    cdef _execute(self, tuple inputs, list outputs):
        """Bind checked arrays to their slots and run every op in one C call without the GIL."""
        cdef char *stack_slots[STACK_SLOTS]
        cdef char **slots = stack_slots
        if self.nslots > STACK_SLOTS:
            slots = <char **>malloc(self.nslots * sizeof(char *))
            if slots == NULL:
                raise KernelError("out of memory binding the call's slots")
        cdef Py_ssize_t i
        cdef rt_status st
        cdef int rc
        cdef void *arena = NULL
        try:
            memcpy(slots, self.template, self.nslots * sizeof(char *))
            for i in range(self.nin):
                slots[self.in_slots[i]] = <char *>cnp.PyArray_DATA(<cnp.ndarray>inputs[i])
            for i in range(self.nout):
                slots[self.out_slots[i]] = <char *>cnp.PyArray_DATA(<cnp.ndarray>outputs[i])
            arena = self._take_arena()
            slots[0] = <char *>arena
            with nogil:
                rc = rt_program_run(self.ops, self.nops, slots, &st)
        finally:
            if arena != NULL:
                self._give_arena(arena)
            if slots != stack_slots:
                free(slots)
        if rc != RT_OK:
            self._raise(st)

    cdef _raise(self, rt_status st):
        from rt.abi import ENUMS
        errors = ENUMS["error"]
        error = errors[st.code] if 0 <= st.code < len(errors) else f"code {st.code}"
        if self._explain is not None:
            raise self._explain(error, st.op_index, st.detail)
        raise KernelError(f"op #{st.op_index} ({self._name(st.op_index)}) failed: {error} "
                          f"(detail {st.detail})")


cdef tuple _torch_as_numpy(tuple args):
    """args with each CPU torch tensor as the numpy array sharing its memory, or None when an argument
    is neither a numpy array nor such a tensor (or is a tensor that needs a copy: grad, other device)."""
    torch = sys.modules.get("torch")      # never import torch here: a loaded model runs without it
    if torch is None:
        return None
    cdef list arrays = []
    for x in args:
        if type(x) is np.ndarray:
            arrays.append(x)
            continue
        if not isinstance(x, torch.Tensor):
            return None
        try:
            arrays.append(x.numpy())
        except (RuntimeError, TypeError):
            return None
    return tuple(arrays)


cdef class FastCallable:
    """A model's calling convention (rt's CompiledModel derives from it): a call of positional numpy
    arrays, or CPU torch tensors, of exactly the program's input types runs `_fast_program` from here, with
    no Python frame on the way (a tiny model's whole call is ~1 us; tensors in give tensors out, sharing
    memory); any other call goes to self._call(args, kwargs), which converts or explains. `_pack`, when
    not None, gives the outputs the model's structure (else one output comes back bare, several as a tuple)."""
    cdef public Program _fast_program
    cdef public object _pack

    def __call__(self, *args, **kwargs):
        cdef list outs = None
        cdef tuple arrays
        if not kwargs and self._fast_program is not None:
            outs = self._fast_program._call_exact(args)
            if outs is None:
                arrays = _torch_as_numpy(args)
                if arrays is not None:
                    outs = self._fast_program._call_exact(arrays)
                    if outs is not None:
                        outs = [sys.modules["torch"].from_numpy(o) for o in outs]
        if outs is None:
            return self._call(args, kwargs)
        if self._pack is not None:
            return self._pack(outs)
        return outs[0] if len(outs) == 1 else tuple(outs)
