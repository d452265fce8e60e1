"""The op table and record layout the Python side sees match the C side."""

import numpy as np

from rt.kernels import MAX_ARGS, MAX_FP, MAX_IP, RECORD_DTYPE, op_codes, record_layout


def test_op_codes_unique_and_contiguous():
    codes = op_codes()
    assert len(set(codes.values())) == len(codes)
    assert sorted(codes.values()) == list(range(len(codes)))
    assert all(name.isupper() and name.isidentifier() for name in codes)


def test_core_ops_present():
    expected = {"MATMUL", "RELU", "GELU_TANH", "GELU_ERF", "TANH", "SIGMOID", "NEG", "EXP", "SQRT",
                "RSQRT", "ADD", "SUB", "MUL", "DIV", "SOFTMAX", "LAYER_NORM", "ATTENTION",
                "EMBEDDING", "COPY", "CAST", "ADD_LAYER_NORM"}
    assert expected <= set(op_codes())


def test_record_dtype_matches_c_layout():
    layout = record_layout()
    assert RECORD_DTYPE.itemsize == layout["itemsize"]
    for name in RECORD_DTYPE.names:
        assert RECORD_DTYPE.fields[name][1] == layout[name], name


def test_record_field_shapes():
    assert RECORD_DTYPE["slot"].shape == (MAX_ARGS,)
    assert RECORD_DTYPE["offset"].shape == (MAX_ARGS,)
    assert RECORD_DTYPE["ip"].shape == (MAX_IP,)
    assert RECORD_DTYPE["fp"].shape == (MAX_FP,)
    assert RECORD_DTYPE["code"].base == np.dtype("<i4")
    assert RECORD_DTYPE["offset"].base == np.dtype("<i8")
