"""One source of op codes: every planned op the planner gives kernel facts has an encoder (the records
step, rt.kernels.encode), every encoder writes a C op of rt.abi whose record C accepts, and every C
kernel is reachable from some planned op."""
import numpy as np
import pytest

from rt.abi import BINARY_OPS, BOOL_RESULT, OP_CODES, qweight_bytes
from rt.dialects.ir import Operation, TensorType, Value
from rt.dialects.registry import REGISTRY
from rt.dialects.strides import contiguous_strides
from rt.kernels import Program, operand_places, read_fields
from rt.kernels.encode import ENCODERS, Context, Encoded, Operand
from rt.kernels.records import RECORD_DTYPE, fill
from rt.target import Target


def with_kernel_facts() -> set[str]:
    """Planned ops the planner knows a C kernel for (rt.dialects.kernel_facts)."""
    return {d.name for d in REGISTRY.dialect_ops("planned") if "strided_operands" in d.extra}


def test_planned_ops_with_kernel_facts_have_encoders():
    missing = with_kernel_facts() - set(ENCODERS)
    assert not missing, f"planned ops with kernel facts but no encoder: {sorted(missing)}"


def test_encoders_are_for_planned_ops_with_kernel_facts():
    stray = set(ENCODERS) - with_kernel_facts()
    assert not stray, f"encoders for ops the planner has no kernel facts for: {sorted(stray)}"


# One small op per encoder: (operand types, result type, attrs). Types: (shape, dtype). Ops sharing the
# unary, binary or reduction encoder share its case (a unary op's parameters all 0.5).
F = "f32"


def _dt(name: str) -> str:
    """The first dtype a binary op's kernel takes."""
    return BINARY_OPS[name.split(".", 1)[1]][0]


def _shared(example: str, case) -> dict:
    return {name: case(name) for name, enc in ENCODERS.items() if enc is ENCODERS.get(example)}


CASES = {
    **_shared("planned.relu", lambda name: ([((3, 5), F)], ((3, 5), F),
                                            {p: 0.5 for p in REGISTRY[name].extra.get("params", ())})),
    **_shared("planned.add", lambda name: ([((3, 5), _dt(name)), ((5,), _dt(name))],
                                           ((3, 5), "bool" if name[8:] in BOOL_RESULT else _dt(name)), {})),
    **_shared("planned.sum", lambda name: ([((3, 5, 2), F)], ((3, 2), "i64" if "arg" in name else F), {"dims": [1]})),
    **_shared("planned.where", lambda name: ([((3, 5), "bool" if name == "planned.where" else F), ((5,), F), ((3, 1), F)],
                                             ((3, 5), F), {})),
    **_shared("planned.cumsum", lambda name: ([((3, 5), F)], ((3, 5), F), {"dim": 0})),
    "planned.gather": ([((3, 5), F), ((3, 2), "i64")], ((3, 2), F), {"dim": 1}),
    "planned.scatter": ([((3, 5), F), ((3, 2), "i64"), ((3, 2), F)], ((3, 5), F), {"dim": 1, "reduce": "sum"}),
    "planned.sort": ([((3, 5), F)], ((3, 2), "i64"), {"k": 2, "result": 1}),
    "planned.log_softmax": ([((3, 5), F)], ((3, 5), F), {}),
    "planned.cat": ([((2, 5), F), ((3, 5), F)], ((5, 5), F), {"dim": 0}),
    "planned.rms_norm": ([((3, 5), F), ((5,), F)], ((3, 5), F), {"eps": 1e-6}),
    "planned.rope": ([((1, 2, 4, 8), F), ((4, 8), F), ((4, 8), F)], ((1, 2, 4, 8), F), {}),
    "planned.matmul": ([((2, 8), F), ((4, 8), F), ((4,), F)], ((2, 4), F), {"transpose_b": True}),
    "planned.copy": ([((3, 5), F)], ((3, 5), F), {}),
    "planned.cache_write": ([((1, 2, 8, 4), F), ((1, 2, 1, 4), F)], ((1, 2, 8, 4), F), {"dim": 2, "start": 5}),
    "planned.softmax": ([((3, 5), F)], ((3, 5), F), {}),
    "planned.layer_norm": ([((3, 5), F), ((5,), F), ((5,), F)], ((3, 5), F), {"eps": 1e-5}),
    "planned.add_layer_norm": ([((3, 5), F), ((3, 5), F), ((5,), F), ((5,), F)], ((3, 5), F), {"eps": 1e-5}),
    "planned.attention": ([((1, 2, 4, 8), F)] * 3, ((1, 2, 4, 8), F), {"scale": 0.25, "causal": True}),
    "planned.embedding": ([((10, 4), F), ((3,), "i64")], ((3, 4), F), {}),
    "planned.cast": ([((6,), F)], ((6,), "i64"), {}),
    "planned.matmul_packed": ([((2, 64), F), ((qweight_bytes("int8", 4, 64, 64, False),), "u8")], ((2, 4), F),
                              {"format": "int8", "n": 4, "k": 64, "group": 64}),
}


# The vision ops (NCHW; the conv's weight is an input here, read as it is).
_POOL2 = {"kernel": [2, 2], "stride": [2, 2]}
CASES.update({
    "planned.conv2d": ([((1, 4, 6, 6), F), ((8, 2, 3, 3), F), ((8,), F)], ((1, 8, 4, 4), F), {"groups": 2}),
    "planned.conv_transpose2d": ([((1, 4, 3, 3), F), ((4, 3, 3, 3), F), ((6,), F)], ((1, 6, 7, 7), F),
                                 {"groups": 2, "stride": [2, 2], "padding": [0, 0, 0, 0]}),
    "planned.max_pool2d": ([((1, 3, 6, 6), F)], ((1, 3, 3, 3), F), _POOL2),
    "planned.avg_pool2d": ([((1, 3, 6, 6), F)], ((1, 3, 3, 3), F), _POOL2),
    "planned.adaptive_avg_pool2d": ([((1, 3, 6, 6), F)], ((1, 3, 2, 4), F), {"size": [2, 4]}),
    "planned.adaptive_max_pool2d": ([((1, 3, 6, 6), F)], ((1, 3, 2, 4), F), {"size": [2, 4]}),
    "planned.upsample2d": ([((1, 3, 4, 4), F)], ((1, 3, 8, 6), F), {"mode": "bilinear", "size": [8, 6]}),
    "planned.pad": ([((3, 4), F)], ((4, 7), F), {"lo": [1, 2], "hi": [0, 1]}),
    "planned.group_norm": ([((2, 6, 3, 4), F), ((6,), F), ((6,), F)], ((2, 6, 3, 4), F), {"groups": 3}),
})


def encode_case(name: str) -> tuple[list[Encoded], list[Operand], Operand]:
    """Run op `name`'s encoder on CASES[name], every operand in a slot of its own (1, 2, ...), the result
    in the next; kernel scratch in the arena. The records it gives (one, or several)."""
    types, out_type, attrs = CASES[name]
    attrs = dict(attrs)
    args = [Operand(1 + i, 0, contiguous_strides(shape), TensorType(shape, dt)) for i, (shape, dt) in enumerate(types)]
    out = Operand(1 + len(args), 0, contiguous_strides(out_type[0]), TensorType(*out_type))
    op = Operation(name, [Value(f"v{i}", a.type) for i, a in enumerate(args)], attrs, Value("r", out.type))
    scratch = REGISTRY[name].extra.get("scratch")
    if scratch is not None:         # planned in the arena, for one thread
        op.attrs["scratch"] = [0, scratch(op, 1), 1]
    ctx = Context(Target.host(), {}, frozenset())
    e = ENCODERS[name](op, args, out, ctx)
    return e if isinstance(e, list) else [e], args, out


def test_every_encoder_has_a_case():
    assert set(CASES) == set(ENCODERS), "add a case for each new encoder"


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_encoder_writes_a_c_op_c_accepts(name):
    """The encoder's C op is one of rt.abi.OPS, its operands and fields are that family's (fill refuses
    any other, and any missing), and C's checker accepts the record for buffers of the operands' sizes."""
    encoded, args, out = encode_case(name)
    assert encoded
    recs = np.zeros(len(encoded), RECORD_DTYPE)
    arena = 0
    for rec, e in zip(recs, encoded):
        assert e.c_op in OP_CODES, f"{name} encodes to {e.c_op!r}, not an op of rt.abi"
        fill(rec, e.c_op, {k: None if v is None else v.place for k, v in e.operands.items()}, e.fields)
        places = operand_places(rec)
        assert places["out"][0] == out.slot
        assert {p[0] for p in places.values() if p is not None} <= {a.slot for a in args} | {out.slot, 0}
        assert set(read_fields(rec)) >= set(e.fields)
        if e.operands.get("scratch") is not None:
            arena = max(arena, e.operands["scratch"].type.nbytes)
    sizes = [arena] + [a.type.nbytes for a in args] + [out.type.nbytes]
    Program(recs, sizes, {}, [a.slot for a in args], [out.slot])


def test_every_c_kernel_is_reachable_from_a_planned_op():
    used = {e.c_op for name in CASES for e in encode_case(name)[0]}
    assert used == set(OP_CODES), f"C kernels no planned op runs: {sorted(set(OP_CODES) - used)}"
