"""Every model of the frontend zoo through the whole pipeline, compiled loop and op-by-op C
executor, against PyTorch (max abs error <= 1e-4 relative to the output's scale)."""
import numpy as np
import pytest
import torch

import rt
from rt.testing import models

CASES = {
    "block_sdpa_causal": lambda: models.transformer_block(d_model=64, n_heads=4, seq=16),
    "block_manual_causal_tanh": lambda: models.transformer_block(attention="manual", gelu="tanh", scale_op="mul"),
    "block_sdpa_masked": lambda: models.transformer_block(mask="padding", batch=2),
    "block_manual_masked": lambda: models.transformer_block(attention="manual", mask="padding", batch=2),
    "gpt2_body_s1": lambda: models.gpt2_body(n_layer=2, seq=1),
    "gpt2_body_s7": lambda: models.gpt2_body(n_layer=2, seq=7),
    "gpt2_body_s64": lambda: models.gpt2_body(n_layer=2, seq=64),
    "gpt2_lm_12_s128": lambda: models.gpt2_lm(n_layer=12, seq=128),
    "bert_padding": lambda: models.bert(n_layer=2, batch=2, pad=5),
}


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model, args = CASES[request.param]()
    with torch.no_grad():
        want = model(*args).numpy()
    return request.param, model, args, want, rt.compile(model, args)


def test_compiled_loop_matches_torch(case):
    name, model, args, want, compiled = case
    assert rel_err(compiled(*args), want) <= 1e-4


def test_op_by_op_executor_matches_torch(case):
    name, model, args, want, compiled = case
    assert rel_err(compiled.run_op_by_op(*args, kernels="c"), want) <= 1e-4


def test_gpt2_fused_shape(case):
    """GPT-2: one causal attention per layer with no mask, no GELU pieces, every projection a matmul."""
    name, model, args, want, compiled = case
    if not name.startswith("gpt2"):
        pytest.skip("GPT-2 only")
    fused = compiled.stages["fused"]
    n_layer = model.model.config.n_layer       # the zoo wraps the HF model to return one tensor
    attn = [op for op in fused.ops if op.name == "fused.attention"]
    assert all(op.attrs.get("causal") and len(op.present_operands()) == 3 for op in attn)
    assert len(attn) == n_layer
    assert not any(op.name in ("fused.tanh", "fused.pow", "fused.gelu_tanh") for op in fused.ops)
    assert all(op.present_operands()[2:3] for op in fused.ops if op.name == "fused.matmul"
               and op.operands[1].producer.name == "const" and op.operands[1].type.shape[0] != 50257)
