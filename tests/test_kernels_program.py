"""Program: validation at build time, binding checks at run time, arenas, threads."""

import threading

import numpy as np
import pytest

from rt.kernels import RECORD_DTYPE, Program, get_num_threads, op_codes, set_num_threads

OPS = op_codes()


def records(*ops):
    """ops: (name, [(slot, offset), ...], ip, fp) tuples -> record array."""
    rec = np.zeros(len(ops), RECORD_DTYPE)
    for r, (name, operands, ip, fp) in zip(rec, ops):
        r["code"] = OPS[name] if isinstance(name, str) else name
        r["nargs"] = len(operands)
        r["slot"][:] = -1
        for i, (slot, off) in enumerate(operands):
            r["slot"][i], r["offset"][i] = slot, off
        r["ip"][: len(ip)] = ip
        r["fp"][: len(fp)] = fp
    return rec


def matmul_ip(M, N, K, has_bias=0, act=0):
    """Plain x[M,K] @ w[N,K]^T (+ bias)."""
    return [1, 1, M, N, K, 0, 1, K, K, N, 0, 0, 0, 0, 0, 0, act, has_bias, 0]


def mlp(M=4, D=8, H=16):
    """x -> relu(x @ w1^T + b1) -> @ w2^T: 3 ops, one arena intermediate, 4 constants."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((H, D), np.float32), rng.standard_normal(H).astype(np.float32)
    w2 = rng.standard_normal((D, H), np.float32)
    # slots: 0 arena, 1 x, 2 w1, 3 b1, 4 w2, 5 out
    rec = records(
        ("MATMUL", [(1, 0), (2, 0), (3, 0), (-1, 0), (0, 0)], matmul_ip(M, H, D, 1), [1.0]),
        ("RELU", [(0, 0), (0, 0)], [M * H], []),
        ("MATMUL", [(0, 0), (4, 0), (-1, 0), (-1, 0), (5, 0)], matmul_ip(M, D, H), [1.0]),
    )
    sizes = [M * H * 4, M * D * 4, w1.nbytes, b1.nbytes, w2.nbytes, M * D * 4]
    prog = Program(rec, sizes, {2: w1, 3: b1, 4: w2}, [1], [5])

    def ref(x):
        return np.maximum(x @ w1.T + b1, 0) @ w2.T

    return prog, ref


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


@pytest.mark.parametrize(
    "rec, sizes, match",
    [
        (records((999, [(1, 0), (2, 0)], [4], [])), [0, 16, 16], r"op #0 \(\?\): unknown op code 999"),
        (records(("RELU", [(7, 0), (2, 0)], [4], [])), [0, 16, 16], r"op #0 \(RELU\).*slot 7 out of range"),
        (records(("RELU", [(1, 0), (2, 0)], [5], [])), [0, 16, 16], r"op #0 \(RELU\).*needs 20 bytes"),
        (records(("RELU", [(1, 0), (2, 0)], [-1], [])), [0, 16, 16], r"op #0 \(RELU\).*negative"),
        (records(("RELU", [(1, 2), (2, 0)], [1], [])), [0, 16, 16], r"op #0 \(RELU\).*aligned"),
        (records(("RELU", [(1, 0)], [1], [])), [0, 16, 16], r"op #0 \(RELU\).*expects 2 operands"),
        (records(("RELU", [(1, 0), (2, 0)], [4], []), ("MATMUL", [(1, 0), (1, 0), (-1, 0), (-1, 0), (2, 0)],
                                                     matmul_ip(2, 2, 3), [1.0])),
         [0, 16, 16], r"op #1 \(MATMUL\).*operand 0 \(a\) needs 24 bytes"),
        (records(("MATMUL", [(1, 0), (1, 0), (-1, 0), (-1, 0), (2, 0)], matmul_ip(1, 2, 2, has_bias=1), [1.0])),
         [0, 16, 16], r"op #0 \(MATMUL\).*has_bias=1 but bias operand is absent"),
        (records(("CAST", [(1, 0), (2, 0)], [1, 0, 9], [])), [0, 16, 16], r"op #0 \(CAST\).*unknown dtype"),
        (records(("RELU", [(1, 0), (1, 0)], [4], [])), [0, 16, 16], r"op #0 \(RELU\).*writes into input slot 1"),
        (records(("RELU", [(3, 0), (2, 0)], [4], [])), [0, 16, 16, 16], r"op #0 \(RELU\).*unbound slot 3"),
    ],
)
def test_bad_records_rejected_at_build(rec, sizes, match):
    with pytest.raises(ValueError, match=match):
        Program(rec, sizes, {}, [1], [2])


def test_records_handed_out_are_copies():
    """What Python can reach is never what runs: changing it changes nothing."""
    prog, ref = mlp()
    recs = prog.records
    recs.flags.writeable = True
    recs["ip"][:] = 2**40
    assert (prog.records["ip"] != 2**40).any()
    x, out = np.ones((4, 8), np.float32), np.empty((4, 8), np.float32)
    prog.run([x], [out])
    np.testing.assert_allclose(out, ref(x), rtol=1e-5)


def test_bad_bindings_rejected():
    rec = records(("RELU", [(1, 0), (2, 0)], [4], []))
    with pytest.raises(ValueError, match="bound twice"):
        Program(rec, [0, 16, 16], {}, [1], [1])
    with pytest.raises(ValueError, match="out of range"):
        Program(rec, [0, 16, 16], {}, [0], [2])
    with pytest.raises(ValueError, match="16"):
        Program(rec, [0, 16, 16], {1: np.zeros(3, np.float32)}, [], [2])


def test_run_checks_arrays():
    prog = Program(records(("RELU", [(1, 0), (2, 0)], [4], [])), [0, 16, 16], {}, [1], [2])
    x, out = np.ones(4, np.float32), np.empty(4, np.float32)
    prog.run([x], [out])
    with pytest.raises(ValueError, match="expected 1 inputs and 1 outputs"):
        prog.run([x], [])
    with pytest.raises(ValueError, match="has 32 bytes"):
        prog.run([np.ones(8, np.float32)], [out])
    with pytest.raises(ValueError, match="C-contiguous"):
        prog.run([np.ones(8, np.float32)[::2]], [out])
    ro = np.empty(4, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        prog.run([x], [ro])
    with pytest.raises(TypeError, match="numpy array"):
        prog.run([[1.0, 2.0, 3.0, 4.0]], [out])


def test_embedding_error_names_op_in_program():
    table = np.ones((10, 4), np.float32)
    rec = records(("RELU", [(1, 0), (0, 0)], [40], []),
                  ("EMBEDDING", [(0, 0), (2, 0), (3, 0)], [3, 10, 4, 4, 1], []))
    prog = Program(rec, [160, 160, 24, 48], {1: table}, [2], [3])
    out = np.empty((3, 4), np.float32)
    prog.run([np.array([1, 2, 9], np.int64)], [out])
    with pytest.raises(IndexError, match=r"op #1 \(EMBEDDING\): index 10 .* 10 rows"):
        prog.run([np.array([1, 10, 2], np.int64)], [out])
    prog.run([np.array([0, 0, 0], np.int64)], [out])  # the program is still usable


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
    with pytest.raises(ValueError):
        set_num_threads(0)


def test_many_slots_chain():
    """More slots than the per-call stack array: a chain of 40 in-place-free NEG ops."""
    n, k = 5, 40
    # slot 0 arena (unused), slot 1 input, slots 2..k outputs of each step, slot k+1 out
    ops = [("NEG", [(1 + i, 0), (2 + i, 0)], [n], []) for i in range(k)]
    inner = list(range(2, k + 1))
    consts = {}
    sizes = [0] + [4 * n] * (k + 1)
    # intermediates are outputs too, so every slot is bound
    prog = Program(records(*ops), sizes, consts, [1], inner + [k + 1])
    x = np.arange(n, dtype=np.float32)
    outs = [np.empty(n, np.float32) for _ in range(k)]
    prog.run([x], outs)
    np.testing.assert_array_equal(outs[-1], x)  # an even number of negations
    np.testing.assert_array_equal(outs[0], -x)
    with pytest.raises(RuntimeError, match="already"):
        prog.__init__(records(*ops), sizes, consts, [1], inner + [k + 1])
