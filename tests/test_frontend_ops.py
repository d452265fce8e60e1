"""The torch dialect's op families against torch itself: dtype promotion, integer division, NaN and
infinities, keepdim and negative dims, 0-d results, several results, the decomposition fallback, and the
registry's agreement with the ATen schemas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rt.dialects import REGISTRY, verify_module
from rt.errors import UnsupportedOpError
from rt.frontend import import_module
from rt.frontend.converters import PLACEMENT_ARGS, _is_tensor_list_type, _is_tensor_type
from rt.frontend.coverage import table
from rt.interpreter import run_reference

from test_frontend import Fn, assert_matches_torch, names, rnd


def special(*shape, seed=0):
    """Floats with NaN, +-inf, +-0 and exact halves among them."""
    x = rnd(*shape, seed=seed) * 3
    flat = x.view(-1)
    vals = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 2.5, -2.5, 0.5]
    flat[:len(vals)] = torch.tensor(vals[:flat.numel()])
    return x


def ints(*shape, lo=-6, hi=7, seed=0, dtype=torch.int64):
    return torch.randint(lo, hi, shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---- the registry agrees with ATen -----------------------------------------------------------
# deliberate departures from "operands and attributes named as in the schema"
SCHEMA_EXCEPTIONS = {"torch.index_put": "variadic indices moved last"}


def test_every_torch_op_has_its_aten_schema():
    aten = torch.ops.aten
    bad = []
    for d in REGISTRY.dialect_ops("torch"):
        parts = d.name.split(".")
        overload = getattr(getattr(aten, parts[1]), parts[2] if len(parts) > 2 else "default")
        args = overload._schema.arguments
        tensors = [a.name for a in args if _is_tensor_type(a.type) or _is_tensor_list_type(a.type)]
        attrs = {a.name for a in args if a.name not in tensors and a.name not in PLACEMENT_ARGS}
        ours = {a for a in d.attrs if a not in ("result", "dtype")}
        if d.name in SCHEMA_EXCEPTIONS:
            continue
        if [o.rstrip("?*") for o in d.operands] != tensors or ours != attrs - {"dtype"}:
            bad.append((d.name, d.operands, sorted(d.attrs), tensors, sorted(attrs)))
        assert d.reference is not None, d.name
    assert not bad, bad


def test_core_inference_opset_coverage():
    rows = table()
    covered = [r for r in rows if r[1] != "unsupported"]
    assert len(covered) >= 0.95 * len(rows), f"{len(covered)} of {len(rows)}"
    missing = {r[0]: r[2] for r in rows if r[1] == "unsupported"}
    assert all(reason != "no torch dialect op yet" for reason in missing.values()), missing


# ---- elementwise --------------------------------------------------------------------------------
UNARY = ["abs", "neg", "sign", "ceil", "floor", "round", "trunc", "frac", "sin", "cos", "tan", "asin", "acos",
         "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "exp", "exp2", "expm1", "log", "log2", "log10",
         "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid", "erf", "erfc", "isnan", "isinf", "isfinite",
         "signbit", "relu", "nan_to_num"]


def _accepts(fn, x) -> bool:
    try:
        fn(x)
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        return False


@pytest.mark.parametrize("name", UNARY)
def test_unary_on_specials_ints_and_bools(name):
    fn = getattr(torch, name)
    inputs = [x for x in (special(4, 6), ints(4, 6), ints(4, 6, dtype=torch.int32), ints(4, 6) > 0) if _accepts(fn, x)]
    assert_matches_torch(Fn(lambda s, *xs: tuple(fn(x) for x in xs)), tuple(inputs))


def test_activations_with_attributes():
    m = Fn(lambda s, x: (F.elu(x, 0.7), F.leaky_relu(x, 0.2), F.hardtanh(x, -0.5, 2.0), F.hardswish(x),
                         F.hardsigmoid(x), F.softplus(x, 2.0, 3.0), F.mish(x), F.relu6(x), F.logsigmoid(x),
                         F.threshold(x, 0.3, -1.0), torch.round(x, decimals=2), torch.round(x * 100, decimals=-1),
                         x.clamp(min=-0.25), x.clamp(max=0.25), x.clamp(0.5, -0.5), torch.nan_to_num(x, 1.0, 2.0, -2.0)))
    assert_matches_torch(m, (special(3, 16),))


def test_binary_promotion():
    m = Fn(lambda s, x, i, j, b: (x + i, i + j, i * 2.5, i / j, i // 3, j % 4, b + b, b * i, i - 1, x ** 2,
                                  i ** 2, 2 ** i, 2.0 ** x, torch.atan2(x, i), torch.maximum(i, x), b & (i > 0),
                                  i ^ j, i | 3, torch.fmod(i, 4), torch.remainder(x, -1.5), x.pow(i), j > 2.5,
                                  i == x, torch.logical_xor(i, x), torch.copysign(x, i), torch.hypot(x, x)))
    assert_matches_torch(m, (rnd(3, 4), ints(3, 4), ints(3, 4, seed=1, dtype=torch.int32), ints(3, 4) > 0))


@pytest.mark.parametrize("mode", [None, "trunc", "floor"])
def test_division_rounding(mode):
    a = torch.tensor([-7, 7, -7, 7, 0, 5, -5, 9])
    b = torch.tensor([2, -2, -2, 2, 3, 5, 3, -4])
    m = Fn(lambda s, a, b, x, y: (torch.div(a, b, rounding_mode=mode), torch.div(x, y, rounding_mode=mode),
                                  torch.div(a, 3, rounding_mode=mode), torch.floor_divide(x, y),
                                  torch.remainder(a, b), torch.fmod(a, b), torch.remainder(x, y), torch.fmod(x, y)))
    assert_matches_torch(m, (a, b, a.float() * 1.25, b.float() * 0.75))


def test_nan_propagation_and_selection():
    m = Fn(lambda s, x, y: (torch.maximum(x, y), torch.minimum(x, y), torch.fmax(x, y), torch.fmin(x, y),
                            x.amax(-1), x.amin(0), x.argmax(-1), x.argmin(0), torch.where(x > y, x, y),
                            x.clamp(-1, 1), F.relu(x), x.max(dim=1).values, x.min(dim=0).indices))
    assert_matches_torch(m, (special(4, 5), special(4, 5, seed=1)))


def test_zero_dim_results_keep_their_shape():
    m = Fn(lambda s, x: (x.sum(), torch.zeros_like(x[0, 0]), x[0, 0].new_full((), 2.0), torch.ones_like(x[1, 1]),
                         x.amax(), x[0, 0] * 2, x.mean(), x.argmax(), x[1, 1].exp(), x.std()))
    mod = assert_matches_torch(m, (rnd(3, 4),))
    assert all(v.type.shape == () for v in mod.outputs)


# ---- reductions ---------------------------------------------------------------------------------
def test_reductions_dims_keepdim_dtypes():
    m = Fn(lambda s, x, i, b: (x.sum((0, -1), keepdim=True), x.mean(-2), x.prod(1), x.prod(), i.sum(-1), b.sum(0),
                               i.prod(0, keepdim=True), x.var(1), x.var(0, correction=0, keepdim=True),
                               x.std((0, 2)), x.logsumexp(-1), x.logsumexp((0, 1), keepdim=True),
                               b.any(-1), b.all(), b.any(), i.amax((0, 2)), x.norm(dim=-1), x.norm(p=1),
                               torch.linalg.vector_norm(x, float("inf"), dim=(0, 1)), x.cumsum(-1), i.cumsum(0),
                               x.cumprod(1), torch.var_mean(x, 1), torch.std_mean(x, (0, 2), keepdim=True),
                               x.sum(1, dtype=torch.float64), i.sum(dtype=torch.float32), x.argmax(1, keepdim=True),
                               x.argmax(), x.max(), i.min(), torch.logcumsumexp(x, 1)))
    assert_matches_torch(m, (rnd(3, 4, 5), ints(3, 4, 5), ints(3, 4, 5) > 0))


# ---- several results ----------------------------------------------------------------------------
def test_multi_result_ops():
    m = Fn(lambda s, x: (torch.sort(x, -1).values, torch.sort(x, 0, descending=True).indices,
                         torch.topk(x, 3).values, torch.topk(x, 2, dim=0, largest=False).indices,
                         x.max(-1).values + x.max(-1).indices, x.min(0, keepdim=True)[1],
                         torch.sort(x, stable=True)[1], torch.frexp(x).mantissa))
    mod = assert_matches_torch(m, (rnd(5, 6),))
    sorts = [op for op in mod.ops if op.name == "torch.sort"]
    assert {op.attrs.get("result", 0) for op in sorts} == {0, 1}


def test_norm_and_pool_results_keep_the_whole_op():
    """native_layer_norm / max_pool2d_with_indices reached through a decomposition: rt keeps the whole op."""
    m = Fn(lambda s, x: (torch.ops.aten.native_layer_norm(x, [8], None, None, 1e-5)[0],
                         torch.ops.aten.max_pool2d_with_indices(x, [2, 2])[0],
                         torch.ops.aten.max_pool2d_with_indices(x, [2, 2])[1],
                         torch.ops.aten.native_layer_norm(x, [8], None, None, 1e-5)[2]))
    mod = assert_matches_torch(m, (rnd(2, 3, 8, 8),))
    ops = names(mod)
    assert {"torch.layer_norm", "torch.max_pool2d", "torch.max_pool2d_with_indices",
            "torch.native_layer_norm"} <= ops


# ---- data movement ------------------------------------------------------------------------------
def test_data_movement():
    idx = torch.tensor([[0, 2, 1], [3, 3, 0]])
    m = Fn(lambda s, x, v: (x.flip(0, -1), x.roll(2, 1), x.roll((1, -1), (0, 1)), x.roll(3), x.repeat(2, 1, 2),
                            F.pad(x, (1, 2)), F.pad(x, (-1, 1, 2, -1), value=0.5), F.pad(x[None], (2, 1, 1, 1), "reflect"),
                            F.pad(x[None], (2, 1, 1, 2), "replicate"), F.pad(x[None], (1, 1, 2, 0), "circular"),
                            x.tril(-1), x.triu(1), torch.diagonal(x, 1), torch.diagonal(x, -1),
                            x.scatter(1, idx, v), x.scatter_add(1, idx, v), x.scatter(0, idx, 2.5),
                            x.scatter_reduce(1, idx, v, "amax", include_self=False),
                            x.scatter_reduce(1, idx, v, "mean"), x.scatter_reduce(1, idx, v, "prod"),
                            x.index_put((idx[0], idx[1]), v[0, :3], accumulate=True), torch.gather(x, 1, idx),
                            x.index_select(1, idx[0]), x[idx], x[:, idx[0]], x.unfold(1, 2, 1),
                            x.unflatten(1, (2, 2)), torch.slice_scatter(x, x[:, :2] * 3, 1, 1, 3),
                            torch.select_scatter(x, v[0], 0, 1), torch.diagonal_scatter(x, v[0, :3], 1),
                            x.masked_scatter(x > 0, v * 10), x.t().contiguous().view(-1)[::3],
                            torch.searchsorted(torch.arange(5.0), x), torch.bucketize(x, torch.tensor([-1.0, 0.0, 1.0]))))
    assert_matches_torch(m, (rnd(4, 4), rnd(2, 4, seed=1)))


def test_creation_and_copies():
    m = Fn(lambda s, x: (torch.full((2, 3), 7), torch.empty(2, 3).fill_(1.5), x.new_zeros(2), torch.zeros_like(x),
                         torch.scalar_tensor(3.0), torch.ops.aten.copy(x, x[:1] * 2), x.fill_(0.25) * 1,
                         torch.arange(0, 1, 0.25), torch.ones(3, dtype=torch.bool), torch.full((2,), True)))
    assert_matches_torch(m, (rnd(3, 4),))


# ---- neural-net ops -----------------------------------------------------------------------------
@pytest.mark.parametrize("conv", [
    nn.Conv1d(4, 6, 3, padding=1, dilation=2), nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
    nn.Conv2d(4, 4, 4, padding="same", bias=False), nn.Conv3d(2, 3, (1, 2, 3)), nn.ConvTranspose1d(4, 2, 3, stride=2),
    nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), nn.ConvTranspose2d(4, 2, 2, dilation=2),
    nn.Conv2d(4, 4, 3, padding="valid", padding_mode="reflect")], ids=lambda c: type(c).__name__)
def test_convolutions(conv):
    nd = int(type(conv).__name__[-2])
    x = rnd(2, conv.in_channels, *([9, 8, 7][:nd]))
    mod = assert_matches_torch(conv.eval(), (x,))
    assert "torch.convolution" in names(mod)


def test_norms_pools_and_resampling():
    bn, gn, ln, rms = nn.BatchNorm2d(4).eval(), nn.GroupNorm(2, 4), nn.LayerNorm([4, 4]), nn.RMSNorm(4, eps=1e-6)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
    grid = torch.rand(2, 3, 5, 2, generator=torch.Generator().manual_seed(3)) * 2.2 - 1.1
    m = Fn(lambda s, x: (s.bn(x), s.gn(x), s.ln(x), s.rms(x), F.instance_norm(x),
                         F.batch_norm(x, None, None, training=True),
                         F.max_pool2d(x, 3, 2, 1, ceil_mode=True), F.max_pool2d(x, 2, dilation=2),
                         F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
                         F.avg_pool2d(x, 2, divisor_override=3), F.max_pool1d(x[0], 2), F.avg_pool1d(x[0], 3, 2, 1),
                         F.adaptive_avg_pool2d(x, (3, 2)), F.adaptive_max_pool2d(x, 3), F.adaptive_avg_pool1d(x[0], 3),
                         F.interpolate(x, scale_factor=2), F.interpolate(x, size=(5, 7)),
                         F.interpolate(x, scale_factor=1.7, mode="bilinear"),
                         F.interpolate(x, size=(3, 9), mode="bilinear", align_corners=True),
                         F.interpolate(x, scale_factor=2, mode="bicubic"), F.interpolate(x, size=5, mode="nearest-exact"),
                         F.interpolate(x[0], scale_factor=2, mode="linear"),
                         F.grid_sample(x, grid, align_corners=False), F.grid_sample(x, grid, mode="nearest"),
                         F.grid_sample(x, grid, padding_mode="border", align_corners=True),
                         F.grid_sample(x, grid, padding_mode="reflection"), F.pixel_shuffle(x, 2),
                         F.fold(x.reshape(2, 16, 4), (3, 4), 2, stride=(1, 2)), torch.cdist(x[0], x[1]),
                         F.pdist(x[0, 0]), F.embedding_bag(torch.tensor([1, 2, 0, 3]), x[0, 0], torch.tensor([0, 2])),
                         F.glu(x, 1), F.prelu(x, torch.tensor([0.1, 0.2, 0.3, 0.4])), F.celu(x), F.selu(x)),
           bn=bn, gn=gn, ln=ln, rms=rms)
    assert_matches_torch(m, (rnd(2, 4, 4, 4) * 2,))


# ---- the decomposition fallback -----------------------------------------------------------------
def test_ops_without_a_converter_are_decomposed_and_known_ops_stay_whole():
    lin = nn.Linear(8, 8)
    m = Fn(lambda s, x, y: (s.lin(F.softshrink(x, 0.3)), torch.lerp(x, y, 0.3), torch.addcmul(x, x, y, value=0.5),
                            torch.einsum("bi,bj->bij", x, y), F.layer_norm(x, [8]), torch.special.xlog1py(x, y.abs()),
                            torch.cartesian_prod(x[0, :3], y[0, :2])), lin=lin)
    mod = assert_matches_torch(m, (rnd(3, 8), rnd(3, 8, seed=1)))
    dec = mod.meta["decomposed"]
    assert {"aten.softshrink.default", "aten.lerp.Scalar", "aten.addcmul.default"} <= set(dec)
    assert {"torch.linear", "torch.layer_norm"} <= names(mod)


def test_a_refused_use_is_decomposed():
    """torch.pad refuses a mode it does not know: that call goes through torch's decomposition."""
    from rt.frontend import converters
    saved = converters.CONVERTERS.get(torch.ops.aten.pad.default)

    def refuse_circular(builder, node, args, kwargs):
        if converters.bind(node, args, kwargs)["mode"] == "circular":
            raise ValueError("no circular padding here")
        return converters.schema_converter(builder, node, args, kwargs)
    converters.CONVERTERS[torch.ops.aten.pad.default] = refuse_circular
    try:
        m = Fn(lambda s, x: (F.pad(x, (1, 2, 2, 1), mode="circular"), F.pad(x, (1, 1, 1, 1), mode="reflect")))
        mod = assert_matches_torch(m, (rnd(1, 2, 5, 5),))
    finally:
        if saved is None:
            del converters.CONVERTERS[torch.ops.aten.pad.default]
        else:
            converters.CONVERTERS[torch.ops.aten.pad.default] = saved
    assert mod.meta["decomposed"] == {"aten.pad.default": 1}
    assert "torch.pad" in names(mod)                   # the reflect pad stayed whole


class _Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs() + torch.special.i0e(x[..., :5])


def test_unsupported_error_says_what_was_decomposed():
    with pytest.raises(UnsupportedOpError) as info:
        import_module(_Spectrum(), (rnd(2, 8),))
    msg = str(info.value)
    targets = {u[0] for u in info.value.unsupported}
    assert "aten._fft_r2c.default" in targets and "aten.special_i0e.default" in targets
    assert "decomposed" in msg and "aten.fft_rfft.default" in msg
    assert "torch.fft.rfft(x)" in msg                         # the model line of the decomposed call


def test_in_place_calls_in_the_graph():
    class M(nn.Module):
        def forward(self, x):
            y = x * 2
            y.masked_fill_(y > 1, 0.0)
            y.clamp_(min=-1.0)
            return y + 1

    mod = assert_matches_torch(M(), (rnd(3, 5),))
    verify_module(mod, "torch")


def test_decomposed_module_runs_like_its_text():
    from rt.dialects import parse_module, print_module
    m = Fn(lambda s, x: F.softshrink(x, 0.2) + torch.lerp(x, x * 2, 0.5))
    mod = import_module(m, (rnd(4, 4),))
    parsed = parse_module(print_module(mod), mod.constants)
    x = rnd(4, 4).numpy()
    np.testing.assert_array_equal(run_reference(parsed, [x])[0], run_reference(mod, [x])[0])
