"""The model zoo end to end, as users call the models: torch.nn's Transformer and MultiheadAttention, and HF
RoBERTa, XLM-RoBERTa, DeBERTa-v2, MobileBERT, BART, Whisper, T5, GPT-J and Falcon straight from their classes (small
configs, random weights, `rt.testing.zoo`), through the compiled loop and the op-by-op C executor against
PyTorch: every output within 1e-4 of its scale (the position ids from the padding, cumsum(ids != pad),
DeBERTa's relative-position gather and BART's shift_tokens_right comparison run in the typed C kernels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_leaves

import rt
from rt.testing import models
from rt.testing.zoo import hf_model


def _mha_module():
    """nn.MultiheadAttention itself, called with a key padding mask: (output, head-averaged weights)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(1))
    padded = torch.zeros(2, 6, dtype=torch.bool)
    padded[1, -2:] = True
    model = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    return model, {"query": x, "key": x, "value": x, "key_padding_mask": padded}


def _gpt2_padded():
    """GPT2LMHeadModel itself with a padding attention mask (the cache left out: use_cache=False): the
    causal and padding masks are combined at run time (a logical and of two bool tensors)."""
    model, (ids,) = models.gpt2_lm(n_layer=2, seq=8, batch=2, n_embd=32, n_head=4, vocab_size=97, n_positions=32)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, -3:] = 0
    return model.model, {"input_ids": ids, "attention_mask": mask, "use_cache": False}


CASES = {
    "nn_transformer_encoder": lambda: models.transformer(part="encoder"),
    "nn_transformer_decoder": lambda: models.transformer(part="decoder"),
    "nn_transformer_prenorm_gelu": lambda: models.transformer(part="full", activation="gelu", norm_first=True),
    "mha": lambda: models.multihead_attention(),
    "mha_float_attn_mask": lambda: models.multihead_attention(mask="causal"),
    "mha_bool_attn_mask": lambda: models.multihead_attention(mask="bool"),
    "mha_key_padding_mask": lambda: models.multihead_attention(mask="padding"),
    "mha_cross_key_padding_mask": lambda: models.multihead_attention(cross=True, mask="padding"),
    "mha_both_masks": lambda: models.multihead_attention(mask="causal+padding"),
    "mha_both_bool_masks": lambda: models.multihead_attention(mask="bool+padding"),
    "mha_module_with_weights": lambda: _mha_module(),
    "gpt2_padding_mask": lambda: _gpt2_padded(),
    "roberta": lambda: hf_model("roberta"),
    "xlm_roberta": lambda: hf_model("xlm_roberta"),
    "deberta_v2": lambda: hf_model("deberta_v2"),
    "mobilebert": lambda: hf_model("mobilebert"),
    "bart": lambda: hf_model("bart"),
    "bart_shifted_decoder_ids": lambda: hf_model("bart", inputs=("input_ids", "attention_mask")),
    "whisper": lambda: hf_model("whisper"),
    "t5": lambda: hf_model("t5"),
    "gptj": lambda: hf_model("gptj"),
    "falcon": lambda: hf_model("falcon"),
    **{f: (lambda f=f: hf_model(f)) for f in ("phi3", "gemma2", "gpt_neox", "bloom", "mpt", "t5_encoder", "swin",
                                             "segformer", "levit", "deit", "wav2vec2", "speech2text", "mixtral",
                                             "qwen2_moe")},
}
def _call(case):
    """(positional args, keyword args) of the call: the torch.nn factories give args, the HF ones kwargs."""
    model, given = case
    return ((), given) if isinstance(given, dict) else (tuple(given), {})


@pytest.fixture(scope="module", params=sorted(CASES))
def compiled(request):
    model, given = CASES[request.param]()
    args, kwargs = _call((model, given))
    with torch.no_grad():
        want = [t.numpy() for t in tree_leaves(model(*args, **kwargs))]
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    return rt.compile(model, args, kwargs), args, tensors, want


def _assert_close(got, want):
    got = [np.asarray(g) for g in tree_leaves(got)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and float(np.abs(g - w).max()) <= 1e-4 * float(np.abs(w).max())


def test_compiled_loop_matches_torch(compiled):
    model, args, kwargs, want = compiled
    _assert_close(model(*args, **kwargs), want)


def test_op_by_op_executor_matches_torch(compiled):
    model, args, kwargs, want = compiled
    _assert_close(model.run_op_by_op(*args, **kwargs), want)


def test_whisper_query_scale_folds_into_its_projection():
    """Whisper scales q after its biased q_proj: the scale goes into that weight and bias, no multiply is
    left, and each self-attention's Q and V projections are still one matmul."""
    model, kwargs = hf_model("whisper")
    fused = rt.compile(model, (), kwargs).stages["fused"]
    counts = fused.op_counts()
    assert "fused.mul" not in counts and counts["fused.attention"] == 6
    assert sum(op.attrs["name"].endswith(".scaled.merged") for op in fused.ops if op.name == "const") == 4


class ShiftRight(torch.nn.Module):
    """Writes through views of a fresh tensor: a slice (copy_), a selection (fill_), a transpose (mul_)."""

    def forward(self, x):
        out = x.new_zeros(x.shape)
        out[:, 1:] = x[:, :-1]
        out[:, 0] = 5.0
        out.t()[1:3].mul_(2.0)
        return out * x


def test_writes_through_views_update_their_base():
    x = torch.randn(4, 6)
    compiled = rt.compile(ShiftRight(), (x,))
    want = ShiftRight()(x).numpy()
    np.testing.assert_allclose(compiled(x.numpy()), want, rtol=1e-6)
    np.testing.assert_allclose(compiled.run_op_by_op(x.numpy()), want, rtol=1e-6)


class WriteIntoContiguous(torch.nn.Module):
    """contiguous() copies a strided tensor (a write into it leaves the base alone) and returns a
    contiguous one itself (the write is the base's): BEiT's relative position index writes into both."""
    def forward(self, x):
        base = x * 1.0
        strided = base.t()
        copy = strided.contiguous()
        copy[:, 0] += 5.0
        same = base.contiguous()
        same[0] *= 2.0
        return base, copy, same                 # base: untouched by the write into the copy


def test_writes_into_contiguous_follow_torch_aliasing():
    x = torch.randn(4, 6)
    compiled = rt.compile(WriteIntoContiguous(), (x,))
    want = [t.numpy() for t in WriteIntoContiguous()(x)]
    for got in (compiled(x.numpy()), compiled.run_op_by_op(x.numpy())):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-6)


class DiagonalWrite(torch.nn.Module):
    def forward(self, x):
        y = x * 1.0
        y.diagonal().fill_(0.0)
        return y


def test_a_write_through_a_view_rt_cannot_write_back_is_refused():
    with pytest.raises(rt.UnsupportedOpError, match="in-place write through a aten.diagonal.default view"):
        rt.compile(DiagonalWrite(), (torch.randn(3, 3),))


class ZeroDConstants(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(3.0))

    def forward(self, x):
        return x / torch.sqrt(self.scale * 2)          # 0-d constants folded: they keep their 0-d shape


def test_zero_d_constants_fold_to_zero_d():
    x = torch.randn(2, 3)
    np.testing.assert_allclose(rt.compile(ZeroDConstants(), (x,))(x.numpy()), ZeroDConstants()(x).numpy(), rtol=1e-6)
