"""Each C kernel against a float64 numpy reference written here, run as a one-op Program whose
record is written by field name (tests/kernel_helpers.py)."""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rt.abi
from rt.abi import ENUMS, MATVEC_SMALL_ELEMS
from rt.errors import KernelError, ProgramError
from rt.kernels import (
    HAVE_ONEDNN,
    SPLIT_FAST,
    Program,
    attention_scratch_floats,
    get_num_threads,
    make_record,
    read_fields,
    set_num_threads,
)

from kernel_helpers import attention_fields, copy_fields, empty, matmul_fields, run_program, set_raw_field

# Sizes that hit edge cases: 1, odd, around SIMD widths and panel sizes.
SIZES = st.sampled_from([1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 64, 65, 100, 129])
SMALL = st.integers(1, 5)
SETTINGS = settings(max_examples=40, deadline=None, database=None)


def assert_close(out, ref):
    ref = np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(out.astype(np.float64) - ref))) if ref.size else 0.0
    assert err <= 1e-5 * scale, f"max abs err {err:.3g} (scale {scale:.3g})"


def rand(rng, *shape, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, np.float32)


_erf = np.frompyfunc(math.erf, 1, 1)
REF_UNARY = {
    "RELU": lambda x: np.maximum(x, 0),
    "GELU_TANH": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "GELU_ERF": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)).astype(np.float64)),
    "TANH": np.tanh,
    "SIGMOID": lambda x: 1 / (1 + np.exp(-x)),
    "NEG": np.negative,
    "EXP": np.exp,
    "SQRT": np.sqrt,
    "RSQRT": lambda x: 1 / np.sqrt(x),
}
# MATMUL epilogue activations by rt.abi.ENUMS["act"] name
ACTS = {"none": lambda x: x, "relu": REF_UNARY["RELU"], "gelu_tanh": REF_UNARY["GELU_TANH"],
        "gelu_erf": REF_UNARY["GELU_ERF"], "silu": lambda x: x / (1 + np.exp(-x))}
ACT_NAMES = st.sampled_from(ENUMS["act"])
B_MODE = {name: i for i, name in enumerate(ENUMS["b_mode"])}


# ---------------------------------------------------------------- unary

@pytest.mark.parametrize("name", list(REF_UNARY))
@SETTINGS
@given(n=st.one_of(SIZES, st.integers(0, 70000)), inplace=st.booleans(), seed=st.integers(0, 2**16))
def test_unary(name, n, inplace, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, n, scale=3.0)
    if name in ("SQRT", "RSQRT"):
        x = np.abs(x) + 0.1
    if name == "EXP":
        x = np.clip(x, -80, 80)
    ref = REF_UNARY[name](x.astype(np.float64))
    out = x if inplace else empty(n)
    run_program(name, {"x": x, "out": out}, n=n)
    assert_close(out, ref)


def test_unary_special_values():
    x = np.array([-np.inf, np.inf, 0.0, -0.0, 100.0, -100.0, 1e-30, -200.0], np.float32)
    for name in ("EXP", "TANH", "SIGMOID", "GELU_TANH", "GELU_ERF", "RELU"):
        out = empty(x.size)
        with np.errstate(all="ignore"):
            ref = REF_UNARY[name](x.astype(np.float64)).astype(np.float32)
        run_program(name, {"x": x, "out": out}, n=x.size)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7, err_msg=name)
    out = empty(1)
    run_program("EXP", {"x": np.array([np.nan], np.float32), "out": out}, n=1)
    assert np.isnan(out[0])


# ---------------------------------------------------------------- binary

REF_BINARY = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "DIV": np.divide}


def strides_of(arr, shape):
    """Element strides of arr broadcast to shape (0 where broadcast)."""
    full = np.broadcast_to(arr, shape)
    return [s // arr.itemsize for s in full.strides]


@pytest.mark.parametrize("name", list(REF_BINARY))
@SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_binary_broadcast(name, data, seed):
    rng = np.random.default_rng(seed)
    ndim = data.draw(st.integers(0, 4))
    shape = tuple(data.draw(st.lists(SIZES, min_size=ndim, max_size=ndim)))
    if np.prod(shape) > 200000:
        shape = shape[:-1]
        ndim -= 1
    amask = data.draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
    bmask = data.draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
    a = rand(rng, *[1 if m else s for s, m in zip(shape, amask)])
    b = rand(rng, *[1 if m else s for s, m in zip(shape, bmask)])
    if name == "DIV":
        b = np.where(np.abs(b) < 0.1, 1.0, b).astype(np.float32)
    transposed = ndim >= 2 and data.draw(st.booleans())
    if transposed:  # a read through non-contiguous strides
        a = np.ascontiguousarray(np.swapaxes(a, 0, 1))
        a_view = np.swapaxes(a, 0, 1)
    else:
        a_view = a
    ref = np.broadcast_to(REF_BINARY[name](a_view.astype(np.float64), b.astype(np.float64)), shape)
    inplace = data.draw(st.sampled_from(["no", "a", "b"]))
    if inplace == "a" and a_view.shape == shape and not transposed:
        out = a
    elif inplace == "b" and b.shape == shape:
        out = b
    else:
        out = empty(shape)
    run_program(name, {"a": a, "b": b, "out": out}, ndim=ndim, shape=shape,
                a_stride=strides_of(a_view, shape), b_stride=strides_of(b, shape), dtype="f32")
    assert_close(out, ref)


@pytest.mark.parametrize("shape", [(300, 257), (70000,), (3, 40000)])
def test_binary_row_broadcast_large(shape):
    rng = np.random.default_rng(0)
    a, b = rand(rng, *shape), rand(rng, shape[-1])
    out = empty(shape)
    run_program("ADD", {"a": a, "b": b, "out": out}, ndim=len(shape), shape=shape,
                a_stride=strides_of(a, shape), b_stride=strides_of(b, shape), dtype="f32")
    assert_close(out, a.astype(np.float64) + b)


# ---------------------------------------------------------------- softmax, layer norm

@SETTINGS
@given(rows=SIZES, cols=SIZES, inplace=st.booleans(), seed=st.integers(0, 2**16))
def test_softmax(rows, cols, inplace, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, rows, cols, scale=10.0)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    ref = e / e.sum(-1, keepdims=True)
    out = x if inplace else empty((rows, cols))
    run_program("SOFTMAX", {"x": x, "out": out}, rows=rows, cols=cols)
    assert_close(out, ref)


def test_softmax_masked_entries_and_all_masked_row():
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf] * 3], np.float32)
    out = empty(x.shape)
    run_program("SOFTMAX", {"x": x, "out": out}, rows=2, cols=3)
    e = np.exp([0.0, 1.0])
    assert_close(out[0], [e[0] / e.sum(), 0.0, e[1] / e.sum()])
    assert np.isnan(out[1]).all()  # as torch.softmax


@SETTINGS
@given(rows=SIZES, cols=SIZES, affine=st.sampled_from(["none", "gamma", "both"]),
       inplace=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_norm(rows, cols, affine, inplace, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, rows, cols, scale=3.0) + 5.0  # offset mean tests the centred variance
    gamma = rand(rng, cols) if affine != "none" else None
    beta = rand(rng, cols) if affine == "both" else None
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    ref = (x64 - mean) / np.sqrt(((x64 - mean) ** 2).mean(-1, keepdims=True) + 1e-5)
    if gamma is not None:
        ref = ref * gamma
    if beta is not None:
        ref = ref + beta
    out = x if inplace else empty((rows, cols))
    run_program("LAYER_NORM", {"x": x, "gamma": gamma, "beta": beta, "out": out}, rows=rows, cols=cols,
                eps=1e-5)
    assert_close(out, ref)


@SETTINGS
@given(rows=SIZES, cols=SIZES, with_sum=st.booleans(), alias=st.sampled_from(["none", "x", "res"]),
       seed=st.integers(0, 2**16))
def test_add_layer_norm(rows, cols, with_sum, alias, seed):
    rng = np.random.default_rng(seed)
    x, res = rand(rng, rows, cols), rand(rng, rows, cols)
    gamma, beta = rand(rng, cols), rand(rng, cols)
    s64 = x.astype(np.float64) + res
    mean = s64.mean(-1, keepdims=True)
    ref = (s64 - mean) / np.sqrt(((s64 - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    # The sum may overwrite x (the residual stream updated in place); out may too.
    out = {"none": empty((rows, cols)), "x": x, "res": res}[alias]
    total = (x if alias != "x" else empty((rows, cols))) if with_sum else None
    run_program("ADD_LAYER_NORM", {"x": x, "residual": res, "gamma": gamma, "beta": beta, "sum": total,
                                   "out": out}, rows=rows, cols=cols, eps=1e-5)
    assert_close(out, ref)
    if with_sum:
        assert_close(total, s64)


# ---------------------------------------------------------------- matmul

def assert_matmul_case(rng, b1, b2, M, N, K, ta, tb, act, has_bias, has_res, alpha, bcast_b, pad,
                       res_inplace=False, b_mode="blas"):
    """One MATMUL against float64 numpy; returns the program (for what it says of how it ran)."""
    arows, acols = (K, M) if ta else (M, K)
    brows, bcols = (N, K) if tb else (K, N)
    lda, ldb, ldc = max(acols, 1) + pad, max(bcols, 1) + pad, max(N, 1) + pad
    a = rand(rng, b1, b2, arows, lda)
    b = rand(rng, brows, ldb) if bcast_b else rand(rng, b1, b2, brows, ldb)
    bias = rand(rng, N) if has_bias else None
    res = rand(rng, b1, b2, M, ldc) if has_res else None
    opa = a[..., :acols].astype(np.float64)
    opb = b[..., :bcols].astype(np.float64)
    opa = np.swapaxes(opa, -1, -2) if ta else opa
    opb = np.swapaxes(opb, -1, -2) if tb else opb
    ref = alpha * (opa @ opb)
    if has_bias:
        ref = ref + bias
    if has_res:
        ref = ref + res[..., :N]
    ref = ACTS[act](ref)
    if res_inplace:
        out = res
    else:
        out = empty((b1, b2, M, ldc))
    sb1, sb2 = (0, 0) if bcast_b else (b2 * brows * ldb, brows * ldb)
    # modes other than BLAS take B as a constant, prepared when the program is built
    prog = run_program("MATMUL", {"a": a, "b": b, "bias": bias, "residual": res, "out": out},
                       constant={"b"} if b_mode in ("onednn", "packed", "split") else (),
                       b1=b1, b2=b2, M=M, N=N, K=K, trans_a=bool(ta), trans_b=bool(tb), lda=lda, ldb=ldb,
                       ldc=ldc, sa1=b2 * arows * lda, sa2=arows * lda, sb1=sb1, sb2=sb2, sc1=b2 * M * ldc,
                       sc2=M * ldc, act=act, b_mode=b_mode, alpha=alpha)
    assert_close(out[..., :N], ref)
    if pad and not res_inplace:  # padding columns of C are never written
        assert np.isnan(out[..., N:]).all()
    return prog


def test_every_matmul_activation_has_a_reference():
    assert set(ENUMS["act"]) <= set(ACTS)


@SETTINGS
@given(M=SIZES, N=SIZES, K=SIZES, ta=st.booleans(), tb=st.booleans(), act=ACT_NAMES,
       has_bias=st.booleans(), has_res=st.booleans(), alpha=st.sampled_from([1.0, 0.125, -2.0]),
       pad=st.sampled_from([0, 3]), seed=st.integers(0, 2**16))
def test_matmul_2d(M, N, K, ta, tb, act, has_bias, has_res, alpha, pad, seed):
    assert_matmul_case(np.random.default_rng(seed), 1, 1, M, N, K, ta, tb, act, has_bias,
                       has_res, alpha, False, pad)


@SETTINGS
@given(b1=SMALL, b2=SMALL, M=SIZES, N=SIZES, K=SIZES, ta=st.booleans(), tb=st.booleans(),
       act=ACT_NAMES, has_bias=st.booleans(), has_res=st.booleans(),
       bcast_b=st.booleans(), seed=st.integers(0, 2**16))
def test_matmul_batched(b1, b2, M, N, K, ta, tb, act, has_bias, has_res, bcast_b, seed):
    assert_matmul_case(np.random.default_rng(seed), b1, b2, M, N, K, ta, tb, act, has_bias,
                       has_res, 1.0, bcast_b, 0)


@pytest.mark.parametrize("M, N", [(1, 96), (64, 96), (300, 96), (513, 40), (1, 300), (70, 300),
                                  (300, 300), (600, 257)])
@pytest.mark.parametrize("act", ["none", "relu", "gelu_erf"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matmul_split_and_panels(M, N, act, threads):
    """Products split by rows or columns over threads, row panels past 256 rows, and
    M == 1 (gemv); every block gets its epilogue."""
    rng = np.random.default_rng(M * N)
    saved = get_num_threads()
    set_num_threads(threads)
    try:
        for tb in (False, True):
            assert_matmul_case(rng, 1, 1, M, N, 80, False, tb, act, True, True, 1.0, False, 0)
            assert_matmul_case(rng, 1, 1, M, N, 80, True, tb, act, True, False, 0.5, False, 2)
    finally:
        set_num_threads(saved)


@pytest.mark.parametrize("N, K", [(64, 64), (65, 3), (130, 126), (128, 128), (129, 128), (16, 1025),
                                  (1, 16385)])
@pytest.mark.parametrize("ta, tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_matmul_one_row_both_sides_of_the_small_path(N, K, ta, tb):
    """One-row products on B up to 128x128 elements run rt's own loops (b_mode small: whole and
    partial 64-column blocks) or BLAS sgemv; larger ones BLAS sgemv only (small refuses them); both
    with alpha, bias, residual beside or in C."""
    rng = np.random.default_rng(N * K)
    modes = ["blas"] + (["small"] if N * K <= MATVEC_SMALL_ELEMS else [])
    for b_mode in modes:
        prog = assert_matmul_case(rng, 1, 1, 1, N, K, ta, tb, "relu", True, True, -0.5, False, 3,
                                  b_mode=b_mode)
        assert prog.variant(0) == B_MODE[b_mode]
        assert_matmul_case(rng, 1, 1, 1, N, K, ta, tb, "none", False, True, 1.0, False, 0, res_inplace=True,
                           b_mode=b_mode)
    if N * K > MATVEC_SMALL_ELEMS:
        with pytest.raises(ProgramError, match=rf"small matmuls take one row and at most {MATVEC_SMALL_ELEMS}"):
            assert_matmul_case(rng, 1, 1, 1, N, K, ta, tb, "none", False, False, 1.0, False, 0, b_mode="small")


@pytest.mark.parametrize("M, N, K", [(2, 8, 8), (1, 128, 129)])
def test_matmul_small_refuses_what_it_cannot_run(M, N, K):
    """b_mode small is one row on at most MATVEC_SMALL_ELEMS weights; the kernel never picks it itself."""
    a, b, out = np.ones((M, K), np.float32), np.ones((K, N), np.float32), empty((M, N))
    with pytest.raises(ProgramError, match=rf"op #0 \(MATMUL\): small matmuls take one row and at most "
                                           rf"{MATVEC_SMALL_ELEMS} weights"):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(M, N, K, b_mode="small"))


@pytest.mark.parametrize("M", [1, 7, 300])
def test_matmul_residual_is_output(M):
    assert_matmul_case(np.random.default_rng(1), 1, 1, M, 33, 17, False, True, "gelu_tanh", True, True, 1.0,
                       False, 0, res_inplace=True)
    assert_matmul_case(np.random.default_rng(2), 2, 3, M, 33, 17, False, False, "none", False, True, 1.0, True,
                       0, res_inplace=True)


needs_split = pytest.mark.skipif(not SPLIT_FAST, reason="this CPU has no AVX-512 split decoder")


@needs_split
@SETTINGS
@given(N=SIZES, K=SIZES, tb=st.booleans(), act=ACT_NAMES, has_bias=st.booleans(),
       res=st.sampled_from(["none", "other", "output"]), alpha=st.sampled_from([1.0, -0.5]),
       pad=st.sampled_from([0, 3]), threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_matmul_split(N, K, tb, act, has_bias, res, alpha, pad, threads, seed):
    """One row times a constant B kept in the split form (3.5 bytes per float): whole 64-input chunks
    and plain-float tails, every epilogue, strided B and C, any thread count."""
    saved = get_num_threads()
    set_num_threads(threads)
    try:
        prog = assert_matmul_case(np.random.default_rng(seed), 1, 1, 1, N, K, False, tb, act, has_bias,
                                  res != "none", alpha, False, pad, res_inplace=res == "output",
                                  b_mode="split")
        assert prog.variant(0) == B_MODE["split"]      # normal weights fit the form
    finally:
        set_num_threads(saved)


@needs_split
@pytest.mark.parametrize("tb", [0, 1])
def test_matmul_split_is_lossless_with_escaped_weights(tb):
    """Weights outside the common exponent run (tiny, huge, zeros, a denormal, -0.0) are kept exactly:
    the result equals a float64 product of the very same float32 weights. (B is big enough that its
    escapes stay under the form's 1 in 64, or it would fall back to BLAS: the variant says it did not.)"""
    rng = np.random.default_rng(3)
    N, K = 200, 200
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    odd = np.array([1e-30, -3e5, 0.0, -0.0, 1e-40, 7.5, -1e-12], np.float32)
    w.flat[rng.choice(N * K, 300, replace=False)] = rng.choice(odd, 300)
    w[5, :] = 1e-25                                  # a row that is all escapes
    b = np.ascontiguousarray(w if tb else w.T)
    x = rand(rng, 1, K)
    out = empty((1, N))
    prog = run_program("MATMUL", {"a": x, "b": b, "out": out}, constant={"b"},
                       **matmul_fields(1, N, K, trans_b=bool(tb), ldb=b.shape[1], b_mode="split"))
    assert prog.variant(0) == B_MODE["split"]      # held in the split form, escapes and all
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("b_mode", (["split"] if SPLIT_FAST else []) + (["packed"] if HAVE_ONEDNN else []))
def test_matmul_prepared_b_at_an_offset_in_its_constant(b_mode):
    """A constant B that starts inside its buffer (a view of a bigger constant) is prepared from
    where it starts, not from the buffer's first byte."""
    rng = np.random.default_rng(6)
    M = 1 if b_mode == "split" else 4
    N, K, skip = 72, 128, 3 * 72
    store = rand(rng, skip + K * N)
    w = store[skip:].reshape(K, N)
    x, out = rand(rng, M, K), empty((M, N))
    prog = run_program("MATMUL", {"a": x, "b": (store, 4 * skip), "out": out}, constant={"b"},
                       **matmul_fields(M, N, K, b_mode=b_mode))
    assert prog.variant(0) == B_MODE[b_mode]
    assert_close(out, x.astype(np.float64) @ w)


@needs_split
def test_matmul_split_falls_back_to_blas_for_spread_out_weights():
    """Weights spanning far more binades than the form's window (more than 1 in 64 would be escapes)
    are read through BLAS: the prepared op says so (its variant), the validated record still says
    split, and the answer is right."""
    rng = np.random.default_rng(4)
    N, K = 64, 256
    w = (rng.choice([-1, 1], (N, K)) * 10.0 ** rng.uniform(-30, 30, (N, K))).astype(np.float32)
    x, out = rand(rng, 1, K), empty((1, N))
    prog = run_program("MATMUL", {"a": x, "b": w, "out": out}, constant={"b"},
                       **matmul_fields(1, N, K, trans_b=True, b_mode="split"))
    assert prog.variant(0) == B_MODE["blas"]
    assert read_fields(prog.records[0])["b_mode"] == "split"
    want = x.astype(np.float64) @ w.T.astype(np.float64)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    out[:] = np.nan
    prog.run([x], [out])            # and again: the fallback is the prepared op's, not one run's
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@needs_split
@pytest.mark.parametrize("change, message", [
    ({"M": 2}, "one contiguous row"),
    ({"trans_a": True}, "one contiguous row"),
])
def test_matmul_split_refuses_what_it_cannot_run(change, message):
    a, b, out = np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), empty((4, 4))
    with pytest.raises(ProgramError, match=message):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, constant={"b"},
                    **{**matmul_fields(1, 4, 4, b_mode="split"), **change})


@needs_split
def test_matmul_split_needs_a_constant_b():
    a, b, out = np.ones((1, 4), np.float32), np.ones((4, 4), np.float32), empty((1, 4))
    with pytest.raises(ProgramError, match="B must be a constant"):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(1, 4, 4, b_mode="split"))


@pytest.mark.skipif(SPLIT_FAST, reason="this CPU has the split decoder")
def test_matmul_split_needs_the_split_decoder():
    a, b, out = np.ones((1, 4), np.float32), np.ones((4, 4), np.float32), empty((1, 4))
    with pytest.raises(ProgramError, match="split matmuls need AVX-512F and AVX2"):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, constant={"b"},
                    **matmul_fields(1, 4, 4, b_mode="split"))


needs_onednn = pytest.mark.skipif(not HAVE_ONEDNN, reason="built without oneDNN (-Donednn=false)")


@needs_onednn
@SETTINGS
@given(M=SIZES, N=SIZES, K=SIZES, ta=st.booleans(), tb=st.booleans(), act=ACT_NAMES,
       has_bias=st.booleans(), res=st.sampled_from(["none", "other", "output"]),
       pad=st.sampled_from([0, 3]), b_mode=st.sampled_from(["onednn", "packed"]),
       threads=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16))
def test_matmul_onednn(M, N, K, ta, tb, act, has_bias, res, pad, b_mode, threads, seed):
    """oneDNN with B read in place or packed once: every epilogue (bias, residual beside or in the
    output, activation), strided A/B/C, and thread counts other than the one it was built with."""
    saved = get_num_threads()
    set_num_threads(threads)
    try:
        prog = assert_matmul_case(np.random.default_rng(seed), 1, 1, M, N, K, ta, tb, act, has_bias,
                                  res != "none", 1.0, False, pad, res_inplace=res == "output", b_mode=b_mode)
        assert prog.variant(0) == B_MODE[b_mode]
    finally:
        set_num_threads(saved)


@needs_onednn
def test_matmul_onednn_program_survives_thread_count_changes():
    """One prepared program run at 2, 1, 3 then 2 threads again: a primitive per thread count."""
    rng = np.random.default_rng(5)
    a, b, bias = rand(rng, 64, 96), rand(rng, 96, 80), rand(rng, 80)
    out = empty((64, 80))
    prog = run_program("MATMUL", {"a": a, "b": b, "bias": bias, "out": out}, constant={"b", "bias"},
                       **matmul_fields(64, 80, 96, act="relu", b_mode="packed"))
    saved = get_num_threads()
    try:
        for threads in (2, 1, 3, 2):
            set_num_threads(threads)
            out[:] = np.nan
            prog.run([a], [out])
            assert_close(out, ACTS["relu"](a.astype(np.float64) @ b + bias))
    finally:
        set_num_threads(saved)


@needs_onednn
@pytest.mark.parametrize("change, message", [
    ({"b1": 2}, "oneDNN matmuls take one batch, alpha 1 and K > 0"),
    ({"alpha": 0.5}, "oneDNN matmuls take one batch, alpha 1 and K > 0"),
])
def test_matmul_onednn_refuses_what_it_cannot_run(change, message):
    fields = matmul_fields(4, 4, 4, sa1=64, sa2=16, sc1=64, sc2=16, b_mode="packed")
    fields.update(change)
    a, b, out = np.ones((2, 4, 4), np.float32), np.ones((4, 4), np.float32), empty((2, 4, 4))
    with pytest.raises(ProgramError, match=message):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, constant={"b"}, **fields)


def test_matmul_unknown_b_mode_is_refused():
    """A b_mode past rt.abi's names (written raw: make_record takes names) fails the generic check."""
    a, b, out = np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), empty((4, 4))
    rec = make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)}, **matmul_fields(4, 4, 4))
    set_raw_field(rec, "b_mode", 7)
    with pytest.raises(ProgramError, match=rf"op #0 \(MATMUL\): matmul field b_mode = 7 is not in "
                                           rf"\[0, {len(ENUMS['b_mode']) - 1}\]"):
        Program(rec, [0, a.nbytes, b.nbytes, out.nbytes], {2: b}, [1], [3])


@needs_onednn
def test_matmul_onednn_needs_a_constant_b():
    a, b, out = np.ones((4, 4), np.float32), np.ones((4, 4), np.float32), empty((4, 4))
    with pytest.raises(ProgramError, match="B must be a constant"):
        run_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(4, 4, 4, b_mode="onednn"))


def test_matmul_k_zero():
    assert_matmul_case(np.random.default_rng(0), 1, 2, 3, 4, 0, False, False, "relu", True, False, 1.0, False, 0)
    assert_matmul_case(np.random.default_rng(0), 1, 1, 1, 4, 0, False, False, "none", True, True, 1.0, False, 0)


# ---------------------------------------------------------------- attention

def attention_ref(q, k, v, mask, causal, scale):
    q, k, v = (t.astype(np.float64) for t in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) * scale
    if mask is not None:
        s = s + mask
    if causal:
        Sq, Sk = s.shape[-2:]
        s = np.where(np.tril(np.ones((Sq, Sk), bool)), s, -np.inf)
    m = s.max(-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        p = np.exp(s - np.where(np.isfinite(m), m, 0))
        p = p / p.sum(-1, keepdims=True)
    return np.nan_to_num(p) @ v  # a row with no visible key gives zeros, like torch


def attn_scratch(Sk, D, Dv, threads=2):
    """The arena scratch the planner would provide (here a buffer of its own)."""
    return np.empty(attention_scratch_floats(Sk, D, Dv) * threads, np.float32)


EDGES = [0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 4097]


def test_attention_scratch_floats_python_mirror_equals_c():
    """rt.abi's count (which the planner sizes scratch with) is C's (which the checker demands), over
    every tile edge of Sk, D and Dv, and a long sequence."""
    for sk, d, dv in itertools.product(EDGES + [1 << 20], EDGES, EDGES):
        assert rt.abi.attention_scratch_floats(sk, d, dv) == attention_scratch_floats(sk, d, dv), (sk, d, dv)


@SETTINGS
@given(B=st.integers(1, 3), H=st.integers(1, 4), S=st.sampled_from([1, 5, 31, 32, 33, 64, 65, 130]),
       D=st.sampled_from([1, 8, 16, 24, 64, 65]), causal=st.booleans(),
       mask_kind=st.sampled_from(["none", "full", "keys", "keys_per_batch"]), seed=st.integers(0, 2**16))
def test_attention_packed_qkv(B, H, S, D, causal, mask_kind, seed):
    """q/k/v read straight out of a packed [B, S, 3, H, D] projection; out is [B, S, H, D]."""
    rng = np.random.default_rng(seed)
    qkv = rand(rng, B, S, 3, H, D)
    q, k, v = (np.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))
    scale = 1 / math.sqrt(D)
    mask, ms = None, (0, 0, 0, 0)
    if mask_kind == "full":
        mask = rand(rng, B, H, S, S)
        ms = (H * S * S, S * S, S, 1)
    elif mask_kind == "keys":  # [1, 1, 1, S] padding mask broadcast over batch, heads, queries
        mask = np.where(rng.random(S) < 0.3, -np.inf, 0.0).astype(np.float32)
        mask[0] = 0.0
        ms = (0, 0, 0, 1)
    elif mask_kind == "keys_per_batch":  # [B, 1, 1, S]
        mask = np.where(rng.random((B, 1, 1, S)) < 0.3, -np.inf, 0.0).astype(np.float32)
        ms = (S, 0, 0, 1)
    ref = attention_ref(q, k, v, mask, causal, scale)
    out = empty((B, S, H, D))
    row = 3 * H * D
    qs = (S * row, D, row)
    run_program("ATTENTION", {"q": (qkv, 0), "k": (qkv, 4 * H * D), "v": (qkv, 8 * H * D), "mask": mask,
                              "scratch": attn_scratch(S, D, D), "out": out},
                **attention_fields(B=B, H=H, Sq=S, Sk=S, D=D, Dv=D, q=qs, k=qs, v=qs, o=(S * H * D, D, H * D),
                                   causal=causal, mask=ms, scale=scale))
    assert_close(np.transpose(out, (0, 2, 1, 3)), ref)


@SETTINGS
@given(Sq=SIZES, Sk=SIZES, D=st.sampled_from([4, 16, 33]), Dv=st.sampled_from([1, 16, 40]),
       causal=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_cross(Sq, Sk, D, Dv, causal, seed):
    """Sq != Sk, Dv != D, contiguous [B, H, S, D] operands, causal is top-left aligned."""
    rng = np.random.default_rng(seed)
    B, H = 2, 3
    q, k, v = rand(rng, B, H, Sq, D), rand(rng, B, H, Sk, D), rand(rng, B, H, Sk, Dv)
    out = empty((B, H, Sq, Dv))
    c = lambda S, E: (H * S * E, S * E, E)  # noqa: E731
    run_program("ATTENTION", {"q": q, "k": k, "v": v, "scratch": attn_scratch(Sk, D, Dv), "out": out},
                **attention_fields(B=B, H=H, Sq=Sq, Sk=Sk, D=D, Dv=Dv, q=c(Sq, D), k=c(Sk, D), v=c(Sk, Dv),
                                   o=c(Sq, Dv), causal=causal, scale=0.3))
    assert_close(out, attention_ref(q, k, v, None, causal, 0.3))


@SETTINGS
@given(B=st.integers(1, 3), Hkv=st.integers(1, 4), group=st.sampled_from([1, 2, 3]), Sk=st.sampled_from(EDGES[1:16]),
       D=st.sampled_from([8, 64]), masked=st.booleans(), causal=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_decode_one_query_row(B, Hkv, group, Sk, D, masked, causal, seed):
    """One query row per head (decoding): K/V heads read once per group of kv_group query heads, keys
    in chunks on both threads, read in place from a larger cache ([B, Hkv, capacity, D]) through
    strides, with an additive key mask hiding some rows (or all of them: zeros)."""
    rng = np.random.default_rng(seed)
    H, cap = Hkv * group, Sk + 5
    q = rand(rng, B, H, 1, D)
    kc, vc = rand(rng, B, Hkv, cap, D), rand(rng, B, Hkv, cap, D)
    mask = None
    if masked:
        mask = np.where(rng.random((B, 1, 1, Sk)) < 0.3, -np.inf, 0).astype(np.float32)
        mask[0] = -np.inf if B > 1 else mask[0]          # a batch item that sees no key
    out = empty((B, H, 1, D))
    cs = (Hkv * cap * D, cap * D, D)
    ops = {"q": q, "k": kc, "v": vc, "scratch": attn_scratch(Sk, D, D), "out": out}
    if mask is not None:
        ops["mask"] = mask
    run_program("ATTENTION", ops, **attention_fields(
        B=B, H=H, Sq=1, Sk=Sk, D=D, Dv=D, q=(H * D, D, D), k=cs, v=cs, o=(H * D, D, D), causal=causal,
        mask=(Sk, 0, 0, 1), scale=0.2, kv_group=group))
    k, v = (np.repeat(t[:, :, :Sk], group, axis=1) for t in (kc, vc))
    assert_close(out, attention_ref(q, k, v, mask, causal, 0.2))


@SETTINGS
@given(B=st.integers(1, 2), Hkv=st.integers(1, 3), group=st.sampled_from([2, 3, 4]), Sq=SIZES,
       D=st.sampled_from([8, 64, 128]), Dv=st.sampled_from([16, 40, 128]), per_head_mask=st.booleans(),
       causal=st.booleans(), seed=st.integers(0, 2**16))
def test_attention_grouped_query_heads_share_one_kv_head(B, Hkv, group, Sq, D, Dv, per_head_mask, causal, seed):
    """Several query rows per head with grouped-query K/V: a task packs its K/V head once and runs
    every query head of the group (a mask per query head, or one per batch item); V read in place
    when its columns fill whole vectors (Dv 16, 128), packed otherwise (40)."""
    rng = np.random.default_rng(seed)
    H = Hkv * group
    q, k, v = rand(rng, B, H, Sq, D), rand(rng, B, Hkv, Sq, D), rand(rng, B, Hkv, Sq, Dv)
    shape = (B, H, Sq, Sq) if per_head_mask else (B, 1, 1, Sq)
    mask = np.where(rng.random(shape) < 0.2, -np.inf, 0.0).astype(np.float32)
    ms = (H * Sq * Sq, Sq * Sq, Sq, 1) if per_head_mask else (Sq, 0, 0, 1)
    out = empty((B, H, Sq, Dv))
    c = lambda Hn, E: (Hn * Sq * E, Sq * E, E)  # noqa: E731
    run_program("ATTENTION", {"q": q, "k": k, "v": v, "mask": mask, "scratch": attn_scratch(Sq, D, Dv), "out": out},
                **attention_fields(B=B, H=H, Sq=Sq, Sk=Sq, D=D, Dv=Dv, q=c(H, D), k=c(Hkv, D), v=c(Hkv, Dv),
                                   o=c(H, Dv), causal=causal, mask=ms, scale=0.2, kv_group=group))
    kr, vr = (np.repeat(t, group, axis=1) for t in (k, v))
    assert_close(out, attention_ref(q, kr, vr, mask, causal, 0.2))


def test_attention_fully_masked_row_gives_zeros():
    rng = np.random.default_rng(0)
    q, k, v = rand(rng, 1, 1, 3, 8), rand(rng, 1, 1, 3, 8), rand(rng, 1, 1, 3, 8)
    mask = np.zeros((1, 1, 3, 3), np.float32)
    mask[0, 0, 1] = -np.inf
    out = empty((1, 1, 3, 8))
    c = (24, 24, 8)
    run_program("ATTENTION", {"q": q, "k": k, "v": v, "mask": mask, "scratch": attn_scratch(3, 8, 8), "out": out},
                **attention_fields(B=1, H=1, Sq=3, Sk=3, D=8, Dv=8, q=c, k=c, v=c, o=c, causal=False,
                                   mask=(9, 9, 3, 1), scale=1.0))
    assert (out[0, 0, 1] == 0).all()
    assert_close(out, attention_ref(q, k, v, mask, False, 1.0))


def test_attention_runs_on_no_more_threads_than_its_scratch_holds():
    rng = np.random.default_rng(3)
    B, H, S, D = 2, 4, 40, 16
    q, k, v = rand(rng, B, H, S, D), rand(rng, B, H, S, D), rand(rng, B, H, S, D)
    c = (H * S * D, S * D, D)
    saved = get_num_threads()
    set_num_threads(2)
    try:
        out = empty((B, H, S, D))
        run_program("ATTENTION", {"q": q, "k": k, "v": v, "scratch": attn_scratch(S, D, D, threads=1), "out": out},
                    **attention_fields(B=B, H=H, Sq=S, Sk=S, D=D, Dv=D, q=c, k=c, v=c, o=c, causal=True,
                                       scale=0.25, threads=1))
    finally:
        set_num_threads(saved)
    assert_close(out, attention_ref(q, k, v, None, True, 0.25))


def test_attention_scratch_too_small_is_refused():
    rng = np.random.default_rng(4)
    q = rand(rng, 1, 1, 8, 8)
    c = (64, 64, 8)
    short = np.empty(attention_scratch_floats(8, 8, 8) * 2 - 1, np.float32)
    fields = attention_fields(B=1, H=1, Sq=8, Sk=8, D=8, Dv=8, q=c, k=c, v=c, o=c, causal=False, scale=1.0)
    with pytest.raises(ProgramError, match=r"op #0 \(ATTENTION\): operand 4 \(scratch\) needs"):
        run_program("ATTENTION", {"q": q, "k": q, "v": q, "scratch": short, "out": empty((1, 1, 8, 8))}, **fields)
    with pytest.raises(ProgramError, match=r"op #0 \(ATTENTION\): scratch must hold at least one thread's share"):
        run_program("ATTENTION", {"q": q, "k": q, "v": q, "scratch": attn_scratch(8, 8, 8), "out": empty((1, 1, 8, 8))},
                    **dict(fields, threads=0))


# ---------------------------------------------------------------- embedding, copy, cast

@SETTINGS
@given(n=SIZES, vocab=SIZES, dim=SIZES, transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_embedding(n, vocab, dim, transposed, seed):
    """Contiguous tables, and tables stored transposed ([dim, vocab], read by strides)."""
    rng = np.random.default_rng(seed)
    stored = rand(rng, dim, vocab) if transposed else rand(rng, vocab, dim)
    table = stored.T if transposed else stored
    idx = rng.integers(0, vocab, n).astype(np.int64)
    out = empty((n, dim))
    row_stride, col_stride = (s // 4 for s in table.strides)
    run_program("EMBEDDING", {"table": stored, "idx": idx, "out": out}, n=n, vocab=vocab, dim=dim,
                row_stride=row_stride, col_stride=col_stride)
    assert_close(out, table[idx])


def test_embedding_table_strides_beyond_the_buffer_are_refused():
    table, idx = np.ones((10, 4), np.float32), np.zeros(4, np.int64)
    with pytest.raises(ProgramError, match=r"op #0 \(EMBEDDING\): operand 0 \(table\) needs 172 bytes"):
        run_program("EMBEDDING", {"table": table, "idx": idx, "out": empty((4, 4))}, n=4, vocab=10, dim=4,
                    row_stride=1, col_stride=11)   # reaches element 42 of 40


@pytest.mark.parametrize("bad", [10, 11, -1, 2**40])
def test_embedding_out_of_range_raises(bad):
    table = np.ones((10, 4), np.float32)
    idx = np.array([0, 3, bad, 1], np.int64)
    # Program's own message (no explain callback): the op, the error's name, the bad index
    with pytest.raises(KernelError, match=rf"op #0 \(EMBEDDING\) failed: index \(detail {bad}\)"):
        run_program("EMBEDDING", {"table": table, "idx": idx, "out": empty((4, 4))}, n=4, vocab=10, dim=4,
                    row_stride=4, col_stride=1)


@SETTINGS
@given(data=st.data(), dtype=st.sampled_from([np.float32, np.int64, np.uint8, np.float16]),
       seed=st.integers(0, 2**16))
def test_copy_permute(data, dtype, seed):
    rng = np.random.default_rng(seed)
    ndim = data.draw(st.integers(1, 4))
    shape = data.draw(st.lists(st.sampled_from([1, 2, 3, 5, 8, 17]), min_size=ndim, max_size=ndim))
    perm = data.draw(st.permutations(range(ndim)))
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    view = np.transpose(x, perm)
    out = np.zeros(view.shape, dtype)
    run_program("COPY", {"x": x, "out": out},
                **copy_fields(view.shape, [s // x.itemsize for s in view.strides], x.itemsize))
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("shape, perm", [((70, 100), (1, 0)), ((3, 40, 33), (2, 1, 0)),
                                         ((2, 65, 3, 40), (0, 3, 1, 2)), ((5, 64, 64), (0, 2, 1))])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_copy_transpose_tiles(shape, perm, dtype):
    """Transposes large enough for the tiled path, with partial edge tiles."""
    x = (np.random.default_rng(0).standard_normal(shape) * 100).astype(dtype)
    view = np.transpose(x, perm)
    out = np.zeros(view.shape, dtype)
    run_program("COPY", {"x": x, "out": out},
                **copy_fields(view.shape, [s // x.itemsize for s in view.strides], x.itemsize))
    np.testing.assert_array_equal(out, view)


def test_copy_slice_with_offset():
    """A strided window (every other column of rows 1..3) via a byte offset."""
    x = np.arange(40, dtype=np.float32).reshape(5, 8)
    out = empty((3, 4))
    run_program("COPY", {"x": (x, 4 * 9), "out": out}, **copy_fields((3, 4), (8, 2), 4))
    np.testing.assert_array_equal(out, x[1:4, 1::2])


def test_copy_into_a_strided_window_of_out():
    """The other way (a part of a concatenation): out written through its own strides from a byte
    offset; nothing outside the window is touched."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = empty((5, 8))
    run_program("COPY", {"x": x, "out": (out, 4 * 9)}, **copy_fields((3, 4), (4, 1), 4, out_stride=(8, 2)))
    np.testing.assert_array_equal(out[1:4, 1::2], x)
    window = np.zeros(out.shape, bool)
    window[1:4, 1::2] = True
    assert np.isnan(out[~window]).all()


NP_DTYPES = {"f32": np.float32, "i64": np.int64, "bool": np.bool_, "i32": np.int32, "f64": np.float64}


assert tuple(NP_DTYPES) == ENUMS["dtype"]


@pytest.mark.parametrize("src", ENUMS["dtype"])
@pytest.mark.parametrize("dst", ENUMS["dtype"])
def test_cast(src, dst):
    rng = np.random.default_rng(0)
    vals = rng.standard_normal(37) * 50
    vals[:4] = [0.0, -0.0, 0.7, -0.7]
    x = vals.astype(NP_DTYPES[src])
    out = np.zeros(37, NP_DTYPES[dst])
    run_program("CAST", {"x": x, "out": out}, n=37, src=src, dst=dst)
    np.testing.assert_array_equal(out, x.astype(NP_DTYPES[dst]))
