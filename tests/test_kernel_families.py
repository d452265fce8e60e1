"""Every op of the kernel families (unary, binary, reductions, norms, concatenation) against its own
numpy reference, through the planner and both executors, from fused IR text."""

import numpy as np
import pytest

from rt.abi import BINARY_OPS, BOOL_RESULT, REDUCE_OPS, SCAN_OPS, TERNARY_OPS, UNARY_OPS
from rt.api import CompiledModel
from rt.dialects import parse_module
from rt.dialects.fused_ops import UNARY_PARAMS
from rt.interpreter import run_reference
from rt.lowering.plan import to_planned
from rt.target import Target

# Inputs where each op is defined (and away from rounding ties of floor/round/...).
_DOMAIN = {"log": (0.01, 20), "sqrt": (0.0, 20), "rsqrt": (0.05, 20), "reciprocal": (0.05, 4),
           "log1p": (-0.9, 20), "pow": (0.05, 5)}
_PARAMS = {"clamp": {"min": -0.5, "max": 0.75}, "leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 1.5},
           "softplus": {"beta": 2.0, "threshold": 5.0}, "pow": {"exponent": 1.7}}
_SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 1e4, -1e4, 3.0e7, np.inf, -np.inf, np.nan]


def _attrs(attrs: dict) -> str:
    return " {" + ", ".join(f"{k} = {v!r}" for k, v in attrs.items()) + "}" if attrs else ""


def _compile(text: str) -> CompiledModel:
    fused = parse_module(text)
    planned = to_planned(fused, Target.host())
    return CompiledModel({"fused": fused, "planned": planned})


def assert_matches_reference(text: str, inputs: list[np.ndarray], rtol: float = 2e-6, atol: float = 1e-6):
    """The module compiled, run through both executors, equals the reference interpreter's result."""
    model = _compile(text)
    want = run_reference(model.stages["fused"], inputs)[0]
    for got in (model(*inputs), model.run_op_by_op(*inputs)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1.0, np.nanmax(np.abs(want[np.isfinite(want)]), initial=0)),
                                   equal_nan=True)


@pytest.mark.parametrize("name", UNARY_OPS)
def test_unary(name):
    rng = np.random.default_rng(0)
    lo, hi = _DOMAIN.get(name, (-6.0, 6.0))
    x = rng.uniform(lo, hi, 4099).astype(np.float32)   # odd size: vector tails
    attrs = dict(_PARAMS.get(name, {}))
    text = f"""module @m(%x: tensor<4099xf32>) -> (tensor<4099xf32>) {{
  %y = fused.{name} %x{_attrs(attrs)} : tensor<4099xf32>
  return %y
}}"""
    rtol = 5e-6 if name in ("pow", "expm1", "log1p", "elu", "softplus", "mish") else 2e-6
    assert_matches_reference(text, [x], rtol=rtol)


@pytest.mark.parametrize("name", [n for n in UNARY_OPS if n not in _DOMAIN])
def test_unary_special_values(name):
    """inf, NaN, signed zeros, tiny and huge values: the same class of result as the reference."""
    x = np.array(_SPECIAL, np.float32)
    text = f"""module @m(%x: tensor<{len(x)}xf32>) -> (tensor<{len(x)}xf32>) {{
  %y = fused.{name} %x{_attrs(_PARAMS.get(name, {}))} : tensor<{len(x)}xf32>
  return %y
}}"""
    model = _compile(text)
    want = run_reference(model.stages["fused"], [x])[0]
    got = model(x)
    assert (np.isnan(got) == np.isnan(want)).all(), (got, want)
    fin = np.isfinite(want)
    assert (np.isinf(got) == np.isinf(want)).all() and (np.sign(got[~fin & ~np.isnan(want)]) == np.sign(want[~fin & ~np.isnan(want)])).all()
    big = np.abs(x) > 1e4        # sin/cos of huge arguments: float reduction error, as any float32 code
    ok = fin & ~(big if name in ("sin", "cos") else False)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)


def test_unary_params_default_to_torchs():
    assert UNARY_PARAMS["leaky_relu"] == (("negative_slope", 0.01),)


_NP = {"f32": np.float32, "i64": np.int64, "i32": np.int32, "bool": np.bool_}


def _operand(rng, shape, dtype, lo, hi):
    if dtype == "f32":
        return rng.uniform(lo, hi, shape).astype(np.float32)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(-7, 8, shape).astype(_NP[dtype])


def _t(shape, dtype: str) -> str:
    return "tensor<" + "x".join(map(str, shape)) + ("x" if shape else "") + dtype + ">"


@pytest.mark.parametrize("name, dtype", [(n, d) for n, ds in BINARY_OPS.items() for d in ds])
@pytest.mark.parametrize("shapes", [((3, 5), (3, 5)), ((4, 1, 7), (6, 1)), ((1,), (2, 33)), ((5, 3), ())])
def test_binary(name, dtype, shapes):
    """Every binary op in every dtype its kernel takes (integer divisors include 0: the kernel gives 0)."""
    rng = np.random.default_rng(1)
    a = _operand(rng, shapes[0], dtype, 0.1, 3)
    b = _operand(rng, shapes[1], dtype, -2, 2)
    out = np.broadcast_shapes(a.shape, b.shape)
    rdt = "bool" if name in BOOL_RESULT else dtype
    text = f"""module @m(%a: {_t(a.shape, dtype)}, %b: {_t(b.shape, dtype)}) -> ({_t(out, rdt)}) {{
  %y = fused.{name} %a, %b : {_t(out, rdt)}
  return %y
}}"""
    if dtype == "f32" and rdt == "f32":
        assert_matches_reference(text, [a, b], rtol=5e-6)
    else:
        model = _compile(text)
        want = run_reference(model.stages["fused"], [a, b])[0]
        for got in (model(a, b), model.run_op_by_op(a, b)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name, dtype", [(n, d) for n, ds in TERNARY_OPS.items() for d in ds])
def test_ternary(name, dtype):
    """where / clamp_tensor / lerp with broadcasting, in each dtype they take; NaN bounds of clamp included."""
    rng = np.random.default_rng(11)
    first = rng.integers(0, 2, (4, 1, 6)).astype(np.bool_) if name == "where" else _operand(rng, (4, 1, 6), dtype, -3, 3)
    b = _operand(rng, (5, 1), dtype, -1, 0)
    c = _operand(rng, (6,), dtype, 0, 1)
    if name == "clamp_tensor" and dtype == "f32":
        c[2] = np.nan
    fdt = "bool" if name == "where" else dtype
    text = f"""module @m(%a: {_t(first.shape, fdt)}, %b: {_t(b.shape, dtype)}, %c: {_t(c.shape, dtype)}) -> ({_t((4, 5, 6), dtype)}) {{
  %y = fused.{name} %a, %b, %c : {_t((4, 5, 6), dtype)}
  return %y
}}"""
    model = _compile(text)
    want = run_reference(model.stages["fused"], [first, b, c])[0]
    for got in (model(first, b, c), model.run_op_by_op(first, b, c)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)


def test_binary_maximum_and_minimum_propagate_nan():
    a = np.array([1.0, np.nan, 3.0, np.nan], np.float32)
    b = np.array([np.nan, 2.0, 1.0, np.nan], np.float32)
    for name in ("maximum", "minimum"):
        text = f"""module @m(%a: tensor<4xf32>, %b: tensor<4xf32>) -> (tensor<4xf32>) {{
  %y = fused.{name} %a, %b : tensor<4xf32>
  return %y
}}"""
        assert_matches_reference(text, [a, b])


@pytest.mark.parametrize("name", REDUCE_OPS)
@pytest.mark.parametrize("dims, keepdim", [([-1], True), ([0], False), ([1], False), ([0, 2], True),
                                           ([0, 1, 2], False), ([1, 2], False)])
def test_reduce(name, dims, keepdim):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.5, 1.5, (6, 35, 17)).astype(np.float32)
    x[1, 3, 4] = np.nan if name in ("argmax", "argmin") else x[1, 3, 4]
    ref_shape = np.sum(x, axis=tuple(dims), keepdims=keepdim).shape
    rdt = "i64" if name in ("argmax", "argmin") else "f32"
    text = f"""module @m(%x: {_t(x.shape, "f32")}) -> ({_t(ref_shape, rdt)}) {{
  %y = fused.{name} %x {{dims = {dims}, keepdim = {str(keepdim).lower()}, correction = 1.0}} : {_t(ref_shape, rdt)}
  return %y
}}"""
    assert_matches_reference(text, [x], rtol=1e-4 if name == "prod" else 2e-5)


@pytest.mark.parametrize("name, dtype", [(n, d) for n in SCAN_OPS for d in ("f32", "i64")
                                          if d == "f32" or n != "logcumsumexp"])
def test_scan_through_strides(name, dtype):
    rng = np.random.default_rng(12)
    x = _operand(rng, (7, 9), dtype, 0.5, 1.5)
    text = f"""module @m(%x: tensor<7x9x{dtype}>) -> (tensor<9x7x{dtype}>) {{
  %p = fused.permute %x {{perm = [1, 0]}} : tensor<9x7x{dtype}>
  %y = fused.{name} %p {{dim = 0}} : tensor<9x7x{dtype}>
  return %y
}}"""
    assert_matches_reference(text, [x], rtol=1e-5)


def test_gather_scatter_sort():
    """gather (negative indices count from the end), scatter with a sum over repeated indices, a stable
    top-k with NaN, and log_softmax, through both executors."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    x[2, 1] = np.nan
    idx = rng.integers(-6, 6, (4, 3)).astype(np.int64)
    src = rng.standard_normal((4, 3)).astype(np.float32)
    text = """module @m(%x: tensor<4x6xf32>, %i: tensor<4x3xi64>, %s: tensor<4x3xf32>) -> (tensor<4x3xf32>, tensor<4x6xf32>, tensor<4x3xi64>, tensor<4x3xf32>, tensor<4x6xf32>) {
  %g = fused.gather %x, %i {dim = 1} : tensor<4x3xf32>
  %c = fused.scatter %x, %i, %s {dim = 1, reduce = "sum"} : tensor<4x6xf32>
  %k = fused.sort %x {descending = true, k = 3, result = 1} : tensor<4x3xi64>
  %v = fused.sort %x {k = 3} : tensor<4x3xf32>
  %l = fused.log_softmax %x : tensor<4x6xf32>
  return %g, %c, %k, %v, %l
}"""
    model = _compile(text)
    want = run_reference(model.stages["fused"], [x, idx, src])
    for got in (model(x, idx, src), model.run_op_by_op(x, idx, src)):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_gather_out_of_range_stops_the_run():
    from rt.errors import KernelError
    text = """module @m(%x: tensor<4xf32>, %i: tensor<2xi64>) -> (tensor<2xf32>) {
  %g = fused.gather %x, %i {dim = 0} : tensor<2xf32>
  return %g
}"""
    model = _compile(text)
    with pytest.raises(KernelError, match="index"):
        model(np.zeros(4, np.float32), np.array([1, 9], np.int64))


def test_reduce_of_a_strided_view():
    """The kernel reads its input through strides: a permuted input needs no copy."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 5, 9)).astype(np.float32)
    text = """module @m(%x: tensor<8x5x9xf32>) -> (tensor<9x8xf32>) {
  %p = fused.permute %x {perm = [2, 0, 1]} : tensor<9x8x5xf32>
  %y = fused.mean %p {dims = [2]} : tensor<9x8xf32>
  return %y
}"""
    model = _compile(text)
    assert "planned.copy" not in model.ir("planned")
    assert_matches_reference(text, [x], rtol=1e-5)


def test_rms_norm():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 96)).astype(np.float32)
    g = rng.standard_normal(96).astype(np.float32)
    text = """module @m(%x: tensor<7x96xf32>, %g: tensor<96xf32>) -> (tensor<7x96xf32>, tensor<7x96xf32>) {
  %y = fused.rms_norm %x, %g {eps = 1e-05} : tensor<7x96xf32>
  %z = fused.rms_norm %x : tensor<7x96xf32>
  return %y, %z
}"""
    model = _compile(text)
    want = run_reference(model.stages["fused"], [x, g])
    for got in (model(x, g), model.run_op_by_op(x, g)):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_cat_of_strided_parts_along_any_dim():
    """rotate_half's shape: two halves of the last dim, one negated, concatenated the other way round."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    text = """module @m(%x: tensor<2x3x8xf32>) -> (tensor<2x3x8xf32>, tensor<4x3x8xf32>) {
  %a = fused.slice %x {dim = 2, start = 0, end = 4} : tensor<2x3x4xf32>
  %b = fused.slice %x {dim = 2, start = 4, end = 8} : tensor<2x3x4xf32>
  %nb = fused.neg %b : tensor<2x3x4xf32>
  %r = fused.cat %nb, %a {dim = 2} : tensor<2x3x8xf32>
  %s = fused.cat %x, %x {dim = 0} : tensor<4x3x8xf32>
  return %r, %s
}"""
    model = _compile(text)
    want = run_reference(model.stages["fused"], [x])
    for got in (model(x), model.run_op_by_op(x)):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_attention_reads_each_kv_head_for_its_query_group(causal):
    rng = np.random.default_rng(6)
    q = rng.standard_normal((2, 6, 40, 16)).astype(np.float32)
    k = rng.standard_normal((2, 40, 2, 16)).astype(np.float32)     # [B, S, Hkv, D]: read by strides
    v = rng.standard_normal((2, 2, 40, 8)).astype(np.float32)
    text = f"""module @m(%q: tensor<2x6x40x16xf32>, %k: tensor<2x40x2x16xf32>, %v: tensor<2x2x40x8xf32>) -> (tensor<2x6x40x8xf32>) {{
  %kt = fused.permute %k {{perm = [0, 2, 1, 3]}} : tensor<2x2x40x16xf32>
  %y = fused.attention %q, %kt, %v {{scale = 0.25, causal = {str(causal).lower()}, kv_group = 3}} : tensor<2x6x40x8xf32>
  return %y
}}"""
    model = _compile(text)
    assert "planned.copy" not in model.ir("planned")
    assert_matches_reference(text, [q, k, v], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rot, interleaved, table", [(-1, False, "2x16x8"), (4, False, "16x8"),
                                                      (8, True, "1x1x16x8")])
def test_rope_rotates_q_read_by_strides(rot, interleaved, table):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 16, 3, 8)).astype(np.float32)        # [B, S, H, D]: heads by strides
    shape = tuple(int(v) for v in table.split("x"))
    cos = rng.standard_normal(shape).astype(np.float32)
    sin = rng.standard_normal(shape).astype(np.float32)
    text = f"""module @m(%x: tensor<2x16x3x8xf32>, %c: tensor<{table}xf32>, %s: tensor<{table}xf32>) -> (tensor<2x3x16x8xf32>) {{
  %q = fused.permute %x {{perm = [0, 2, 1, 3]}} : tensor<2x3x16x8xf32>
  %y = fused.rope %q, %c, %s {{rot = {rot}, interleaved = {str(interleaved).lower()}}} : tensor<2x3x16x8xf32>
  return %y
}}"""
    model = _compile(text)
    assert "planned.copy" not in model.ir("planned")
    assert_matches_reference(text, [x, cos, sin], rtol=1e-6)


@pytest.mark.parametrize("name", ["silu_mul", "gelu_tanh_mul", "gelu_erf_mul"])
def test_gated_products_read_both_halves_of_one_matmul_by_strides(name):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    text = f"""module @m(%x: tensor<5x64xf32>) -> (tensor<5x32xf32>) {{
  %g = fused.slice %x {{dim = 1, start = 0, end = 32}} : tensor<5x32xf32>
  %u = fused.slice %x {{dim = 1, start = 32, end = 64}} : tensor<5x32xf32>
  %y = fused.{name} %g, %u : tensor<5x32xf32>
  return %y
}}"""
    assert_matches_reference(text, [x], rtol=1e-5)
