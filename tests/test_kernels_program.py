"""Program: validation at build time (the generic field check, then each family's), binding checks at
run time, arenas, threads; and records written and read by field name."""

import threading

import numpy as np
import pytest

from rt.abi import ENUMS, MAX_EXTENT, OP_CODES
from rt.errors import KernelError, ProgramError, UsageError
from rt.kernels import (
    RECORD_DTYPE,
    Program,
    get_num_threads,
    make_record,
    operand_places,
    read_fields,
    set_num_threads,
)

from kernel_helpers import matmul_fields, set_raw_field, zero_fields


def records(*recs):
    """One-record arrays (make_record's) -> one record array."""
    return np.concatenate(recs)


def linear(M, N, K, **changes):
    """MATMUL fields of x[M, K] @ w[N, K]^T."""
    return matmul_fields(M, N, K, trans_b=True, **changes)


def mlp(M=4, D=8, H=16):
    """x -> relu(x @ w1^T + b1) -> @ w2^T: 3 ops, one arena intermediate, 4 constants."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((H, D), np.float32), rng.standard_normal(H).astype(np.float32)
    w2 = rng.standard_normal((D, H), np.float32)
    # slots: 0 arena, 1 x, 2 w1, 3 b1, 4 w2, 5 out
    rec = records(
        make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "bias": (3, 0), "out": (0, 0)}, **linear(M, H, D)),
        make_record("RELU", {"x": (0, 0), "out": (0, 0)}, n=M * H),
        make_record("MATMUL", {"a": (0, 0), "b": (4, 0), "out": (5, 0)}, **linear(M, D, H)),
    )
    sizes = [M * H * 4, M * D * 4, w1.nbytes, b1.nbytes, w2.nbytes, M * D * 4]
    prog = Program(rec, sizes, {2: w1, 3: b1, 4: w2}, [1], [5])

    def ref(x):
        return np.maximum(x @ w1.T + b1, 0) @ w2.T

    return prog, ref


def relu(x=(1, 0), out=(2, 0), n=4):
    return make_record("RELU", {"x": x, "out": out}, n=n)


def test_tiny_mlp_runs_and_reuses_arena():
    prog, ref = mlp()
    x = np.random.default_rng(1).standard_normal((4, 8), np.float32)
    for _ in range(3):
        out = np.full((4, 8), np.nan, np.float32)
        prog.run([x], [out])
        np.testing.assert_allclose(out, ref(x), rtol=1e-5, atol=1e-5)
    assert prog.nops == 3 and prog.arena_nbytes == 4 * 16 * 4


def test_concurrent_runs_get_their_own_arenas():
    prog, ref = mlp(M=64, D=32, H=64)
    xs = [np.random.default_rng(i).standard_normal((64, 32), np.float32) for i in range(4)]
    errors = []

    def work(x):
        out = np.empty((64, 32), np.float32)
        for _ in range(200):
            prog.run([x], [out])
            if not np.allclose(out, ref(x), rtol=1e-4, atol=1e-4):
                errors.append("mismatch")
                return

    threads = [threading.Thread(target=work, args=(x,)) for x in xs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _with(rec, **raw):
    """rec with raw int values (past make_record's names) in the named fields, or with its code or
    operand count replaced (`code=`, `nargs=`)."""
    rec = rec.copy()
    for name, value in raw.items():
        if name in ("code", "nargs"):
            rec[name] = value
        else:
            set_raw_field(rec, name, value)
    return rec


def _matmul_2x2x3():
    return make_record("MATMUL", {"a": (1, 0), "b": (1, 0), "out": (2, 0)}, **linear(2, 2, 3))


@pytest.mark.parametrize(
    "rec, sizes, match",
    [
        (_with(relu(), code=999), [0, 16, 16], r"op #0 \(\?\): unknown op code 999"),
        (relu(x=(7, 0)), [0, 16, 16], r"op #0 \(RELU\): operand 0: slot 7 out of range \[0, 3\)"),
        (relu(n=5), [0, 16, 16], r"op #0 \(RELU\): operand 0 \(x\) needs 20 bytes"),
        (relu(n=-1), [0, 16, 16], rf"op #0 \(RELU\): unary field n = -1 is not in \[0, {MAX_EXTENT}\]"),
        (relu(x=(1, 2), n=1), [0, 16, 16], r"op #0 \(RELU\): operand 0 \(x\) offset 2 is not 4-byte aligned"),
        (relu(x=(1, 20), n=1), [0, 16, 16], r"op #0 \(RELU\): operand 0: offset 20 outside slot 1 of 16 bytes"),
        (relu(x=None, n=1), [0, 16, 16], r"op #0 \(RELU\): operand 0 \(x\) is required but absent"),
        (_with(relu(n=1), nargs=1), [0, 16, 16], r"op #0 \(RELU\): expects 2 operands, got 1"),
        (records(relu(), _matmul_2x2x3()), [0, 16, 16], r"op #1 \(MATMUL\).*operand 0 \(a\) needs 24 bytes"),
        # the bias operand is read N floats long (its presence is the only flag)
        (make_record("MATMUL", {"a": (1, 0), "b": (1, 0), "bias": (1, 12), "out": (2, 0)}, **linear(1, 2, 2)),
         [0, 16, 16], r"op #0 \(MATMUL\): operand 2 \(bias\) needs 8 bytes but its buffer has 4 from offset 12"),
        (_with(make_record("CAST", {"x": (1, 0), "out": (2, 0)}, n=1, src="f32", dst="f32"), dst=9),
         [0, 16, 16], rf"op #0 \(CAST\): cast field dst = 9 is not in \[0, {len(ENUMS['dtype']) - 1}\]"),
        (relu(out=(1, 0)), [0, 16, 16], r"op #0 \(RELU\): writes into input slot 1"),
        (relu(x=(3, 0)), [0, 16, 16, 16], r"op #0 \(RELU\): operand 0 uses unbound slot 3"),
    ],
)
def test_bad_records_rejected_at_build(rec, sizes, match):
    with pytest.raises(ProgramError, match=match):
        Program(rec, sizes, {}, [1], [2])


# ---- the generic check: every int field against its declared range, and the operand count, before
# the family's own checker (which would otherwise read the bad value)

def _ok_matmul():
    return make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4))


def _with_element(rec, name, element, value):
    rec = rec.copy()
    set_raw_field(rec, name, value, element=element)
    return rec


def _ok_binary():
    return make_record("ADD", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, ndim=2, shape=[2, 2],
                       a_stride=[2, 1], b_stride=[2, 1], dtype="f32")


@pytest.mark.parametrize("rec, match", [
    (make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, N=-1)),
     rf"matmul field N = -1 is not in \[0, {MAX_EXTENT}\]"),
    (make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, ldb=MAX_EXTENT + 1)),
     rf"matmul field ldb = {MAX_EXTENT + 1} is not in \[0, {MAX_EXTENT}\]"),
    (make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, sb1=-(2**62))),
     rf"matmul field sb1 = {-(2**62)} is not in \[0, {MAX_EXTENT}\]"),
    (_with(_ok_matmul(), trans_a=2), r"matmul field trans_a = 2 is not in \[0, 1\]"),
    (_with(_ok_matmul(), trans_b=-1), r"matmul field trans_b = -1 is not in \[0, 1\]"),
    (_with(_ok_matmul(), act=len(ENUMS["act"])),
     rf"matmul field act = {len(ENUMS['act'])} is not in \[0, {len(ENUMS['act']) - 1}\]"),
    (_with(_ok_matmul(), b_mode=len(ENUMS["b_mode"])),
     rf"matmul field b_mode = {len(ENUMS['b_mode'])} is not in \[0, {len(ENUMS['b_mode']) - 1}\]"),
    (_with(_ok_matmul(), b_mode=-1), rf"matmul field b_mode = -1 is not in \[0, {len(ENUMS['b_mode']) - 1}\]"),
    # an array field: every element is checked, used (first ndim) or not
    (make_record("ADD", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, ndim=2, shape=[2, 2], a_stride=[2, -1],
                 b_stride=[2, 1], dtype="f32"), rf"binary field a_stride\[\] = -1 is not in \[0, {MAX_EXTENT}\]"),
    (_with_element(_ok_binary(), "b_stride", 5, -5), rf"binary field b_stride\[\] = -5 is not in \[0, {MAX_EXTENT}\]"),
    (_with(_ok_matmul(), nargs=4), r"expects 5 operands, got 4"),
    (_with(_ok_matmul(), nargs=6), r"expects 5 operands, got 6"),
])
def test_generic_field_check_refuses_out_of_range_values(rec, match):
    with pytest.raises(ProgramError, match=r"op #0 \((MATMUL|ADD)\): " + match):
        Program(rec, [0, 64, 64, 64], {}, [1, 2], [3])


def test_generic_field_check_accepts_the_limits():
    """MAX_EXTENT itself passes the generic check (MATMUL's own checker then refuses it, in its own
    words), and so do the last enum value and a flag of 1."""
    rec = make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, ldb=MAX_EXTENT))
    with pytest.raises(ProgramError, match=r"op #0 \(MATMUL\): a dim or leading dim exceeds the BLAS int range"):
        Program(rec, [0, 64, 64, 64], {}, [1, 2], [3])
    rec = make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, trans_b=True))
    set_raw_field(rec, "act", len(ENUMS["act"]) - 1)
    Program(rec, [0, 64, 64, 64], {}, [1, 2], [3])


# ---- records by name

def test_records_roundtrip_by_name():
    fields = matmul_fields(3, 5, 7, trans_b=True, act="gelu_erf", b_mode="small", alpha=0.25)
    rec = make_record("MATMUL", {"a": (1, 64), "b": (2, 0), "residual": (0, 128), "out": (0, 0)}, **fields)
    assert rec.dtype == RECORD_DTYPE and rec.shape == (1,)
    assert read_fields(rec[0]) == fields
    assert operand_places(rec[0]) == {"a": (1, 64), "b": (2, 0), "bias": None, "residual": (0, 128),
                                      "out": (0, 0)}
    assert int(rec["code"][0]) == OP_CODES["MATMUL"] and int(rec["nargs"][0]) == 5
    # arrays: up to their length, the rest 0
    rec = make_record("COPY", {"x": (1, 0), "out": (2, 0)}, **{**zero_fields("COPY"), "ndim": 2,
                                                               "shape": [3, 4], "stride": (8, 2), "itemsize": 4})
    got = read_fields(rec[0])
    assert got["shape"] == [3, 4, 0, 0, 0, 0] and got["stride"] == [8, 2, 0, 0, 0, 0] and got["itemsize"] == 4


@pytest.mark.parametrize("op, operands, fields, match", [
    ("NOPE", {}, {}, r"unknown C op 'NOPE'"),
    ("RELU", {"x": (1, 0), "y": (2, 0)}, {"n": 1}, r"RELU \(unary\) has no field\(s\) \['y'\]"),
    ("RELU", {"x": (1, 0), "out": (2, 0)}, {"n": 1, "M": 2}, r"has no field\(s\) \['M'\]"),
    ("SOFTMAX", {"x": (1, 0), "out": (2, 0)}, {"rows": 1}, r"SOFTMAX \(softmax\) record misses field\(s\) \['cols'\]"),
    ("CAST", {"x": (1, 0), "out": (2, 0)}, {"n": 1, "src": "f16", "dst": "f32"},
     r"cast field src takes one of \('f32', 'i64', 'bool', 'i32', 'f64'\), got 'f16'"),
    ("CAST", {"x": (1, 0), "out": (2, 0)}, {"n": 1, "src": 0, "dst": "f32"}, r"cast field src takes one of"),
    ("ADD", {"a": (1, 0), "b": (1, 0), "out": (2, 0)}, {"ndim": 7, "shape": [1] * 7, "a_stride": [], "b_stride": [], "dtype": "f32"},
     r"ADD field shape holds 6 values, got 7"),
])
def test_make_record_refuses_what_is_not_a_field(op, operands, fields, match):
    with pytest.raises(ProgramError, match=match):
        make_record(op, operands, **fields)


def test_records_handed_out_are_copies():
    """What Python can reach is never what runs: changing it changes nothing."""
    prog, ref = mlp()
    recs = prog.records
    recs.flags.writeable = True
    recs["ip"][:] = 2**40
    assert (prog.records["ip"] != 2**40).any()
    assert read_fields(prog.records[0]) == linear(4, 16, 8)
    x, out = np.ones((4, 8), np.float32), np.empty((4, 8), np.float32)
    prog.run([x], [out])
    np.testing.assert_allclose(out, ref(x), rtol=1e-5)


def test_bad_bindings_rejected():
    rec = relu()
    with pytest.raises(ProgramError, match="output slot 1 is bound twice"):
        Program(rec, [0, 16, 16], {}, [1], [1])
    with pytest.raises(ProgramError, match=r"input slot 0 out of range \[1, 3\)"):
        Program(rec, [0, 16, 16], {}, [0], [2])
    with pytest.raises(ProgramError, match="constant for slot 1: has 12 bytes, slot 1 holds 16"):
        Program(rec, [0, 16, 16], {1: np.zeros(3, np.float32)}, [], [2])


def test_run_checks_arrays():
    prog = Program(relu(), [0, 16, 16], {}, [1], [2])
    x, out = np.ones(4, np.float32), np.empty(4, np.float32)
    prog.run([x], [out])
    with pytest.raises(ProgramError, match="expected 1 inputs and 1 outputs"):
        prog.run([x], [])
    with pytest.raises(ProgramError, match="has 32 bytes"):
        prog.run([np.ones(8, np.float32)], [out])
    with pytest.raises(ProgramError, match="C-contiguous"):
        prog.run([np.ones(8, np.float32)[::2]], [out])
    ro = np.empty(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ProgramError, match="writeable"):
        prog.run([x], [ro])
    with pytest.raises(ProgramError, match="input 0: expected a numpy array, got list"):
        prog.run([[1.0, 2.0, 3.0, 4.0]], [out])


def _embedding_after_relu():
    table = np.ones((10, 4), np.float32)
    rec = records(make_record("RELU", {"x": (1, 0), "out": (0, 0)}, n=40),
                  make_record("EMBEDDING", {"table": (0, 0), "idx": (2, 0), "out": (3, 0)}, n=3, vocab=10, dim=4,
                              row_stride=4, col_stride=1))
    return rec, [160, 160, 24, 48], {1: table}


def test_embedding_error_names_op_in_program():
    rec, sizes, consts = _embedding_after_relu()
    prog = Program(rec, sizes, consts, [2], [3])
    out = np.empty((3, 4), np.float32)
    prog.run([np.array([1, 2, 9], np.int64)], [out])
    with pytest.raises(KernelError, match=r"op #1 \(EMBEDDING\) failed: index \(detail 10\)"):
        prog.run([np.array([1, 10, 2], np.int64)], [out])
    prog.run([np.array([0, 0, 0], np.int64)], [out])  # the program is still usable


def test_failed_run_is_explained_by_the_callback():
    """explain(error name, op index, detail) makes the exception (the executor's speaks of the model)."""
    seen = []

    def explain(error, i, detail):
        seen.append((error, i, detail))
        return IndexError(f"token {detail} out of range in op {i}")

    rec, sizes, consts = _embedding_after_relu()
    prog = Program(rec, sizes, consts, [2], [3], None, explain)
    out = np.empty((3, 4), np.float32)
    with pytest.raises(IndexError, match="token -3 out of range in op 1"):
        prog.run([np.array([1, -3, 2], np.int64)], [out])
    assert seen == [("index", 1, -3)] and "index" in ENUMS["error"]


def test_threads_roundtrip():
    n = get_num_threads()
    try:
        set_num_threads(1)
        assert get_num_threads() == 1
        prog, ref = mlp()
        x = np.ones((4, 8), np.float32)
        out = np.empty((4, 8), np.float32)
        prog.run([x], [out])
        np.testing.assert_allclose(out, ref(x), rtol=1e-5, atol=1e-5)
    finally:
        set_num_threads(n)
    with pytest.raises(UsageError, match="at least one thread"):
        set_num_threads(0)


def test_many_slots_chain():
    """More slots than the per-call stack array: a chain of 40 in-place-free NEG ops."""
    n, k = 5, 40
    # slot 0 arena (unused), slot 1 input, slots 2..k outputs of each step, slot k+1 out
    ops = records(*(make_record("NEG", {"x": (1 + i, 0), "out": (2 + i, 0)}, n=n) for i in range(k)))
    inner = list(range(2, k + 1))
    consts = {}
    sizes = [0] + [4 * n] * (k + 1)
    # intermediates are outputs too, so every slot is bound
    prog = Program(ops, sizes, consts, [1], inner + [k + 1])
    x = np.arange(n, dtype=np.float32)
    outs = [np.empty(n, np.float32) for _ in range(k)]
    prog.run([x], outs)
    np.testing.assert_array_equal(outs[-1], x)  # an even number of negations
    np.testing.assert_array_equal(outs[0], -x)
    with pytest.raises(RuntimeError, match="already"):
        prog.__init__(ops, sizes, consts, [1], inner + [k + 1])


def test_variant_is_minus_one_for_ops_without_a_choice():
    prog, _ = mlp()
    assert prog.variant(0) == ENUMS["b_mode"].index("blas") and prog.variant(1) == -1
    with pytest.raises(IndexError):
        prog.variant(3)


def test_operands_a_kernel_writes_besides_its_out_never_land_in_inputs_or_constants():
    """ADD_LAYER_NORM's sum and ATTENTION's scratch are written too (rt.abi marks them): a program
    that binds them to an input or a constant is refused before it runs."""
    from rt.errors import ProgramError
    x = np.ones((2, 4), np.float32)
    rec = make_record("ADD_LAYER_NORM", {"x": (1, 0), "residual": (2, 0), "sum": (2, 0), "out": (3, 0)},
                      rows=2, cols=4, eps=1e-5)
    with pytest.raises(ProgramError, match=r"ADD_LAYER_NORM\): writes into input slot 2"):
        Program(rec, [0, x.nbytes, x.nbytes, x.nbytes], {}, [1, 2], [3])
    rec = make_record("ADD_LAYER_NORM", {"x": (1, 0), "residual": (2, 0), "sum": (4, 0), "out": (3, 0)},
                      rows=2, cols=4, eps=1e-5)
    sum_ = np.zeros((2, 4), np.float32)
    sum_.flags.writeable = False
    with pytest.raises(ProgramError, match=r"writes into constant slot 4"):
        Program(rec, [0, x.nbytes, x.nbytes, x.nbytes, x.nbytes], {4: sum_}, [1, 2], [3])


def test_make_record_refuses_bad_flags_and_array_shapes():
    with pytest.raises(ProgramError, match="trans_a is a flag"):
        make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4, trans_a=2))
    with pytest.raises(ProgramError, match="shape takes up to 6 ints"):
        make_record("ADD", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, ndim=1, shape=4, a_stride=[1], b_stride=[1], dtype="f32")
