"""Below the file format: the C checkers bound the work a record asks for by the bytes it touches, and
refuse parameters no kernel can use (non-finite alpha / scale), before anything runs."""
import numpy as np
import pytest

from kernel_helpers import attention_fields, build_program, copy_fields, matmul_fields, zero_fields
from rt.abi import attention_scratch_floats
from rt.errors import ProgramError
from rt.kernels import Program, make_record


def empty(*shape):
    return np.zeros(shape, np.float32)


def test_softmax_of_zero_columns_is_refused():
    """2^40 rows of 0 columns touch no byte and were a 2^40-step loop."""
    x = empty(4)
    with pytest.raises(ProgramError, match=r"SOFTMAX\): cols must be positive"):
        build_program("SOFTMAX", {"x": x, "out": empty(4)}, rows=2 ** 40, cols=0)
    build_program("SOFTMAX", {"x": x, "out": empty(4)}, rows=0, cols=0)     # nothing at all is fine


def test_matmul_output_batches_must_not_overlap():
    """A million batches written over one 2x2 output (strides 1, 1) ran for hours."""
    a, b, out = empty(4, 4), empty(4, 4), empty(8, 8)
    bad = matmul_fields(2, 2, 2, b1=1024, b2=1024, sc1=1, sc2=1, lda=2, ldb=2, ldc=2)
    with pytest.raises(ProgramError, match=r"MATMUL\): output batches overlap"):
        build_program("MATMUL", {"a": a, "b": b, "out": out}, **bad)
    with pytest.raises(ProgramError, match="output batches overlap"):      # rows of one batch into the next
        build_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(2, 2, 2, b2=2, sc2=3, ldc=2))
    # disjoint batches in either order of strides are fine
    build_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(2, 2, 2, b1=2, b2=2, sc1=4, sc2=8, ldc=2))
    build_program("MATMUL", {"a": a, "b": b, "out": out}, **matmul_fields(2, 2, 2, b1=2, b2=2, sc1=8, sc2=4, ldc=2))


@pytest.mark.parametrize("alpha", [np.inf, -np.inf, np.nan, 1e308])
def test_matmul_alpha_must_be_finite(alpha):
    with pytest.raises(ProgramError, match="alpha .* is not a finite float"):
        build_program("MATMUL", {"a": empty(2, 2), "b": empty(2, 2), "out": empty(2, 2)},
                      **matmul_fields(2, 2, 2, alpha=alpha))


def _attention(out, scratch, **changes):
    c = (64, 64, 8)
    fields = attention_fields(B=1, H=1, Sq=8, Sk=8, D=8, Dv=8, q=c, k=c, v=c, o=c, causal=False, scale=1.0)
    q = empty(1, 1, 8, 8)
    return build_program("ATTENTION", {"q": q, "k": q, "v": q, "scratch": scratch, "out": out},
                         **dict(fields, **changes))


@pytest.mark.parametrize("scale", [np.inf, np.nan, -1e39])    # 1e39: inf as a float
def test_attention_scale_must_be_finite(scale):
    with pytest.raises(ProgramError, match="scale .* is not a finite float"):
        _attention(empty(1, 1, 8, 8), empty(attention_scratch_floats(8, 8, 8) * 2), scale=scale)


def test_attention_output_rows_must_not_overlap():
    scratch = empty(attention_scratch_floats(8, 8, 8) * 2)
    with pytest.raises(ProgramError, match="output rows overlap"):
        _attention(empty(1, 1, 8, 8), scratch, B=2 ** 20, H=2 ** 20, o_sb=1, o_sh=1, o_ss=1, q_sb=0, q_sh=0)
    with pytest.raises(ProgramError, match="output rows overlap"):
        _attention(empty(1, 1, 8, 8), scratch, o_ss=4)


@pytest.mark.parametrize("kind", ["input", "constant"])
def test_attention_scratch_is_never_a_constant_or_an_input(kind):
    """Only the last operand (out) used to be checked: scratch bound to a read-only constant crashed,
    bound to an input it was overwritten."""
    scratch = empty(attention_scratch_floats(8, 8, 8) * 2)
    scratch.flags.writeable = False
    c = (64, 64, 8)
    fields = attention_fields(B=1, H=1, Sq=8, Sk=8, D=8, Dv=8, q=c, k=c, v=c, o=c, causal=False, scale=1.0)
    q = empty(1, 1, 8, 8)
    rec = make_record("ATTENTION", {"q": (1, 0), "k": (1, 0), "v": (1, 0), "scratch": (2, 0), "out": (3, 0)},
                      **fields)
    sizes = [0, q.nbytes, scratch.nbytes, q.nbytes]
    consts = {2: scratch} if kind == "constant" else {}
    with pytest.raises(ProgramError, match=f"ATTENTION\\): writes into {kind} slot 2"):
        Program(rec, sizes, consts, [1] if consts else [1, 2], [3])


def test_pool_copy_and_rope_outputs_must_not_overlap():
    """Nonzero output strides were all the checkers asked: 2^30 pooling windows (or copied items)
    written over a 256 KiB buffer ran for minutes."""
    x, out = empty(4), empty(2 ** 16)
    pool = dict(zero_fields("MAX_POOL"), N=1, C=1, H=1, W=1, OH=2 ** 15, OW=2 ** 15, o_sh=1, o_sw=1, KH=1, KW=1,
                sh=1, sw=1, dh=1, dw=1)
    with pytest.raises(ProgramError, match=r"MAX_POOL\): output elements overlap"):
        build_program("MAX_POOL", {"x": x, "out": out}, **pool)
    build_program("MAX_POOL", {"x": x, "out": out}, **dict(pool, OH=2 ** 7, OW=2 ** 8, o_sh=2 ** 8))
    with pytest.raises(ProgramError, match=r"COPY\): output items overlap"):
        build_program("COPY", {"x": x, "out": out},
                      **copy_fields([2 ** 15, 2 ** 15], [0, 0], 4, out_stride=[1, 1]))
    rope = dict(zero_fields("ROPE"), B=2 ** 10, H=2 ** 10, S=1, D=2, rot=2, o_sb=1, o_sh=1, o_ss=2)
    with pytest.raises(ProgramError, match=r"ROPE\): output rows overlap"):
        build_program("ROPE", {"x": x, "cos": empty(2), "sin": empty(2), "out": out}, **rope)
