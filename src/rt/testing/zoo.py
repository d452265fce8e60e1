"""HF models of the test zoo as users call them: the model class itself, built from its config class
(small, random weights, nothing downloaded), and the keyword arguments of its call. Encoders (RoBERTa,
XLM-RoBERTa, DeBERTa-v2, MobileBERT) take token ids and a padding mask, encoder-decoders (BART, Whisper,
T5) also the decoder's ids, GPT-J and Falcon (multi-query: one K/V head broadcast in SDPA) their ids; a model that would return a cache is called with use_cache=False."""
from __future__ import annotations

import torch

from .models import _build_hf, _gen

_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64)
_SEQ2SEQ = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=64, decoder_ffn_dim=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                decoder_start_token_id=2)

# family: (config class, model class, config, the call's tensor arguments, use_cache=False in the call)
FAMILIES = {
    "roberta": ("RobertaConfig", "RobertaModel", dict(_ENCODER, pad_token_id=1), ("input_ids", "attention_mask"),
                False),
    "xlm_roberta": ("XLMRobertaConfig", "XLMRobertaModel", dict(_ENCODER, pad_token_id=1),
                    ("input_ids", "attention_mask"), False),
    "deberta_v2": ("DebertaV2Config", "DebertaV2Model",
                   dict(_ENCODER, relative_attention=True, position_buckets=16, max_relative_positions=32,
                        pos_att_type=["p2c", "c2p"], position_biased_input=False),
                   ("input_ids", "attention_mask"), False),
    "mobilebert": ("MobileBertConfig", "MobileBertModel",
                   dict(_ENCODER, embedding_size=16, intra_bottleneck_size=16, num_feedforward_networks=2),
                   ("input_ids", "attention_mask"), False),
    "bart": ("BartConfig", "BartModel", dict(_SEQ2SEQ, max_position_embeddings=64),
             ("input_ids", "attention_mask", "decoder_input_ids"), True),
    "whisper": ("WhisperConfig", "WhisperModel",
                dict(_SEQ2SEQ, num_mel_bins=16, max_source_positions=16, max_target_positions=32, pad_token_id=0,
                     bos_token_id=0, eos_token_id=0, decoder_start_token_id=0),
                ("input_features", "decoder_input_ids"), True),
    "t5": ("T5Config", "T5Model", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, pad_token_id=0,
                                       decoder_start_token_id=0),
           ("input_ids", "attention_mask", "decoder_input_ids"), True),
    "falcon": ("FalconConfig", "FalconForCausalLM", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                         bos_token_id=0, eos_token_id=0),
               ("input_ids",), True),
    "gptj": ("GPTJConfig", "GPTJForCausalLM",
             dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64, bos_token_id=0, eos_token_id=0),
             ("input_ids",), True),
}
_LM = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
_IMAGE = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)
_AUDIO = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16, 16),
              conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
# More families as their classes come, one or two of each kind of block they add (no test names them
# otherwise): parallel attention/MLP (Phi-3's fused qkv, GPT-NeoX), logit soft-capping and sliding
# windows (Gemma2), ALiBi (BLOOM, MPT), T5's relative buckets in an encoder, shifted windows (Swin),
# efficient attention over reduced keys (SegFormer), attention biases from a table (LeViT), speech
# front ends of conv1d stacks (Wav2Vec2, Speech2Text).
FAMILIES.update({
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_LM, num_key_value_heads=2, pad_token_id=0), ("input_ids",), True),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(_LM, num_key_value_heads=2, head_dim=8, attn_implementation="eager"),
               ("input_ids",), True),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(_LM), ("input_ids",), True),
    "bloom": ("BloomConfig", "BloomForCausalLM", dict(hidden_size=32, n_layer=2, n_head=4, attn_implementation="eager"),
              ("input_ids", "attention_mask"), True),
    "mpt": ("MptConfig", "MptForCausalLM", dict(d_model=32, n_layers=2, n_heads=4, max_seq_len=64,
                                                attn_implementation="eager"), ("input_ids",), True),
    "t5_encoder": ("T5Config", "T5EncoderModel", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
                   ("input_ids", "attention_mask"), False),
    "swin": ("SwinConfig", "SwinModel", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                             window_size=4), ("pixel_values",), False),
    "segformer": ("SegformerConfig", "SegformerModel",
                  dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                       num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2]),
                  ("pixel_values",), False),
    "levit": ("LevitConfig", "LevitModel",
              dict(image_size=32, hidden_sizes=[32, 48], num_attention_heads=[2, 3], depths=[1, 1], key_dim=[8, 8],
                   mlp_ratio=[2, 2], attention_ratio=[2, 2], down_ops=[["Subsample", 8, 2, 4, 2, 2]],
                   attn_implementation="eager"), ("pixel_values",), False),
    "deit": ("DeiTConfig", "DeiTModel", dict(_IMAGE), ("pixel_values",), False),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model", dict(_AUDIO), ("input_values",), False),
    "speech2text": ("Speech2TextConfig", "Speech2TextModel",
                    dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                         encoder_ffn_dim=64, decoder_ffn_dim=64, input_feat_per_channel=16, conv_channels=32,
                         max_source_positions=64, max_target_positions=64, pad_token_id=1, decoder_start_token_id=2,
                         attn_implementation="eager"),
                    ("input_features", "decoder_input_ids"), True),
    # Mixture of experts, through HF's batched_mm experts (each token's chosen experts' weights gathered,
    # then batched products): its default grouped_mm routes by a histogram (aten.histc), refused.
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(_LM, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                     experts_implementation="batched_mm"), ("input_ids",), True),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                  dict(_LM, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                       shared_expert_intermediate_size=32, experts_implementation="batched_mm"), ("input_ids",), True),
})
VOCAB = 99


def _inputs(names, batch: int, seq: int, cfg, seed: int) -> dict[str, torch.Tensor]:
    g = _gen(seed + 1)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1:, seq - max(1, seq // 4):] = 0                   # element b > 0 padded at its end
    made = {"input_ids": ids, "attention_mask": mask,
            "decoder_input_ids": torch.randint(3, VOCAB, (batch, seq - 1), generator=g)}
    if "input_features" in names and hasattr(cfg, "num_mel_bins"):   # Whisper's convolutions halve the frames
        made["input_features"] = torch.randn(batch, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
    elif "input_features" in names:                        # Speech2Text: frames x features per frame
        made["input_features"] = torch.randn(batch, 4 * seq, cfg.input_feat_per_channel, generator=g)
    if "pixel_values" in names:
        made["pixel_values"] = torch.randn(batch, 3, 32, 32, generator=g)
    if "input_values" in names:                            # raw audio, 800 samples
        made["input_values"] = torch.randn(batch, 800, generator=g)
    return {n: made[n] for n in names}


def hf_model(family: str, batch: int = 2, seq: int = 8, inputs: tuple[str, ...] | None = None, seed: int = 0,
             **config):
    """(model, kwargs of its call) for a family of FAMILIES; `inputs` overrides the call's tensor
    arguments (e.g. BART with only input_ids shifts them into its decoder's), `config` the config fields."""
    import transformers
    cfg_name, cls_name, base, names, no_cache = FAMILIES[family]
    cfg = getattr(transformers, cfg_name)(**{"vocab_size": VOCAB, **base, **config})
    model = _build_hf(getattr(transformers, cls_name), cfg, seed)
    kwargs: dict = _inputs(inputs or names, batch, seq, cfg, seed)
    if no_cache:
        kwargs["use_cache"] = False
    return model, kwargs


__all__ = ["FAMILIES", "hf_model"]
