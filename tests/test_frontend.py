"""Frontend: torch.export -> torch dialect, checked by the reference interpreter against PyTorch."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from rt.dialects import REGISTRY, parse_module, print_module, verify_module
from rt.dialects.registry import FOLD_ONLY
from rt.errors import ExportError, UnsupportedOpError
from rt.frontend import import_module, supported_overloads
from rt.interpreter import run_reference
from rt.testing import models


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def assert_matches_torch(model, args, kwargs=None, rtol=1e-4):
    """Import, verify, run the torch dialect by the reference interpreter and compare with PyTorch:
    max abs error <= rtol * max|torch output| (exact for non-float outputs)."""
    model = model.eval()
    module = import_module(model, args, kwargs)
    verify_module(module, "torch")
    inputs = list(args) + list((kwargs or {}).values())
    got = run_reference(module, [_np(a) for a in inputs])
    with torch.no_grad():
        want = model(*args, **(kwargs or {}))
    want = torch.utils._pytree.tree_leaves(want)          # nested tuples (var_mean, sort) flattened
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = _np(w)
        assert g.shape == w.shape, (g.shape, w.shape)
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        if w.dtype.kind == "f":
            fin = np.isfinite(w)
            np.testing.assert_array_equal(g[~fin], w[~fin])        # same infs and nans
            g, w = g[fin], w[fin]
            if w.size == 0:
                continue
            scale = max(float(np.abs(w).max()), 1e-6)
            err = float(np.abs(g.astype(np.float64) - w).max())
            assert err <= rtol * scale, f"max abs error {err:.3g} > {rtol} * {scale:.3g}"
        else:
            np.testing.assert_array_equal(g, w)
    return module


def names(module):
    return set(module.op_counts())


class Fn(nn.Module):
    """A module whose forward is a lambda (for small converter tests)."""

    def __init__(self, fn, **params):
        super().__init__()
        self.fn = fn
        for k, v in params.items():
            setattr(self, k, v)

    def forward(self, *xs):
        return self.fn(self, *xs)


def rnd(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- converter families -------------------------------------------------------------------
def test_linear_family():
    lin = nn.Linear(8, 6)
    w = nn.Parameter(rnd(8, 5, seed=3))
    m = Fn(lambda s, x, y: (s.lin(x), torch.addmm(s.lin.bias[:5], x[0], s.w), x @ s.w, torch.bmm(x, y),
                            torch.mm(x[0], s.w), torch.baddbmm(y[:, :4, :3], x[:, :4], y[:, :, :3], alpha=0.5),
                            torch.matmul(x[0, 0], s.w)),
           lin=lin, w=w)
    mod = assert_matches_torch(m, (rnd(2, 4, 8), rnd(2, 8, 3, seed=1)))
    assert {"torch.linear", "torch.addmm", "torch.matmul", "torch.bmm", "torch.mm", "torch.baddbmm"} <= names(mod)


def test_unary_family():
    m = Fn(lambda s, x: (F.relu(x), torch.tanh(x), torch.sigmoid(x), F.gelu(x), F.gelu(x, approximate="tanh"),
                         F.silu(x), torch.erf(x), torch.exp(x), torch.log(x.abs() + 1), torch.sqrt(x.abs()),
                         torch.rsqrt(x.abs() + 0.5), -x, x.abs(), x.pow(3), x ** 2.0, x.clamp(-0.5, 0.5),
                         torch.reciprocal(x + 10)))
    mod = assert_matches_torch(m, (rnd(3, 16),))
    assert {"torch.gelu", "torch.pow.Tensor_Scalar", "torch.erf", "torch.clamp", "torch.neg"} <= names(mod)


def test_binary_scalars_and_promotion():
    m = Fn(lambda s, x, i: (x + 1, x - 0.5, 2 * x, x / 3, 1.0 - x, x + i, i * 0.5, i + 1, i / 2,
                            torch.maximum(x, x.flip(0) if False else x * 0.3), torch.minimum(x, -x),
                            x.abs().pow(x), x.add(x, alpha=2), x.sub(1, alpha=3)))
    mod = assert_matches_torch(m, (rnd(4, 5), torch.arange(5)))
    consts = [mod.constants[op.attrs["name"]] for op in mod.ops if op.name == "const"]
    assert all(c.ndim == 0 for c in consts)           # Python scalars became 0-d constants
    assert "torch.rsub.Scalar" in names(mod)


def test_compare_logic_where_masked_fill():
    m = Fn(lambda s, x, y: (torch.where(x > 0, x, 0.1 * x), x.masked_fill(x < -0.5, float("-inf")),
                            x.masked_fill(torch.triu(torch.ones(4, 4, dtype=torch.bool), 1), -1e4),
                            (x >= y) & (x != 0), (x <= y) | (x == y), ~(x > y), torch.logical_not(x < 0),
                            torch.where(x.ge(0.2), 1.0, 0.0), x.masked_fill(y > 0, torch.tensor(2.0))))
    mod = assert_matches_torch(m, (rnd(4, 4), rnd(4, 4, seed=1)))
    assert {"torch.where.self", "torch.masked_fill.Scalar", "torch.triu", "torch.__and__.Tensor"} <= names(mod)


def test_normalisation_softmax_reductions():
    ln = nn.LayerNorm(16)
    ln2 = nn.LayerNorm([4, 16], elementwise_affine=False)
    m = Fn(lambda s, x: (torch.softmax(x, -1), F.softmax(x * 30, dim=1), F.log_softmax(x, -1), s.ln(x), s.ln2(x),
                         x.mean(-1, keepdim=True), x.sum((0, 2)), x.amax(-1), x.mean(), torch.cumsum(x, 1),
                         torch.softmax(x, -1, dtype=torch.float32)),
           ln=ln, ln2=ln2)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    mod = assert_matches_torch(m, (rnd(2, 4, 16) * 3,))
    assert {"torch.softmax.int", "torch.layer_norm", "torch.mean.dim", "torch.sum.dim_IntList"} <= names(mod)


def test_softmax_large_values_is_stable():
    m = Fn(lambda s, x: torch.softmax(x, -1))
    assert_matches_torch(m, (rnd(2, 8) * 1e4,))


def test_shape_and_view_family():
    m = Fn(lambda s, x: (x.view(2, 12, 4), x.reshape(-1, 4), x.transpose(0, 2), x.permute(3, 0, 1, 2),
                         x.unsqueeze(1), x[:, :1].squeeze(1), x.flatten(1), x.flatten(), x[:1].expand(3, 3, 4, 4),
                         x[:, 1:3], x[..., ::2], x[:, -2:], x[:, 0], x[1], x[0, 0].t(), x.transpose(1, 2).contiguous(),
                         torch.cat([x, x * 2], dim=1), torch.stack([x, -x], 0), x.view(24, 4)[None, :, 2:]))
    mod = assert_matches_torch(m, (rnd(2, 3, 4, 4),))
    for n in ("torch.view", "torch.reshape", "torch.transpose.int", "torch.permute", "torch.unsqueeze",
              "torch.slice.Tensor", "torch.select.int", "torch.cat", "torch.stack", "torch.expand"):
        assert n in names(mod), n


def test_split_like_ops_become_one_slice_per_use():
    m = Fn(lambda s, x: (x.split(4, dim=-1)[0] + x.split(4, dim=-1)[2],
                         sum(x.chunk(3, dim=-1)), x.split([2, 10], dim=-1)[1], sum(x.unbind(1))))
    mod = assert_matches_torch(m, (rnd(2, 3, 12),))
    ops = names(mod)
    assert not any("split" in n or "chunk" in n or "unbind" in n for n in ops)
    counts = mod.op_counts()
    # 2 (split uses) + 3 (chunk) + 1 (split_with_sizes) slices; unbind -> 3 selects
    assert counts["torch.slice.Tensor"] == 6
    assert counts["torch.select.int"] == 3


def test_split_unused_results_emit_nothing():
    m = Fn(lambda s, x: x.split(4, dim=-1)[1] * 2)
    mod = assert_matches_torch(m, (rnd(2, 12),))
    assert mod.op_counts()["torch.slice.Tensor"] == 1


def test_embedding_and_gathers():
    emb = nn.Embedding(50, 8)
    m = Fn(lambda s, ids: (s.emb(ids), s.emb.weight[ids[0]], torch.index_select(s.emb.weight, 0, ids[1]),
                           torch.gather(s.emb.weight[:4], 1, torch.tensor([[0, 1], [2, 3], [4, 5], [6, 7]]))),
           emb=emb)
    mod = assert_matches_torch(m, (torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0)),))
    assert {"torch.embedding", "torch.index.Tensor", "torch.index_select", "torch.gather"} <= names(mod)


def test_creation_casts_and_position_ops():
    m = Fn(lambda s, x: (x + torch.arange(4), torch.arange(1, 9, 2) * x[0], x * torch.ones(4), x + torch.zeros(3, 4),
                         torch.full((3, 4), 0.5) * x, x.new_ones(3, 4) + x, torch.tril(x), torch.triu(x, 1),
                         (x > 0).to(torch.float32), (x > 0).long().cumsum(-1), torch.diff(torch.arange(6)[None] * 2),
                         torch.ones_like(x) * torch.zeros_like(x) + torch.full_like(x, 2.0), x.to(torch.float32),
                         x.type_as(torch.ones(1, dtype=torch.float64))))
    mod = assert_matches_torch(m, (rnd(3, 4),))
    for n in ("torch.arange", "torch.arange.start_step", "torch.ones", "torch.full", "torch.new_ones",
              "torch.cumsum", "torch.diff", "torch.tril"):
        assert n in names(mod), n
        assert REGISTRY[n].has(FOLD_ONLY)


@pytest.mark.parametrize("case", ["causal", "bool_mask", "additive_mask", "scale", "cross_causal", "none"])
def test_scaled_dot_product_attention(case):
    B, H, L, S, E = 2, 3, 5, 5, 8
    if case == "cross_causal":
        S = 7
    q, k, v = rnd(B, H, L, E), rnd(B, H, S, E, seed=1), rnd(B, H, S, E, seed=2)
    keep = torch.rand(B, 1, L, S, generator=torch.Generator().manual_seed(3)) > 0.3
    keep[..., 0] = True
    fns = {
        "causal": lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "cross_causal": lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "bool_mask": lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
        "additive_mask": lambda s, q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=torch.zeros(L, S).masked_fill(~keep[0, 0], -1e9)),
        "scale": lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.37),
        "none": lambda s, q, k, v: F.scaled_dot_product_attention(q, k, v),
    }
    mod = assert_matches_torch(Fn(fns[case]), (q, k, v))
    sdpa = [op for op in mod.ops if op.name == "torch.scaled_dot_product_attention"]
    assert len(sdpa) == 1
    assert sdpa[0].attrs.get("is_causal", False) == case.endswith("causal")
    if case == "scale":
        assert sdpa[0].attrs["scale"] == pytest.approx(0.37)


def test_dropout_alias_and_metadata_ops_vanish():
    m = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.ReLU(), nn.Dropout(0.2))
    mod = assert_matches_torch(m, (rnd(4, 8),))
    assert names(mod) == {"const", "torch.linear", "torch.relu"}


def test_parameters_are_named_constants_sharing_memory():
    model, args = models.mlp(d_in=16, d_hidden=32, d_out=8, batch=4)
    mod = assert_matches_torch(model, args)
    assert set(mod.constants) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert np.shares_memory(mod.constants["0.weight"], model[0].weight.detach().numpy())
    buf = Fn(lambda s, x: x * s.scale_buf)
    buf.register_buffer("scale_buf", rnd(8))
    mod = assert_matches_torch(buf, (rnd(2, 8),))
    assert "scale_buf" in mod.constants


def test_inputs_keep_user_order_and_argument_names():
    class Two(nn.Module):
        def forward(self, input_ids, attention_mask, extra=None):
            return attention_mask.float() * 2 + input_ids[:, :1] + extra

    mod = import_module(Two(), (torch.ones(2, 3),), {"attention_mask": torch.ones(2, 3), "extra": torch.ones(3)})
    assert [v.name for v in mod.inputs] == ["input_ids", "attention_mask", "extra"]
    mod = import_module(Two(), (torch.ones(2, 3),), {"extra": torch.ones(3), "attention_mask": torch.ones(2, 3)})
    assert [v.name for v in mod.inputs] == ["input_ids", "extra", "attention_mask"]     # the user's kwargs order


VIEW_CASES = [
    ("torch.view", {"size": [6, 4]}, (2, 3, 4), None),
    ("torch.reshape", {"shape": [2, 12]}, (2, 3, 4), None),
    ("torch.reshape", {"shape": [4, 6]}, (4, 3, 2), (2, 0, 1)),        # transposed input: splitting a dim works
    ("torch.transpose.int", {"dim0": 0, "dim1": 2}, (2, 3, 4), None),
    ("torch.permute", {"dims": [1, 2, 0]}, (2, 3, 4), (0, 2, 1)),
    ("torch.unsqueeze", {"dim": 1}, (2, 3, 4), None),
    ("torch.unsqueeze", {"dim": -1}, (2, 3, 4), (1, 0, 2)),
    ("torch.squeeze.dim", {"dim": 1}, (2, 1, 4), None),
    ("torch.slice.Tensor", {"dim": 2, "start": 1, "end": 4, "step": 2}, (2, 3, 4), None),
    ("torch.slice.Tensor", {"dim": 1, "start": 1, "end": 3}, (2, 3, 4), (2, 1, 0)),
    ("torch.select.int", {"dim": 1, "index": 2}, (2, 3, 4), None),
    ("torch.expand", {"size": [5, 2, 3, 4]}, (2, 1, 4), None),
    ("torch.t", {}, (3, 4), None),
    ("torch.flatten.using_ints", {"start_dim": 1}, (2, 3, 4), None),
]


@pytest.mark.parametrize("name,attrs,shape,perm", VIEW_CASES)
def test_view_ops_declare_strided_reads(name, attrs, shape, perm):
    """The planner's view facts: (element offset, strides) read the same elements as the reference."""
    from numpy.lib.stride_tricks import as_strided
    from rt.dialects.ir import TensorType
    opdef = REGISTRY[name]
    base = np.arange(int(np.prod(shape)), dtype=np.float32)
    x = base.reshape(shape)
    if perm is not None:                         # a non-contiguous input: a permuted view of the base
        x = base.reshape([shape[i] for i in np.argsort(perm)]).transpose(perm)
        assert x.shape == shape
    in_strides = tuple(s // 4 for s in x.strides)
    out_type = opdef.infer([TensorType.of(x)], opdef.with_defaults(attrs))
    want = opdef.reference([x], opdef.with_defaults(attrs))
    fact = opdef.extra["view"](opdef.with_defaults(attrs), TensorType.of(x), in_strides, out_type)
    if fact is None:
        assert name in ("torch.view", "torch.reshape")      # reshapes of strided inputs may need a copy
        return
    offset, strides = fact
    got = as_strided(base[offset:], shape=out_type.shape, strides=[s * 4 for s in strides])
    np.testing.assert_array_equal(got, want)


def test_reshape_of_non_viewable_input_needs_copy():
    from rt.dialects.ir import TensorType
    opdef = REGISTRY["torch.reshape"]
    t = TensorType((3, 2))                       # the transpose of a contiguous (2, 3)
    assert opdef.extra["view"]({"shape": [6]}, t, (1, 3), TensorType((6,))) is None


def test_source_locations_recorded():
    model, args = models.transformer_block(attention="manual")
    mod = import_module(model, args)
    src = mod.meta["source"]
    sm = [op for op in mod.ops if op.name == "torch.softmax.int"][0]
    assert "attn (Attention)" in src[sm.result.name] and "models.py" in src[sm.result.name]


# ---- errors ---------------------------------------------------------------------------------
class _Exotic(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        y = self.proj(x)
        running = torch.cummax(y, dim=1).values          # exotic op 1
        spectrum = torch.fft.rfft(y, dim=-1).abs()       # exotic op 2
        return running[..., :5] + spectrum


def test_unsupported_ops_are_all_listed_with_source_lines():
    with pytest.raises(UnsupportedOpError) as info:
        import_module(_Exotic(), (rnd(2, 8),))
    msg = str(info.value)
    targets = [u[0] for u in info.value.unsupported]
    assert "aten.cummax.default" in targets
    assert any("fft" in t for t in targets)
    assert "torch.cummax(y, dim=1)" in msg and "torch.fft.rfft(y, dim=-1)" in msg
    assert "test_frontend.py:" in msg
    assert "aten.linear" not in msg
    assert all(u[2] for u in info.value.unsupported)      # every entry has a hint


def test_untraceable_model_gives_export_error_with_hint():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(ExportError) as info:
        import_module(DataDependent(), (rnd(3),))
    msg = str(info.value)
    assert "torch.export could not capture" in msg and "Hint:" in msg
    assert len(msg) < 1500


def test_unsupported_dtype_inside_the_model_names_the_op_and_line():
    class Half(nn.Module):
        def forward(self, x):
            return (x.to(torch.float16) * 2).to(torch.float32)

    with pytest.raises(ExportError) as info:
        import_module(Half(), (rnd(3),))
    msg = str(info.value)
    assert "dtype torch.float16 is not supported" in msg and "aten.to.dtype" in msg
    assert "test_frontend.py:" in msg and "x.to(torch.float16)" in msg


def test_import_module_takes_one_example_tensor_without_a_tuple():
    mod = import_module(nn.Linear(3, 2), rnd(4, 3))
    assert [v.type.shape for v in mod.inputs] == [(4, 3)]


def test_supported_overloads_listed():
    ov = supported_overloads()
    for name in ("aten.linear.default", "aten.scaled_dot_product_attention.default", "aten.split.Tensor",
                 "aten.dropout.default", "aten.layer_norm.default"):
        assert name in ov


# ---- whole models -------------------------------------------------------------------------
BLOCKS = [
    dict(attention="sdpa", mask="causal"),
    dict(attention="sdpa", mask="padding", batch=2),
    dict(attention="manual", mask="causal", gelu="tanh"),
    dict(attention="manual", mask="padding", batch=2, scale_op="mul", heads_op="reshape"),
    dict(attention="manual", mask="none", gelu="tanh", d_model=96, n_heads=6, seq=9),
    dict(attention="sdpa", mask="causal", gelu="tanh", d_model=128, n_heads=2, seq=33),
]


@pytest.mark.parametrize("cfg", BLOCKS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_hand_written_blocks(cfg):
    model, args = models.transformer_block(**cfg)
    mod = assert_matches_torch(model, args)
    ops = names(mod)
    assert "torch.layer_norm" in ops and "torch.linear" in ops
    if cfg["attention"] == "sdpa":
        assert "torch.scaled_dot_product_attention" in ops
    else:
        assert "torch.softmax.int" in ops and "torch.matmul" in ops


def test_tiny_lm_and_mlp():
    assert_matches_torch(*models.tiny_lm())
    assert_matches_torch(*models.tiny_lm(attention="sdpa", gelu="erf", batch=2))
    assert_matches_torch(*models.mlp(act="gelu"))


GPT2_OPS = {"torch.addmm", "torch.slice.Tensor", "torch.view", "torch.reshape", "torch.transpose.int",
            "torch.unsqueeze", "torch.embedding", "torch.layer_norm", "torch.scaled_dot_product_attention",
            "torch.add.Tensor", "torch.mul.Tensor", "torch.pow.Tensor_Scalar", "torch.tanh"}


@pytest.mark.parametrize("seq", [1, 7, 64])
def test_gpt2_body(seq):
    model, args = models.gpt2_body(n_layer=2, seq=seq)
    mod = assert_matches_torch(model, args)
    assert GPT2_OPS - {"torch.slice.Tensor"} <= names(mod)
    assert [v.name for v in mod.inputs] == ["input_ids"]


def test_gpt2_lm_small_has_expected_ops():
    model, args = models.gpt2_lm(n_layer=2, seq=64, n_embd=64, n_head=4, vocab_size=100, n_positions=128)
    mod = assert_matches_torch(model, args)
    ops = names(mod)
    assert GPT2_OPS <= ops and "torch.linear" in ops
    for mask_op in ("torch.arange", "torch.cumsum", "torch.diff", "torch.index.Tensor", "torch.eq.Tensor",
                    "torch.le.Tensor", "torch.ne.Scalar", "torch.__and__.Tensor", "torch.new_ones"):
        assert mask_op in ops, mask_op
        assert REGISTRY[mask_op].has(FOLD_ONLY)
    assert not any("dropout" in n or "alias" in n or "assert" in n or "split" in n for n in ops)


def test_gpt2_lm_12_layers_seq128():
    model, args = models.gpt2_lm(n_layer=12, seq=128)
    t0 = time.perf_counter()
    mod = assert_matches_torch(model, args)
    assert mod.op_counts()["torch.scaled_dot_product_attention"] == 12
    assert time.perf_counter() - t0 < 120


def test_bert_with_padding_mask():
    model, args = models.bert(n_layer=2, batch=2, seq=16)
    mod = assert_matches_torch(model, args)
    assert [v.name for v in mod.inputs] == ["input_ids", "attention_mask"]
    assert "torch.scaled_dot_product_attention" in names(mod)


def test_gpt2_text_round_trip():
    model, args = models.gpt2_lm(n_layer=2, seq=16, n_embd=64, n_head=4, vocab_size=100, n_positions=128)
    mod = import_module(model, args)
    text = print_module(mod)
    parsed = parse_module(text, mod.constants)
    verify_module(parsed, "torch")
    assert print_module(parsed) == text
    got = run_reference(parsed, [args[0].numpy()])[0]
    np.testing.assert_allclose(got, run_reference(mod, [args[0].numpy()])[0])


def test_sdpa_without_mask_operand_parses_and_runs():
    """An SDPA written in IR text with its optional mask left off infers and runs like one with `none`."""
    import numpy as np
    from rt.dialects import parse_module, verify_module
    from rt.interpreter import run_reference
    text = """module @m(%q: tensor<1x2x4x8xf32>) -> (tensor<1x2x4x8xf32>) {
  %0 = torch.scaled_dot_product_attention %q, %q, %q {is_causal = true} : tensor<1x2x4x8xf32>
  return %0
}
"""
    m = parse_module(text)
    verify_module(m, "torch")
    q = np.random.default_rng(0).standard_normal((1, 2, 4, 8)).astype(np.float32)
    y = run_reference(m, [q])[0]
    assert np.allclose(y[..., 0, :], q[..., 0, :], atol=1e-6)   # the first query sees only itself
