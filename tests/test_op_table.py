"""The op table and record layout the Python side sees (rt/abi.py, rt.kernels.records) match the
compiled C side: record layout, op names and codes, each family's operand count and every int field's
place, name and range (the runtime's messages name them from C's own tables)."""

import numpy as np
import pytest

from rt.abi import ENUMS, FAMILIES, MAX_ARGS, MAX_FP, MAX_IP, OP_BY_NAME, OP_CODES, OPS
from rt.errors import ProgramError
from rt.kernels import RECORD_DTYPE, Program, _runtime, make_record, record_layout

from kernel_helpers import set_raw_field, zero_fields


def test_op_codes_unique_and_contiguous():
    assert len(set(OP_CODES.values())) == len(OP_CODES) == len(OPS)
    assert sorted(OP_CODES.values()) == list(range(len(OP_CODES)))
    assert all(name.isupper() and name.isidentifier() for name in OP_CODES)
    assert all(OP_BY_NAME[o.name] is o and OP_CODES[o.name] == i for i, o in enumerate(OPS))


def test_core_ops_present():
    expected = {"MATMUL", "RELU", "GELU_TANH", "GELU_ERF", "TANH", "SIGMOID", "NEG", "EXP", "SQRT",
                "RSQRT", "ADD", "SUB", "MUL", "DIV", "SOFTMAX", "LAYER_NORM", "ATTENTION",
                "EMBEDDING", "COPY", "CAST", "ADD_LAYER_NORM"}
    assert expected <= set(OP_CODES)


def test_record_dtype_matches_c_layout():
    layout = _runtime.record_layout()
    assert layout == record_layout()
    assert RECORD_DTYPE.itemsize == layout["itemsize"]
    assert set(RECORD_DTYPE.names) == set(layout) - {"itemsize"}
    for name in RECORD_DTYPE.names:
        assert RECORD_DTYPE.fields[name][1] == layout[name], name


def test_record_field_shapes():
    assert RECORD_DTYPE["slot"].shape == (MAX_ARGS,)
    assert RECORD_DTYPE["offset"].shape == (MAX_ARGS,)
    assert RECORD_DTYPE["ip"].shape == (MAX_IP,)
    assert RECORD_DTYPE["fp"].shape == (MAX_FP,)
    assert RECORD_DTYPE["code"].base == np.dtype("<i4")
    assert RECORD_DTYPE["offset"].base == np.dtype("<i8")


def test_every_family_fits_a_record():
    for fam in FAMILIES:
        assert len(fam.args) <= MAX_ARGS and len(fam.floats) <= MAX_FP, fam.name
        assert sum(f.count for f in fam.ints) <= MAX_IP, fam.name
        assert fam.args[-1].name == "out", fam.name     # the runtime treats the last operand as written
        for f in fam.ints:
            assert f.enum in (None, "bool") or f.enum in ENUMS, (fam.name, f.name)


def _refused(rec) -> str:
    with pytest.raises(ProgramError) as info:
        Program(rec, [0], {}, [], [])
    return str(info.value)


@pytest.mark.parametrize("op", [o.name for o in OPS])
def test_every_op_has_a_c_kernel_with_rt_abis_name_and_operand_count(op):
    """C names op code OP_CODES[op] `op` (the message's name comes from C's op table) and expects the
    family's operand count (from C's family table)."""
    rec = make_record(op, {}, **zero_fields(op))
    rec["nargs"] = 0
    nargs = len(OP_BY_NAME[op].family.args)
    assert _refused(rec) == f"op #0 ({op}): expects {nargs} operands, got 0"


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_every_int_field_sits_where_c_reads_it(fam):
    """A bad value written at rt.abi's place of each int field (the last element of an array) is
    refused by C's generic check naming that very field, with rt.abi's range."""
    op = next(o.name for o in OPS if o.family is fam)
    for name, (_, f) in fam.int_offsets().items():
        for bad in (-1, f.limit + 1):
            rec = make_record(op, {}, **zero_fields(op))
            set_raw_field(rec, name, bad, element=f.count - 1)
            want = f"op #0 ({op}): {fam.name} field {name}{'[]' if f.count > 1 else ''} = {bad} is not in [0, {f.limit}]"
            assert _refused(rec) == want


def test_runtime_checks_the_abi_at_import():
    """_runtime refuses to load against a RECORD_DTYPE or op list that is not the compiled one; here they
    agree, so the check passes (it raises ImportError otherwise)."""
    _runtime._check_abi()
