"""Every zoo model lowered to the fused dialect runs (reference interpreter) like PyTorch, and GPT-2's
fused IR has the shape the kernels want: no fold-only op, one causal attention per layer without a mask,
no loose GELU pieces, every projection a matmul with its bias."""
import itertools

import numpy as np
import pytest
import torch

from rt.dialects import verify_module
from rt.dialects.registry import FOLD_ONLY, REGISTRY
from rt.frontend import import_module
from rt.interpreter import run_reference
from rt.lowering import to_fused
from rt.testing import models as Z


def _blocks():
    out = {}
    for att, mask, gelu in itertools.product(("sdpa", "manual"), ("causal", "padding", "none"), ("erf", "tanh")):
        out[f"block-{att}-{mask}-{gelu}"] = (lambda a=att, m=mask, g=gelu: Z.transformer_block(
            attention=a, mask=m, gelu=g, batch=2, seq=8))
    out["block-manual-mul-reshape"] = lambda: Z.transformer_block(attention="manual", scale_op="mul",
                                                                  heads_op="reshape", seq=8)
    return out


MODELS = {
    "mlp-relu": lambda: Z.mlp(d_in=64, d_hidden=64, d_out=32, n_layers=3, batch=4),
    "mlp-gelu": lambda: Z.mlp(d_in=64, d_hidden=64, d_out=32, n_layers=3, batch=4, act="gelu"),
    "mlp-gelu-tanh": lambda: Z.mlp(d_in=64, d_hidden=64, d_out=32, n_layers=2, batch=4, act="gelu_tanh"),
    "mlp-tanh": lambda: Z.mlp(d_in=64, d_hidden=64, d_out=32, n_layers=2, batch=4, act="tanh"),
    **_blocks(),
    "tiny-lm-manual": lambda: Z.tiny_lm(),
    "tiny-lm-sdpa": lambda: Z.tiny_lm(attention="sdpa", gelu="erf"),
    "gpt2-body-2l-s1": lambda: Z.gpt2_body(n_layer=2, seq=1),
    "gpt2-body-2l-s7": lambda: Z.gpt2_body(n_layer=2, seq=7),
    "gpt2-body-2l-s64": lambda: Z.gpt2_body(n_layer=2, seq=64),
    "gpt2-lm-12l-s128": lambda: Z.gpt2_lm(n_layer=12, seq=128),
    "bert-b2-padded": lambda: Z.bert(),
}


def rel_err(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=sorted(MODELS))
def lowered(request):
    model, args = MODELS[request.param]()
    torch_ir = import_module(model, args)
    fused = to_fused(torch_ir, verify=True)
    with torch.no_grad():
        want = model(*args).numpy()
    return request.param, fused, [a.numpy() for a in args], want


def test_fused_matches_pytorch(lowered):
    name, fused, args, want = lowered
    got = run_reference(fused, args)[0]
    assert rel_err(got, want) <= 1e-4, name


def test_fused_is_pure_fused_dialect(lowered):
    name, fused, _, _ = lowered
    verify_module(fused, "fused")
    assert not [op.name for op in fused.ops if op.name != "const" and REGISTRY[op.name].has(FOLD_ONLY)]
    composites = [op.name for op in fused.ops if op.name != "const" and REGISTRY[op.name].extra.get("composite")]
    assert not composites, f"{name}: ops without a kernel survived: {composites}"


def _layers(name):
    return 12 if "12l" in name else 2


@pytest.mark.parametrize("name", ["gpt2-body-2l-s7", "gpt2-body-2l-s64", "gpt2-lm-12l-s128"])
def test_gpt2_fused_shape(name):
    model, args = MODELS[name]()
    fused = to_fused(import_module(model, args), verify=True)
    counts = fused.op_counts()
    n = _layers(name)
    attn = [op for op in fused.ops if op.name == "fused.attention"]
    assert len(attn) == n
    for op in attn:
        assert op.attrs.get("causal") is True and len(op.present_operands()) == 3, "causal, no mask operand"
        assert op.attrs.get("merge_heads") is True
    for loose in ("fused.pow", "fused.tanh", "fused.mul", "fused.gelu_tanh", "fused.softmax", "fused.cast"):
        assert loose not in counts, loose
    mms = [op for op in fused.ops if op.name == "fused.matmul"]
    projections = [op for op in mms if len(op.operands) > 2 and op.operands[2] is not None]
    assert len(projections) == 4 * n          # c_attn, c_proj, c_fc, mlp c_proj: each with its bias
    assert sum(op.attrs.get("act") == "gelu_tanh" for op in mms) == n
    assert sum(len(op.operands) > 3 and op.operands[3] is not None for op in mms) == 2 * n   # residuals
    assert counts.get("fused.add", 0) == 1    # token + position embeddings


def test_gpt2_s1_has_no_mask():
    model, args = Z.gpt2_body(n_layer=2, seq=1)
    fused = to_fused(import_module(model, args), verify=True)
    for op in fused.ops:
        if op.name == "fused.attention":
            assert len(op.present_operands()) == 3


def test_bert_padding_mask_stays_an_operand():
    model, args = Z.bert()
    fused = to_fused(import_module(model, args), verify=True)
    attn = [op for op in fused.ops if op.name == "fused.attention"]
    assert len(attn) == 2
    masks = {op.operands[3] for op in attn}
    assert len(masks) == 1 and None not in masks          # one mask, computed once, shared by the layers
    assert not any(op.attrs.get("causal") for op in attn)
    assert fused.const_value(next(iter(masks))) is None   # it depends on the attention_mask input


def test_op_counts_per_stage_dev_tool():
    from rt.devtools.stats import format_counts, op_counts_per_stage
    counts = op_counts_per_stage(*Z.mlp(d_in=16, d_hidden=16, d_out=8, n_layers=2, batch=2))
    assert counts["fused"] == {"fused.matmul": 2} and counts["torch"]["torch.linear"] == 2
    assert format_counts("mlp", counts).endswith("fused      2 ops: matmul 2")
