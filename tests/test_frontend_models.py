"""Model zoo through the frontend: the Llama family (Llama 3, Qwen2, Qwen3, Mistral), nn.MultiheadAttention,
nn.Transformer, a CLIP text model and a convolutional net, each imported to the torch dialect and run by
the reference interpreter against torch eager (max abs error <= 1e-4 * max |output|)."""
from __future__ import annotations

import pytest

from rt.testing import models

from test_frontend import assert_matches_torch, names

LLAMA_OPS = {"torch.embedding", "torch.linear", "torch.sin", "torch.cos", "torch.cat", "torch.neg",
             "torch.slice.Tensor", "torch.pow.Tensor_Scalar", "torch.mean.dim", "torch.rsqrt", "torch.silu",
             "torch.scaled_dot_product_attention", "torch.expand", "torch.mul.Tensor", "torch.add.Tensor"}


@pytest.mark.parametrize("family", list(models.LLAMA_FAMILY))
@pytest.mark.parametrize("seq", [1, 7, 32])
def test_llama_family(family, seq):
    model, args = models.causal_lm(family, seq=seq)
    mod = assert_matches_torch(model, args)
    assert LLAMA_OPS - ({"torch.expand"} if seq == 1 else set()) <= names(mod)
    assert mod.meta["decomposed"] == {}                     # every op has a converter of its own
    assert mod.op_counts()["torch.scaled_dot_product_attention"] == 2
    if family == "qwen3":                                   # q_norm and k_norm: two more RMSNorms per layer
        assert mod.op_counts()["torch.rsqrt"] == 2 * 4 + 1


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_grouped_query_attention_ratios(kv_heads):
    assert_matches_torch(*models.llama_lm(n_heads=4, n_kv_heads=kv_heads, seq=9))


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_tied_embeddings(family):
    model, args = models.causal_lm(family, tie_word_embeddings=True, seq=5, head_dim=16)
    mod = assert_matches_torch(model, args)
    emb = next(op for op in mod.ops if op.name == "torch.embedding")
    head = [op for op in mod.ops if op.name == "torch.linear"][-1]
    assert emb.operands[0] is head.operands[1]              # one constant for the table and the LM head


def test_mistral_sliding_window_shapes_the_mask():
    model, args = models.mistral_lm(seq=24, sliding_window=5)
    assert_matches_torch(model, args)


@pytest.mark.parametrize("kw", [dict(), dict(mask="causal"), dict(mask="bool"), dict(mask="padding"),
                                dict(need_weights=True), dict(cross=True), dict(cross=True, mask="padding")],
                         ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_multihead_attention(kw):
    assert_matches_torch(*models.multihead_attention(**kw))


@pytest.mark.parametrize("kw", [dict(part="encoder"), dict(part="decoder"), dict(part="full"),
                                dict(part="full", activation="gelu", norm_first=True)],
                         ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_nn_transformer(kw):
    mod = assert_matches_torch(*models.transformer(**kw))
    assert "torch.layer_norm" in names(mod)


@pytest.mark.parametrize("output", ["pooler_output", "last_hidden_state"])
def test_clip_text_model(output):
    mod = assert_matches_torch(*models.clip_text(output=output))
    if output == "pooler_output":
        assert "torch.argmax" in names(mod)


def test_convnet():
    mod = assert_matches_torch(*models.convnet())
    for name in ("torch.convolution", "torch.batch_norm", "torch.max_pool2d", "torch.group_norm", "torch.hardswish",
                 "torch.upsample_nearest2d.vec", "torch.pad", "torch.avg_pool2d",
                 "torch.upsample_bilinear2d.vec", "torch._adaptive_avg_pool2d"):
        assert name in names(mod), name
