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
VOCAB = 99


def _inputs(names, batch: int, seq: int, cfg, seed: int) -> dict[str, torch.Tensor]:
    g = _gen(seed + 1)
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1:, seq - max(1, seq // 4):] = 0                   # element b > 0 padded at its end
    made = {"input_ids": ids, "attention_mask": mask,
            "decoder_input_ids": torch.randint(3, VOCAB, (batch, seq - 1), generator=g)}
    if "input_features" in names:                           # the encoder's convolutions halve the frames
        made["input_features"] = torch.randn(batch, cfg.num_mel_bins, 2 * cfg.max_source_positions, generator=g)
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
