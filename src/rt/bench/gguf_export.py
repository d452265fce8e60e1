"""Write a (random-weight) HF causal LM to an f32 GGUF file that llama.cpp loads, for the llama.cpp baseline.

The same metadata keys, tensor names and weight layouts as llama.cpp's own convert_hf_to_gguf.py (GPT2Model,
LlamaModel, Qwen3Model there), minus its tokenizer: the file declares tokenizer model "none" with
`{arch}.vocab_size` dummy tokens, which llama.cpp accepts when it is only fed token ids (as here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Arch:
    gguf_arch: str                         # attribute of gguf.MODEL_ARCH
    hparams: Callable                      # (writer, hf config) -> None: the architecture's own keys
    weight: Callable                       # (hf name, array, hf config) -> array in llama.cpp's layout
    extra_tensors: Callable = lambda cfg: {}   # hf config -> {gguf name: array} not in the state dict


def _gpt2_hparams(w, cfg):
    w.add_context_length(cfg.n_positions)
    w.add_embedding_length(cfg.n_embd)
    w.add_feed_forward_length(cfg.n_inner or 4 * cfg.n_embd)
    w.add_head_count(cfg.n_head)
    w.add_layer_norm_eps(cfg.layer_norm_epsilon)


def _gpt2_weight(name, a, cfg):
    # HF's Conv1D stores (in, out); llama.cpp wants nn.Linear's (out, in)
    if name.endswith((".c_attn.weight", ".c_proj.weight", ".c_fc.weight")):
        return a.T
    return a


def _rope(cfg) -> dict:
    return getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def _llama_family_hparams(w, cfg):
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(_rope(cfg).get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    w.add_rope_dimension_count(_head_dim(cfg))
    w.add_key_length(_head_dim(cfg))
    w.add_value_length(_head_dim(cfg))


def _unpermute_rope(a, n_head):
    """HF rotates the two halves of each head (NEOX order); llama.cpp's LLAMA arch rotates adjacent pairs."""
    return a.reshape(n_head, 2, a.shape[0] // n_head // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _llama_weight(name, a, cfg):
    if name.endswith("q_proj.weight"):
        return _unpermute_rope(a, cfg.num_attention_heads)
    if name.endswith("k_proj.weight"):
        return _unpermute_rope(a, cfg.num_key_value_heads)
    return a


def _llama3_rope_factors(cfg) -> dict:
    """Llama 3 rope scaling as the per-frequency divisors llama.cpp reads from rope_freqs.weight."""
    import gguf
    rope = _rope(cfg)
    if rope.get("rope_type") != "llama3":
        return {}
    dim, base = _head_dim(cfg), rope.get("rope_theta", 10000.0)
    factor, lo, hi = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old_ctx = rope["original_max_position_embeddings"]
    factors = []
    for i in range(0, dim, 2):
        wavelen = 2 * math.pi * base ** (i / dim)
        if wavelen < old_ctx / hi:
            factors.append(1.0)
        elif wavelen > old_ctx / lo:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return {gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight": np.array(factors, dtype=np.float32)}


ARCHS = {   # by HF config.model_type
    "gpt2": Arch("GPT2", _gpt2_hparams, _gpt2_weight),
    "llama": Arch("LLAMA", _llama_family_hparams, _llama_weight, _llama3_rope_factors),
    "qwen3": Arch("QWEN3", _llama_family_hparams, lambda name, a, cfg: a),   # NEOX rope: HF order as is
}


def write_gguf(model, path: str) -> dict:
    """Write `model` (an HF *ForCausalLM / GPT2LMHeadModel) to `path` as f32 GGUF; returns a summary."""
    import gguf
    cfg = model.config
    arch = ARCHS.get(cfg.model_type)
    if arch is None:
        raise NotImplementedError(f"no GGUF writer for model_type {cfg.model_type!r} (have {', '.join(ARCHS)})")
    gguf_arch = getattr(gguf.MODEL_ARCH, arch.gguf_arch)
    w = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf_arch])
    w.add_block_count(cfg.num_hidden_layers)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("none")
    arch.hparams(w, cfg)
    names = gguf.get_tensor_name_map(gguf_arch, cfg.num_hidden_layers)
    count = 0
    # named_parameters lists a tied LM head once (as the embedding): llama.cpp then reuses token_embd
    for hf_name, p in model.named_parameters():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise NotImplementedError(f"no GGUF tensor name for {hf_name}")
        a = arch.weight(hf_name, p.detach().float().numpy(), cfg)
        w.add_tensor(gguf_name, np.ascontiguousarray(a, dtype=np.float32))
        count += 1
    for gguf_name, a in arch.extra_tensors(cfg).items():
        w.add_tensor(gguf_name, a)
        count += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"gguf_arch": gguf.MODEL_ARCH_NAMES[gguf_arch], "tensors": count}
