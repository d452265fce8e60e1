"""CONV by Winograd's F(m x m, 3x3), m = 4 or 2: which convolutions the planner gives it and which m, its
scratch (C's size and rt.abi's mirror), the kernel against the fused reference through both executors
(edges, chunks, both layouts, every epilogue), and the checker's refusals."""
from __future__ import annotations

import numpy as np
import pytest

from kernel_helpers import build_program, zero_fields
from rt import abi
from rt.api import CompiledModel
from rt.dialects import parse_module
from rt.dialects.planned_proof import prove_storages
from rt.interpreter import run_reference
from rt.dialects.fused_ops import from_nchw
from rt.dialects.kernel_facts import winograd_tile
from rt.errors import ProgramError
from rt.kernels import _runtime
from rt.lowering.plan import to_planned
from rt.target import Target
from test_kernels_conv import _attrs, _run, _t

needs_onednn = pytest.mark.skipif(not _runtime.HAVE_ONEDNN, reason="convolutions run on oneDNN")


def _conv_text(x_shape, w_shape, out_shape, attrs: dict, residual: bool = False, w_const: bool = True) -> str:
    w_arg = "" if w_const else f", %w: {_t(w_shape)}"
    return f"""module @m(%x: {_t(x_shape)}, %r: {_t(out_shape)}{w_arg}) -> ({_t(out_shape)}) {{
  {f'%w = const "w" : {_t(w_shape)}' if w_const else ''}
  %b = const "b" : {_t(w_shape[:1])}
  %y = fused.conv2d %x, %w, %b, {'%r' if residual else 'none'}{_attrs(attrs)} : {_t(out_shape)}
  return %y
}}"""


def _out_nchw(n, c, h, w, o, attrs):
    pt, pb, pl, pr = attrs.get("padding", [0] * 4)
    return n, o, h + pt + pb - 2, w + pl + pr - 2


def _planned_conv(text: str, constants: dict):
    planned = to_planned(parse_module(text, constants), Target.host())
    return next(op for op in planned.ops if op.name == "planned.conv2d")


CASES = [  # (N, C, H, W), O, attrs, residual, m
    ((2, 64, 14, 14), 64, dict(padding=[1, 1, 1, 1]), False, 4),                       # 32 tiles of 4x4
    ((1, 64, 14, 14), 64, dict(padding=[1, 1, 1, 1]), False, 2),                       # 16 of 4x4: 49 of 2x2
    ((2, 80, 17, 19), 72, dict(padding=[0, 2, 1, 0], act="relu"), True, 4),            # ragged tiles, lanes
    ((2, 80, 9, 11), 72, dict(padding=[0, 2, 1, 0], act="relu"), True, 2),
    ((1, 64, 64, 64), 64, dict(padding=[1, 1, 1, 1], act="silu"), False, 4),           # 256 tiles in 2 chunks
    ((3, 64, 10, 10), 96, dict(padding=[2, 2, 2, 2], act="clamp", clamp_min=0.0, clamp_max=6.0), True, 2),
]


@needs_onednn
@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_winograd_matches_the_reference(case, layout):
    (n, c, h, w), o, attrs, residual, m = CASES[case]
    attrs = dict(attrs, layout=layout)
    rng = np.random.default_rng(case)
    x_shape = from_nchw((n, c, h, w), layout)
    out_shape = from_nchw(_out_nchw(n, c, h, w, o, attrs), layout)
    consts = {"w": rng.standard_normal((o, c, 3, 3)).astype(np.float32), "b": rng.standard_normal(o).astype(np.float32)}
    text = _conv_text(x_shape, (o, c, 3, 3), out_shape, attrs, residual)
    conv = _planned_conv(text, consts)
    assert winograd_tile(conv) == conv.attrs["winograd"] == m and conv.attrs["scratch"][1] == abi.align(abi.conv_winograd_scratch_bytes(
        n, *_out_nchw(n, c, h, w, o, attrs)[2:], c, o, m))
    x = rng.standard_normal(x_shape).astype(np.float32)
    r = rng.standard_normal(out_shape).astype(np.float32)
    _run(text, [x, r], consts, rtol=1e-4)       # F(4x4, 3x3) rounds to ~1e-5 of the output's scale


@needs_onednn
def test_a_plan_without_the_choice_runs_direct():
    """A plan saved before Winograd (no `winograd` attribute, no scratch) still loads and runs, directly."""
    (n, c, h, w), o, attrs, _, _ = CASES[0]
    attrs = dict(attrs, layout="nhwc")
    rng = np.random.default_rng(0)
    consts = {"w": rng.standard_normal((o, c, 3, 3)).astype(np.float32), "b": rng.standard_normal(o).astype(np.float32)}
    out = from_nchw(_out_nchw(n, c, h, w, o, attrs), "nhwc")
    fused = parse_module(_conv_text(from_nchw((n, c, h, w), "nhwc"), (o, c, 3, 3), out, attrs), consts)
    planned = to_planned(fused, Target.host())
    conv = next(op for op in planned.ops if op.name == "planned.conv2d")
    assert conv.attrs.pop("winograd") == 4 and conv.attrs.pop("scratch")
    prove_storages(planned)
    x = rng.standard_normal(from_nchw((n, c, h, w), "nhwc")).astype(np.float32)
    r = np.zeros(out, np.float32)
    want = run_reference(fused, [x, r])[0]
    model = CompiledModel({"fused": fused, "planned": planned})
    np.testing.assert_allclose(model(x, r), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("why, x_shape, w_shape, attrs, w_const", [
    ("a 5x5 kernel", (1, 64, 16, 16), (64, 64, 5, 5), dict(padding=[2, 2, 2, 2]), True),
    ("stride 2", (1, 64, 16, 16), (64, 64, 3, 3), dict(stride=[2, 2], padding=[1, 1, 1, 1]), True),
    ("dilated", (1, 64, 16, 16), (64, 64, 3, 3), dict(dilation=[2, 2], padding=[2, 2, 2, 2]), True),
    ("grouped", (1, 64, 16, 16), (64, 32, 3, 3), dict(groups=2, padding=[1, 1, 1, 1]), True),
    ("too few channels", (1, 32, 16, 16), (64, 32, 3, 3), dict(padding=[1, 1, 1, 1]), True),
    ("too few tiles", (1, 512, 7, 7), (512, 512, 3, 3), dict(padding=[1, 1, 1, 1]), True),   # 16 of 2x2
    ("weights at run time", (1, 64, 16, 16), (64, 64, 3, 3), dict(padding=[1, 1, 1, 1]), False),
])
def test_the_planner_keeps_the_direct_convolution(why, x_shape, w_shape, attrs, w_const):
    """Only a 3x3, stride-1, undilated, ungrouped convolution of constant weights with enough channels
    and tiles runs Winograd; every other keeps oneDNN's direct kernel and gets no scratch."""
    o, cg, kh, kw = w_shape
    s, d, g = attrs.get("stride", [1, 1])[0], attrs.get("dilation", [1, 1])[0], attrs.get("groups", 1)
    pt, pb, pl, pr = attrs["padding"]
    n, c, h, w = x_shape
    out = (n, o, (h + pt + pb - d * (kh - 1) - 1) // s + 1, (w + pl + pr - d * (kw - 1) - 1) // s + 1)
    assert cg * g == c
    consts = {"w": np.zeros(w_shape, np.float32), "b": np.zeros(o, np.float32)}
    if not w_const:
        consts.pop("w")
    text = _conv_text(from_nchw(x_shape, "nhwc"), w_shape, from_nchw(out, "nhwc"), dict(attrs, layout="nhwc"),
                      w_const=w_const)
    conv = _planned_conv(text, consts)
    assert not winograd_tile(conv) and conv.attrs.get("winograd") is conv.attrs.get("scratch") is None, why


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("n, oh, ow, c, o", [(1, 56, 56, 64, 64), (8, 56, 56, 64, 64), (8, 7, 7, 512, 512),
                                             (1, 9, 10, 80, 72), (3, 1000, 3, 64, 2048)])
def test_scratch_sizes_agree(n, oh, ow, c, o, m):
    """rt.abi's size of a Winograd CONV's scratch is the C checker's own."""
    assert abi.conv_winograd_scratch_bytes(n, oh, ow, c, o, m) == _runtime.conv_winograd_scratch_bytes(n, oh, ow, c, o, m)
    tiles = abi.conv_winograd_tiles(n, oh, ow, m)
    chunk = abi.conv_winograd_chunk(tiles, c, o, m)
    assert 0 < chunk <= tiles and -(-tiles // chunk) * chunk - tiles < -(-tiles // chunk)   # evened out


def _conv_fields(**changes):
    f = dict(zero_fields("CONV"), N=1, C=64, H=8, W=8, O=64, OH=8, OW=8, KH=3, KW=3, sh=1, sw=1, pt=1, pb=1, pl=1,
             pr=1, dh=1, dw=1, G=1, x_sn=4096, x_sc=64, x_sh=512, x_sw=64, o_sn=4096, o_sc=64, o_sh=512, o_sw=64)
    f.update(x_sc=1, o_sc=1, wino_tile=4)
    f.update(changes)
    return f


@needs_onednn
def test_checker_refuses_what_winograd_cannot_run():
    x, w, out = np.zeros(4096, np.float32), np.zeros(64 * 64 * 25, np.float32), np.zeros(4096, np.float32)
    need = _runtime.conv_winograd_scratch_bytes(1, 8, 8, 64, 64, 4) // 4
    ok = {"x": x, "w": w, "scratch": np.zeros(need, np.float32), "out": out}
    build_program("CONV", ok, constant=("w",), **_conv_fields())
    with pytest.raises(ProgramError, match="wino_tile 3 is none of"):
        build_program("CONV", ok, constant=("w",), **_conv_fields(wino_tile=3))
    with pytest.raises(ProgramError, match="Winograd's F.m x m, 3x3. is for 3x3"):
        build_program("CONV", ok, constant=("w",), **_conv_fields(KH=5, KW=5, pt=2, pb=2, pl=2, pr=2))
    with pytest.raises(ProgramError, match="needs its scratch operand"):
        build_program("CONV", dict(ok, scratch=None), constant=("w",), **_conv_fields())
    with pytest.raises(ProgramError, match="scratch"):
        build_program("CONV", dict(ok, scratch=np.zeros(need - 1, np.float32)), constant=("w",), **_conv_fields())
    with pytest.raises(ProgramError, match="only a Winograd convolution takes scratch"):
        build_program("CONV", ok, constant=("w",), **_conv_fields(wino_tile=0))
    with pytest.raises(ProgramError, match="needs constant weights"):
        build_program("CONV", ok, **_conv_fields())
