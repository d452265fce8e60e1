"""Llama-family models (HF Llama 3, Qwen2, Qwen3, Mistral; small configs, random weights) end to end
against PyTorch, through both executors, and the fused IR they become: per layer one attention, one
gated MLP, its (RMS) norms and no loose rotary pieces."""

import numpy as np
import pytest
import torch

import rt
from rt.testing import models

FAMILIES = ["llama", "qwen2", "qwen3", "mistral"]


def _check(model, args, compiled):
    with torch.no_grad():
        want = model(*args).numpy()
    arrays = [a.numpy() for a in args]
    scale = np.abs(want).max()
    for got in (compiled(*arrays), compiled.run_op_by_op(*arrays)):
        assert np.abs(got - want).max() <= 1e-4 * scale


def _per_layer(compiled, n_layer):
    counts = compiled.stages["fused"].op_counts()
    return {k.split(".", 1)[1]: v / n_layer for k, v in counts.items() if k != "const"}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("seq", [1, 7, 128])
def test_family_matches_torch_and_fuses_each_layer(family, seq):
    n_layer = 2
    model, args = getattr(models, f"{family}_lm")(seq=seq, n_layer=n_layer)
    compiled = rt.compile(model, args)
    _check(model, args, compiled)
    layer = _per_layer(compiled, n_layer)
    norms = 4 if family == "qwen3" else 2          # + q_norm and k_norm per head
    assert layer["attention"] == 1 and layer["silu_mul"] == 1 and layer["rope"] == 2
    assert layer["rms_norm"] == norms + 1 / n_layer                    # + the final norm
    assert layer["matmul"] == 4 + 1 / n_layer       # merged QKV, o, merged gate/up, down (+ LM head)
    assert not {"cat", "neg", "sigmoid", "mul", "add", "expand", "pow", "mean"} & set(layer)
    plan = compiled.plan_report()
    assert plan["ratio"] <= 1.05


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])       # GQA ratios 1, 2, 4
@pytest.mark.parametrize("tied", [False, True])
def test_grouped_query_ratios_and_tied_embeddings(n_kv_heads, tied):
    model, args = models.llama_lm(seq=9, n_heads=4, n_kv_heads=n_kv_heads, tie_word_embeddings=tied)
    compiled = rt.compile(model, args)
    _check(model, args, compiled)
    groups = {op.attrs.get("kv_group", 1) for op in compiled.stages["fused"].ops if op.name == "fused.attention"}
    assert groups == {4 // n_kv_heads}
    assert "planned.copy" not in compiled.ir("planned")     # K/V never materialised per query head


def test_batch_of_two_saves_and_loads(tmp_path):
    model, args = models.qwen2_lm(seq=5, batch=2)
    compiled = rt.compile(model, args)
    path = tmp_path / "qwen2.rt"
    compiled.save(str(path))
    loaded = rt.load(str(path))
    arrays = [a.numpy() for a in args]
    assert np.array_equal(loaded(*arrays), compiled(*arrays))       # the same program, run from the file
    _check(model, args, loaded)


@pytest.mark.parametrize("kv_heads, gqa", [(1, False), (1, True), (2, True)])
def test_sdpa_over_fewer_kv_heads_reads_each_once_for_its_group(kv_heads, gqa):
    """torch SDPA with K/V of fewer heads than Q: one broadcast over all (multi-query) or, with
    enable_gqa, shared by groups: one fused attention with kv_group, no K/V repeated."""
    class Attend(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(2, 4, 9, 16, generator=g), torch.randn(2, kv_heads, 9, 16, generator=g), \
        torch.randn(2, kv_heads, 9, 16, generator=g)
    compiled = rt.compile(Attend(), (q, k, v))
    _check(Attend(), (q, k, v), compiled)
    groups = [op.attrs.get("kv_group", 1) for op in compiled.stages["fused"].ops if op.name == "fused.attention"]
    assert groups == [4 // kv_heads]
    assert "planned.copy" not in compiled.ir("planned")
