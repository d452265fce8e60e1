"""The vision kernels (CONV on oneDNN, MAX_POOL / AVG_POOL, RESAMPLE, PAD, GROUP_NORM) against their fused ops' numpy
references, through the planner and both executors, from fused IR text: both layouts, strided reads,
every epilogue; and the references against torch itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rt.api import CompiledModel
from rt.dialects import parse_module
from rt.dialects.fused_ops import from_nchw, to_nchw
from rt.dialects.ir import TensorType
from rt.dialects.registry import REGISTRY
from rt.interpreter import run_reference
from rt.kernels import _runtime
from rt.lowering.plan import to_planned
from rt.target import Target

needs_onednn = pytest.mark.skipif(not _runtime.HAVE_ONEDNN, reason="convolutions run on oneDNN")


def _t(shape) -> str:
    return "tensor<" + "x".join(map(str, shape)) + "xf32>"


def _attr(v) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else repr(v)


def _attrs(attrs: dict) -> str:
    return " {" + ", ".join(f"{k} = {_attr(v)}" for k, v in attrs.items()) + "}" if attrs else ""


def _run(text: str, inputs, constants=None, rtol=1e-5):
    """Compile fused IR text, run it both ways, compare with the fused reference; returns the result."""
    fused = parse_module(text, constants or {})
    model = CompiledModel({"fused": fused, "planned": to_planned(fused, Target.host())})
    want = run_reference(fused, inputs)[0]
    scale = max(1.0, float(np.abs(want).max()))
    for got in (model(*inputs), model.run_op_by_op(*inputs)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, equal_nan=True)
    return want


def _one_op(op: str, x_shape, out_shape, attrs: dict, operands: str = "%x", extra_args: str = "") -> str:
    return f"""module @m(%x: {_t(x_shape)}{extra_args}) -> ({_t(out_shape)}) {{
  %y = {op} {operands}{_attrs(attrs)} : {_t(out_shape)}
  return %y
}}"""


CONVS = [  # (N, C, H, W), (O, KH, KW), attrs
    ((2, 8, 9, 11), (16, 3, 3), dict(stride=[2, 2], padding=[1, 1, 1, 2], groups=2, act="relu")),
    ((1, 3, 16, 16), (8, 7, 7), dict(stride=[2, 2], padding=[3, 3, 3, 3])),
    ((1, 6, 10, 10), (6, 3, 3), dict(padding=[2, 2, 2, 2], dilation=[2, 2], groups=6, act="hardswish")),
    ((2, 4, 8, 8), (12, 1, 1), dict(act="clamp", clamp_min=0.0, clamp_max=0.5)),
    ((1, 5, 1, 20), (7, 1, 4), dict(stride=[1, 3], padding=[0, 0, 2, 1], act="gelu_erf")),   # a conv1d
    ((1, 3, 12, 12), (8, 4, 4), dict(stride=[4, 4], act="silu")),                            # a patch embedding
]


@needs_onednn
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", range(len(CONVS)), ids=lambda i: f"conv{i}")
@pytest.mark.parametrize("bias, residual", [(True, False), (False, True), (True, True)])
def test_conv2d(case, layout, bias, residual):
    (n, c, h, w), (o, kh, kw), attrs = CONVS[case]
    attrs = dict(attrs, layout=layout)
    rng = np.random.default_rng(case)
    g = attrs.get("groups", 1)
    wt = rng.standard_normal((o, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32)
    (sh, sw), (dh, dw) = attrs.get("stride", [1, 1]), attrs.get("dilation", [1, 1])
    pt, pb, pl, pr = attrs.get("padding", [0] * 4)
    out = (n, o, (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)
    x_shape, out_shape = from_nchw((n, c, h, w), layout), from_nchw(out, layout)
    x = rng.standard_normal(x_shape).astype(np.float32)
    r = rng.standard_normal(out_shape).astype(np.float32)
    text = f"""module @m(%x: {_t(x_shape)}, %r: {_t(out_shape)}) -> ({_t(out_shape)}) {{
  %w = const "w" : {_t(wt.shape)}
  %b = const "b" : {_t(b.shape)}
  %y = fused.conv2d %x, %w, {'%b' if bias else 'none'}, {'%r' if residual else 'none'}{_attrs(attrs)} : {_t(out_shape)}
  return %y
}}"""
    _run(text, [x, r], {"w": wt, "b": b})


@needs_onednn
def test_conv2d_residual_in_place_and_weights_at_run_time():
    """A residual that dies at the conv is overwritten with the result (oneDNN's sum post-op); a weight
    computed at run time is read as it is."""
    rng = np.random.default_rng(1)
    x, r = rng.standard_normal((1, 4, 6, 6)).astype(np.float32), rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    text = f"""module @m(%x: {_t(x.shape)}, %r: {_t(r.shape)}, %w: {_t(w.shape)}) -> ({_t(r.shape)}) {{
  %r2 = fused.relu %r : {_t(r.shape)}
  %c = fused.conv2d %x, %w, none, %r2 {{padding = [1, 1, 1, 1], act = "relu"}} : {_t(r.shape)}
  %y = fused.neg %c : {_t(r.shape)}
  return %y
}}"""
    fused = parse_module(text)
    planned = to_planned(fused, Target.host())
    conv = next(op for op in planned.ops if op.name == "planned.conv2d")
    res = conv.operands[3].storage
    assert (conv.result.storage.kind, conv.result.storage.offset) == (res.kind, res.offset) == ("arena", 0)
    _run(text, [x, r, w])


TRANSPOSED = [  # (N, C, H, W), (O / groups, KH, KW), attrs
    ((1, 4, 5, 5), (3, 3, 3), dict(stride=[2, 2], padding=[1, 1, 1, 1], output_padding=[1, 1], act="relu")),
    ((2, 6, 4, 3), (2, 3, 2), dict(stride=[2, 3], groups=3, output_padding=[1, 2], dilation=[2, 1])),
    ((1, 8, 3, 3), (1, 4, 4), dict(stride=[2, 2], padding=[1, 1, 1, 1], groups=8)),
]


@needs_onednn
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", range(len(TRANSPOSED)))
def test_conv_transpose2d(case, layout):
    """oneDNN's deconvolution, output padding beyond the padding (a negative right padding) included."""
    (n, c, h, w), (og, kh, kw), attrs = TRANSPOSED[case]
    attrs = dict(attrs, layout=layout)
    rng = np.random.default_rng(case)
    wt = rng.standard_normal((c, og, kh, kw)).astype(np.float32)
    b = rng.standard_normal(og * attrs.get("groups", 1)).astype(np.float32)
    x = rng.standard_normal(from_nchw((n, c, h, w), layout)).astype(np.float32)
    out = _out_shape("conv_transpose2d", x.shape, dict(attrs), (c, og, kh, kw))
    text = f"""module @m(%x: {_t(x.shape)}) -> ({_t(out)}) {{
  %w = const "w" : {_t(wt.shape)}
  %b = const "b" : {_t(b.shape)}
  %y = fused.conv_transpose2d %x, %w, %b{_attrs(attrs)} : {_t(out)}
  return %y
}}"""
    _run(text, [x], {"w": wt, "b": b})


POOLS = [  # op, (N, C, H, W), attrs
    ("max_pool2d", (2, 5, 11, 11), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1])),
    ("max_pool2d", (1, 3, 10, 9), dict(kernel=[3, 2], stride=[2, 2], ceil_mode=True, dilation=[2, 1])),
    ("avg_pool2d", (2, 4, 9, 9), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=True)),
    ("avg_pool2d", (2, 4, 9, 9), dict(kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], count_include_pad=False)),
    ("avg_pool2d", (1, 4, 8, 8), dict(kernel=[2, 2], stride=[2, 2], divisor=3)),
    ("adaptive_avg_pool2d", (2, 6, 7, 10), dict(size=[3, 4])),
    ("adaptive_max_pool2d", (1, 6, 5, 9), dict(size=[2, 3])),
]


def _out_shape(op: str, x_shape, attrs: dict, w_shape=None):
    """The result shape the fused op infers."""
    d = REGISTRY[f"fused.{op}"]
    types = [TensorType(tuple(x_shape))] + ([TensorType(w_shape)] if w_shape else [])
    return d.infer(types, d.with_defaults(attrs)).shape


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", range(len(POOLS)), ids=lambda i: POOLS[i][0] + str(i))
def test_pool2d(case, layout):
    op, x_shape, attrs = POOLS[case]
    attrs = dict(attrs, layout=layout)
    x = np.random.default_rng(case).standard_normal(from_nchw(x_shape, layout)).astype(np.float32)
    out = _out_shape(op, x.shape, attrs)
    x.flat[7] = np.nan                       # max pooling propagates NaN, as torch
    _run(_one_op(f"fused.{op}", x.shape, out, attrs), [x])


UPSAMPLES = [
    dict(mode="nearest", size=[10, 12], scales=[2.0, 2.0]),
    dict(mode="nearest", size=[7, 9]),
    dict(mode="nearest_exact", size=[7, 13]),
    dict(mode="bilinear", size=[9, 15], scales=[1.5, 2.5]),
    dict(mode="bilinear", size=[9, 4], align_corners=True),
]


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case", range(len(UPSAMPLES)))
def test_upsample2d(case, layout):
    attrs = dict(UPSAMPLES[case], layout=layout)
    x = np.random.default_rng(case).standard_normal(from_nchw((2, 3, 5, 6), layout)).astype(np.float32)
    out = from_nchw((2, 3, *attrs["size"]), layout)
    _run(_one_op("fused.upsample2d", x.shape, out, attrs), [x])


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate"])
def test_pad(mode):
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    attrs = dict(lo=[0, 1, 2, 3], hi=[1, 0, 4, 2], mode=mode, value=1.5)
    out = tuple(s + a + b for s, a, b in zip(x.shape, attrs["lo"], attrs["hi"]))
    _run(_one_op("fused.pad", x.shape, out, attrs), [x])


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm(layout, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(from_nchw((2, 12, 5, 7), layout)) * 3 + 1).astype(np.float32)
    g, b = rng.standard_normal(12).astype(np.float32), rng.standard_normal(12).astype(np.float32)
    args = ", %g, %b" if affine else ""
    text = f"""module @m(%x: {_t(x.shape)}) -> ({_t(x.shape)}) {{
  %g = const "g" : tensor<12xf32>
  %b = const "b" : tensor<12xf32>
  %y = fused.group_norm %x{args} {{groups = 4, eps = 1e-5, layout = "{layout}"}} : {_t(x.shape)}
  return %y
}}"""
    want = _run(text, [x], {"g": g, "b": b})
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "nhwc" else x))
    ref = F.group_norm(t, 4, *(map(torch.from_numpy, (g, b)) if affine else ())).numpy()
    np.testing.assert_allclose(to_nchw(want, layout), ref, rtol=1e-5, atol=1e-5)


def test_pooling_and_resampling_read_strided_inputs():
    """A permute view (NHWC data read as NCHW) feeds each kernel without a copy."""
    x = np.random.default_rng(0).standard_normal((2, 6, 7, 5)).astype(np.float32)   # [N, H, W, C]
    ops = [("fused.max_pool2d", dict(kernel=[2, 2], stride=[2, 2]), (2, 5, 3, 3)),
           ("fused.upsample2d", dict(mode="bilinear", size=[12, 14]), (2, 5, 12, 14)),
           ("fused.pad", dict(lo=[0, 0, 1, 1], hi=[0, 0, 1, 1], mode="reflect"), (2, 5, 8, 9)),
           ("fused.group_norm", dict(groups=5), (2, 5, 6, 7))]
    for op, attrs, out in ops:
        text = f"""module @m(%x: {_t(x.shape)}) -> ({_t(out)}) {{
  %v = fused.permute %x {{perm = [0, 3, 1, 2]}} : {_t((2, 5, 6, 7))}
  %y = {op} %v{_attrs(attrs)} : {_t(out)}
  return %y
}}"""
        planned = to_planned(parse_module(text), Target.host())
        assert not [o for o in planned.ops if o.name == "planned.copy"], op
        _run(text, [x])


# ---- the fused references against torch ----
def test_references_match_torch():
    """The fused ops' references (which the kernels are tested against above) against torch itself."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 10)).astype(np.float32)
    t = torch.from_numpy(x)

    def ref(name, args, **attrs):
        d = REGISTRY[f"fused.{name}"]
        return d.reference(args, d.with_defaults(attrs))

    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    want = F.conv2d(F.pad(t, (1, 2, 0, 1)), torch.from_numpy(w), stride=2, dilation=(1, 2), groups=2).numpy()
    got = ref("conv2d", [x, w], stride=[2, 2], padding=[0, 1, 1, 2], dilation=[1, 2], groups=2)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    wt = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    want = F.conv_transpose2d(t, torch.from_numpy(wt), stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                              groups=2, dilation=(1, 2)).numpy()
    got = ref("conv_transpose2d", [x, wt], stride=[2, 3], padding=[1, 1, 0, 0], output_padding=[1, 2], groups=2,
              dilation=[1, 2])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    checks = [
        (ref("max_pool2d", [x], kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=True),
         F.max_pool2d(t, 3, 2, 1, ceil_mode=True)),
        (ref("avg_pool2d", [x], kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=True,
             count_include_pad=False), F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)),
        (ref("avg_pool2d", [x], kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], ceil_mode=True),
         F.avg_pool2d(t, 3, 2, 1, ceil_mode=True)),
        (ref("adaptive_avg_pool2d", [x], size=[4, 3]), F.adaptive_avg_pool2d(t, (4, 3))),
        (ref("upsample2d", [x], mode="bilinear", size=[13, 25], scales=[1.5, 2.5]),
         F.interpolate(t, scale_factor=(1.5, 2.5), mode="bilinear")),
        (ref("upsample2d", [x], mode="bilinear", size=[5, 7], align_corners=True),
         F.interpolate(t, size=(5, 7), mode="bilinear", align_corners=True)),
        (ref("upsample2d", [x], mode="nearest", size=[13, 7]), F.interpolate(t, size=(13, 7), mode="nearest")),
        (ref("upsample2d", [x], mode="nearest_exact", size=[13, 7]),
         F.interpolate(t, size=(13, 7), mode="nearest-exact")),
    ]
    for got, want in checks:
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-6)
