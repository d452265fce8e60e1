"""A small model zoo for tests, benchmarks and the demo.

Every factory returns `(model, example_args)` with the model in eval mode, built with a fixed seed
(random weights: nothing is downloaded) and example inputs drawn from their own seeded generator.
HuggingFace `transformers` is imported lazily, only by the factories that need it.
The HF wrappers return one plain tensor (logits or last_hidden_state) so the exported program has a
single output.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- MLP ------------------------------------------------------------------------------------
def mlp(d_in: int = 512, d_hidden: int = 512, d_out: int = 512, n_layers: int = 2, batch: int = 32,
        act: str = "relu", seed: int = 0):
    """nn.Sequential of Linear layers with an activation between them ('relu', 'gelu', 'gelu_tanh', 'tanh')."""
    torch.manual_seed(seed)
    acts = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh"), "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid}
    dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(acts[act]())
    model = nn.Sequential(*layers).eval()
    return model, (torch.randn(batch, d_in, generator=_gen(seed + 1)),)


# ---- hand-written transformer blocks ------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention written out by hand.

    attention: 'sdpa' (F.scaled_dot_product_attention) or 'manual' (matmul, scale, mask, softmax, matmul).
    mask: 'causal' | 'padding' | 'none'. With 'padding' forward() takes the mask: a bool keep-mask
    (B, 1, 1, S) for sdpa, an additive float mask (B, 1, 1, S) (0 or -1e9) for manual.
    scale_op: 'div' (scores / sqrt(d)) or 'mul' (scores * 1/sqrt(d)), manual only.
    heads_op: 'view' (view + transpose) or 'reshape' (reshape + permute).
    """

    def __init__(self, d_model: int, n_heads: int, attention: str = "sdpa", mask: str = "causal",
                 scale_op: str = "div", heads_op: str = "view"):
        super().__init__()
        assert d_model % n_heads == 0
        self.h, self.dh = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.o = nn.Linear(d_model, d_model)
        self.attention, self.mask, self.scale_op, self.heads_op = attention, mask, scale_op, heads_op
        self.dropout = nn.Dropout(0.1)

    def _heads(self, x):
        b, s, _ = x.shape
        if self.heads_op == "view":
            return x.view(b, s, self.h, self.dh).transpose(1, 2)
        return x.reshape(b, s, self.h, self.dh).permute(0, 2, 1, 3)

    def forward(self, x, attn_mask=None):
        b, s, d = x.shape
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        if self.attention == "sdpa":
            if self.mask == "causal":
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1))
            if self.scale_op == "div":
                scores = scores / math.sqrt(self.dh)
            else:
                scores = scores * (1.0 / math.sqrt(self.dh))
            if self.mask == "causal":
                causal = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
                scores = scores.masked_fill(causal, float("-inf"))
            elif self.mask == "padding":
                scores = scores + attn_mask
            p = self.dropout(torch.softmax(scores, dim=-1))
            y = torch.matmul(p, v)
        y = y.transpose(1, 2).contiguous().view(b, s, d)
        return self.o(y)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)); x + mlp(ln2(x)) with GELU ('erf' or 'tanh')."""

    def __init__(self, d_model: int = 64, n_heads: int = 4, d_ff: int | None = None, gelu: str = "erf", **attn):
        super().__init__()
        d_ff = d_ff or 4 * d_model
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, n_heads, **attn)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.act = nn.GELU(approximate="tanh" if gelu == "tanh" else "none")
        self.fc2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, attn_mask=None):
        x = x + self.dropout(self.attn(self.ln1(x), attn_mask))
        return x + self.dropout(self.fc2(self.act(self.fc1(self.ln2(x)))))


def padding_mask(batch: int, seq: int, kind: str, pad: int | None = None) -> torch.Tensor:
    """Element b > 0 of the batch has its last `pad` (default seq // 4) key positions padded.
    kind 'bool': keep-mask (B,1,1,S) True = attend; 'additive': (B,1,1,S) 0 or -1e9."""
    pad = max(1, seq // 4) if pad is None else pad
    keep = torch.ones(batch, 1, 1, seq, dtype=torch.bool)
    if seq > 1:
        keep[1:, ..., seq - pad:] = False
    if kind == "bool":
        return keep
    return torch.zeros(batch, 1, 1, seq).masked_fill(~keep, -1e9)


def transformer_block(d_model: int = 64, n_heads: int = 4, seq: int = 16, batch: int = 1,
                      attention: str = "sdpa", mask: str = "causal", gelu: str = "erf", scale_op: str = "div",
                      heads_op: str = "view", seed: int = 0):
    """One hand-written block. Inputs: x (B, S, D) and, when mask='padding', the attention mask."""
    torch.manual_seed(seed)
    model = Block(d_model, n_heads, gelu=gelu, attention=attention, mask=mask, scale_op=scale_op,
                  heads_op=heads_op).eval()
    x = torch.randn(batch, seq, d_model, generator=_gen(seed + 1))
    if mask == "padding":
        return model, (x, padding_mask(batch, seq, "bool" if attention == "sdpa" else "additive"))
    return model, (x,)


class TinyLM(nn.Module):
    """nn.Embedding (tokens + learned positions) -> blocks -> LayerNorm -> LM head."""

    def __init__(self, vocab: int, seq: int, d_model: int, n_heads: int, n_layer: int, **block):
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, **block) for _ in range(n_layer))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, input_ids):
        pos = torch.arange(input_ids.shape[1])
        x = self.tok(input_ids) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def tiny_lm(vocab: int = 256, seq: int = 16, d_model: int = 64, n_heads: int = 4, n_layer: int = 2,
            batch: int = 1, attention: str = "manual", gelu: str = "tanh", seed: int = 0):
    """A small causal LM of hand-written blocks (embedding, manual or SDPA attention, GELU, LM head)."""
    torch.manual_seed(seed)
    model = TinyLM(vocab, seq, d_model, n_heads, n_layer, attention=attention, mask="causal", gelu=gelu).eval()
    return model, (torch.randint(0, vocab, (batch, seq), generator=_gen(seed + 1)),)


# ---- HuggingFace models (random weights from configs) ---------------------------------------
class _HFOutput(nn.Module):
    """Wraps an HF model so forward returns one plain tensor (attribute `field` of the output)."""

    def __init__(self, model: nn.Module, field: str, **call_kwargs):
        super().__init__()
        self.model, self.field, self.call_kwargs = model, field, call_kwargs

    def forward(self, input_ids, attention_mask=None):
        kw = dict(self.call_kwargs)
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        return getattr(self.model(input_ids, **kw), self.field)


def _build_hf(cls, cfg, seed: int) -> nn.Module:
    """Instantiate an HF model without its (slow, torch.normal_) weight init, then fill every parameter
    from a seeded generator with uniform noise of std 0.02 (LayerNorm weights: 1 + noise of std 0.05)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:                 # older transformers
        from transformers.modeling_utils import no_init_weights
    with no_init_weights():
        model = cls(cfg)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()             # skipped with the init above; real GPT-2 shares wte and lm_head
    gen = _gen(seed)
    norm_weights = {id(m.weight) for m in model.modules()
                    if (isinstance(m, nn.LayerNorm) or "norm" in type(m).__name__.lower())
                    and getattr(m, "weight", None) is not None}
    a = 0.02 * math.sqrt(3.0)          # uniform(-a, a) has std 0.02
    with torch.no_grad():
        for _, p in model.named_parameters():
            if id(p) in norm_weights:
                p.uniform_(1 - 2.5 * a, 1 + 2.5 * a, generator=gen)
            else:
                p.uniform_(-a, a, generator=gen)
    return model.eval()


def _gpt2_config(n_layer, n_embd, n_head, vocab_size, n_positions):
    from transformers import GPT2Config
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size,
                      n_positions=n_positions, use_cache=False, attn_implementation="sdpa",
                      bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)


def gpt2_body(n_layer: int = 2, seq: int = 64, batch: int = 1, n_embd: int = 768, n_head: int = 12,
              vocab_size: int = 50257, n_positions: int = 1024, seed: int = 0):
    """HF GPT2Model (GPT-2 small dims by default) returning last_hidden_state (B, S, n_embd)."""
    from transformers import GPT2Model
    model = _build_hf(GPT2Model, _gpt2_config(n_layer, n_embd, n_head, vocab_size, n_positions), seed)
    wrapped = _HFOutput(model, "last_hidden_state", use_cache=False).eval()
    return wrapped, (torch.randint(0, vocab_size, (batch, seq), generator=_gen(seed + 1)),)


def gpt2_lm(n_layer: int = 12, seq: int = 128, batch: int = 1, n_embd: int = 768, n_head: int = 12,
            vocab_size: int = 50257, n_positions: int = 1024, seed: int = 0):
    """HF GPT2LMHeadModel (GPT-2 small dims by default) returning logits (B, S, vocab)."""
    from transformers import GPT2LMHeadModel
    model = _build_hf(GPT2LMHeadModel, _gpt2_config(n_layer, n_embd, n_head, vocab_size, n_positions), seed)
    wrapped = _HFOutput(model, "logits", use_cache=False).eval()
    return wrapped, (torch.randint(0, vocab_size, (batch, seq), generator=_gen(seed + 1)),)


def bert(n_layer: int = 2, seq: int = 16, batch: int = 2, hidden: int = 128, n_heads: int = 4,
         intermediate: int = 512, vocab_size: int = 1000, pad: int | None = None, seed: int = 0):
    """HF BertModel (small config) called with input_ids and a padding attention_mask (B, S) int64:
    batch element b > 0 has its last `pad` (default seq // 4) tokens padded. Returns last_hidden_state."""
    from transformers import BertConfig, BertModel
    cfg = BertConfig(num_hidden_layers=n_layer, hidden_size=hidden, num_attention_heads=n_heads,
                     intermediate_size=intermediate, vocab_size=vocab_size, max_position_embeddings=512,
                     attn_implementation="sdpa")
    model = _build_hf(lambda c: BertModel(c, add_pooling_layer=False), cfg, seed)
    wrapped = _HFOutput(model, "last_hidden_state").eval()
    ids = torch.randint(0, vocab_size, (batch, seq), generator=_gen(seed + 1))
    mask = torch.ones(batch, seq, dtype=torch.long)
    pad = max(1, seq // 4) if pad is None else pad
    if seq > 1:
        mask[1:, seq - pad:] = 0
    return wrapped, (ids, mask)


# ---- Llama-family causal LMs (Llama 3, Qwen2, Qwen3, Mistral) -------------------------------
LLAMA_FAMILY = {
    # family: (config class, model class, extra config of that family)
    "llama": ("LlamaConfig", "LlamaForCausalLM",
              dict(rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=8)),
}


def causal_lm(family: str = "llama", n_layer: int = 2, seq: int = 16, batch: int = 1, hidden: int = 64,
              intermediate: int = 128, n_heads: int = 4, n_kv_heads: int = 2, head_dim: int | None = None,
              vocab_size: int = 256, tie_word_embeddings: bool = False, max_positions: int = 256, seed: int = 0,
              **config):
    """A small HF causal LM of the Llama family, built from its config class with random weights,
    returning logits (B, S, vocab) and called with use_cache=False. family: 'llama' (Llama 3 rope
    scaling), 'qwen2', 'qwen3' (q/k RMSNorm per head) or 'mistral' (sliding window 8). GQA ratio =
    n_heads / n_kv_heads; head_dim defaults to hidden / n_heads; `config` overrides config fields."""
    import transformers
    cfg_name, cls_name, extra = LLAMA_FAMILY[family]
    fields = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                  num_hidden_layers=n_layer, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=tie_word_embeddings,
                  use_cache=False, attn_implementation="sdpa", bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if head_dim is not None:
        fields["head_dim"] = head_dim
    fields.update(extra)
    fields.update(config)
    cfg = getattr(transformers, cfg_name)(**fields)
    model = _build_hf(getattr(transformers, cls_name), cfg, seed)
    wrapped = _HFOutput(model, "logits", use_cache=False).eval()
    return wrapped, (torch.randint(0, vocab_size, (batch, seq), generator=_gen(seed + 1)),)


def llama_lm(**kw):
    """HF LlamaForCausalLM (small config, Llama 3 rope scaling): see causal_lm."""
    return causal_lm("llama", **kw)


def qwen2_lm(**kw):
    """HF Qwen2ForCausalLM (small config): see causal_lm."""
    return causal_lm("qwen2", **kw)


def qwen3_lm(**kw):
    """HF Qwen3ForCausalLM (small config, head_dim 16 unless given): see causal_lm."""
    kw.setdefault("head_dim", 16)
    return causal_lm("qwen3", **kw)


def mistral_lm(**kw):
    """HF MistralForCausalLM (small config, sliding window 8): see causal_lm."""
    return causal_lm("mistral", **kw)


__all__ = ["mlp", "transformer_block", "tiny_lm", "gpt2_body", "gpt2_lm", "bert", "padding_mask",
           "Block", "Attention", "TinyLM", "causal_lm", "llama_lm", "qwen2_lm", "qwen3_lm", "mistral_lm",
           "LLAMA_FAMILY"]


# ---- torch.nn attention and transformers ------------------------------------------------------
class _MHA(nn.Module):
    """nn.MultiheadAttention called as self-attention (or cross-attention on `memory`); returns the output.
    mask: 'none' | 'causal' (a float attn_mask) | 'bool' (a bool attn_mask) | 'padding' (key_padding_mask) |
    'causal+padding' | 'bool+padding' (both masks)."""

    def __init__(self, embed: int, heads: int, mask: str, need_weights: bool, seq: int, kdim: int | None = None):
        super().__init__()
        self.attn = nn.MultiheadAttention(embed, heads, batch_first=True, kdim=kdim, vdim=kdim)
        self.mask, self.need_weights, self.cross = mask, need_weights, kdim is not None
        causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x, *rest):
        """rest: the memory (cross-attention), then the key_padding_mask (mask='padding')."""
        kv = rest[0] if self.cross else x
        key_padding_mask = rest[-1] if self.mask.endswith("padding") else None
        kw = {}
        if self.mask.startswith("causal"):
            kw["attn_mask"] = torch.zeros(self.causal.shape).masked_fill(self.causal, float("-inf"))
        elif self.mask.startswith("bool"):
            kw["attn_mask"] = self.causal
        return self.attn(x, kv, kv, key_padding_mask=key_padding_mask, need_weights=self.need_weights, **kw)[0]


def multihead_attention(embed: int = 64, heads: int = 4, seq: int = 16, batch: int = 2, mask: str = "none",
                        need_weights: bool = False, cross: bool = False, seed: int = 0):
    """nn.MultiheadAttention (batch_first) as self- or cross-attention (cross: memory of 2*seq-3 rows with
    their own kdim), masks as in _MHA; mask='padding' (or '...+padding') passes a bool key_padding_mask
    (True = padded)."""
    torch.manual_seed(seed)
    model = _MHA(embed, heads, mask, need_weights, seq, kdim=embed // 2 if cross else None).eval()
    g = _gen(seed + 1)
    x = torch.randn(batch, seq, embed, generator=g)
    args = [x]
    if cross:
        args.append(torch.randn(batch, 2 * seq - 3, embed // 2, generator=g))
    if mask.endswith("padding"):
        args.append(~padding_mask(batch, args[-1].shape[1], "bool").reshape(batch, -1))
    return model, tuple(args)


class _Transformer(nn.Module):
    """nn.Transformer, its encoder or its decoder alone (batch_first), with a causal target mask."""

    def __init__(self, part: str, d_model: int, nhead: int, layers: int, d_ff: int, activation: str, norm_first: bool):
        super().__init__()
        self.part = part
        self.net = nn.Transformer(d_model, nhead, layers, layers, d_ff, dropout=0.1, activation=activation,
                                  batch_first=True, norm_first=norm_first)

    def forward(self, src, tgt=None):
        if self.part == "encoder":
            return self.net.encoder(src)
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1])
        if self.part == "decoder":
            return self.net.decoder(tgt, src, tgt_mask=mask, tgt_is_causal=True)
        return self.net(src, tgt, tgt_mask=mask, tgt_is_causal=True)


def transformer(part: str = "full", d_model: int = 64, nhead: int = 4, layers: int = 2, d_ff: int = 128,
                seq: int = 12, tgt_seq: int = 9, batch: int = 2, activation: str = "relu", norm_first: bool = False,
                seed: int = 0):
    """torch.nn.Transformer (random weights): part 'encoder' (src), 'decoder' (memory, tgt) or 'full'
    (src, tgt), causal target mask."""
    torch.manual_seed(seed)
    model = _Transformer(part, d_model, nhead, layers, d_ff, activation, norm_first).eval()
    g = _gen(seed + 1)
    src = torch.randn(batch, seq, d_model, generator=g)
    if part == "encoder":
        return model, (src,)
    return model, (src, torch.randn(batch, tgt_seq, d_model, generator=g))


def clip_text(n_layer: int = 2, seq: int = 16, batch: int = 2, hidden: int = 64, n_heads: int = 4,
              intermediate: int = 128, vocab_size: int = 1000, output: str = "pooler_output", seed: int = 0):
    """HF CLIPTextModel (small config, random weights, causal mask and quick-GELU) returning its pooled
    output (the hidden state at each sequence's end-of-text token: an argmax over the ids) or
    last_hidden_state."""
    from transformers import CLIPTextConfig, CLIPTextModel
    cfg = CLIPTextConfig(num_hidden_layers=n_layer, hidden_size=hidden, num_attention_heads=n_heads,
                         intermediate_size=intermediate, vocab_size=vocab_size, max_position_embeddings=77,
                         attn_implementation="sdpa", eos_token_id=vocab_size - 1, bos_token_id=vocab_size - 2,
                         pad_token_id=1)
    model = _build_hf(CLIPTextModel, cfg, seed)
    wrapped = _HFOutput(model, output).eval()
    ids = torch.randint(0, vocab_size - 2, (batch, seq), generator=_gen(seed + 1))
    ids[:, -1 - torch.arange(batch) % max(seq - 1, 1)] = vocab_size - 1    # end-of-text at different places
    return wrapped, (ids,)


# ---- convolutional nets ---------------------------------------------------------------------
class _ConvBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1, groups=1, act=nn.ReLU):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = act()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ConvNet(nn.Module):
    """A small image net touching every convolutional family: conv + batch norm + ReLU stem, max pool,
    a residual block, a depthwise-separable block (hardswish), a strided conv, group norm, upsample
    (nearest and bilinear) with reflection pad, average and adaptive pooling, a linear head."""

    def __init__(self, c: int = 8, classes: int = 10):
        super().__init__()
        self.stem = _ConvBlock(3, c)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.res1, self.res2 = _ConvBlock(c, c), _ConvBlock(c, c)
        self.dw = _ConvBlock(c, c, groups=c, act=nn.Hardswish)
        self.pw = nn.Conv2d(c, 2 * c, 1)
        self.down = nn.Conv2d(2 * c, 2 * c, 3, 2, 1)
        self.gn = nn.GroupNorm(4, 2 * c)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad = nn.ReflectionPad2d(1)
        self.smooth = nn.Conv2d(2 * c, 2 * c, 3)
        self.avg = nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        self.head = nn.Linear(2 * c, classes)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = torch.relu(x + self.res2(self.res1(x)))
        x = self.pw(self.dw(x))
        y = F.silu(self.gn(self.down(x)))
        x = x + self.smooth(self.pad(self.up(y)))
        x = F.interpolate(self.avg(x), scale_factor=1.5, mode="bilinear", align_corners=False)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def convnet(c: int = 8, classes: int = 10, size: int = 32, batch: int = 2, seed: int = 0):
    """ConvNet with random weights and batch-norm statistics; input (B, 3, size, size)."""
    torch.manual_seed(seed)
    model = ConvNet(c, classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval(), (torch.randn(batch, 3, size, size, generator=_gen(seed + 1)),)


__all__ += ["multihead_attention", "transformer", "clip_text", "convnet", "ConvNet"]


# ---- HuggingFace vision models (random weights from configs) ---------------------------------
class _HFVision(nn.Module):
    """Wraps an HF vision model so forward(pixel_values) returns one plain tensor (attribute `field`)."""

    def __init__(self, model: nn.Module, field: str):
        super().__init__()
        self.model, self.field = model, field

    def forward(self, pixel_values):
        return getattr(self.model(pixel_values=pixel_values), self.field)


def _hf_vision(config_cls: str, base_cls: str, head_cls: str, classes: int | None, config: dict, batch: int,
               size: int, seed: int):
    """The head model with `classes` labels returning logits, or the base model (classes None) returning
    last_hidden_state; batch-norm running statistics are random too (else folding them is trivial)."""
    import transformers
    cfg = getattr(transformers, config_cls)(**config, **({"num_labels": classes} if classes else {}))
    model = _build_hf(getattr(transformers, head_cls if classes else base_cls), cfg, seed)
    gen = _gen(seed + 2)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)
    wrapped = _HFVision(model, "logits" if classes else "last_hidden_state").eval()
    return wrapped, (torch.randn(batch, 3, size, size, generator=_gen(seed + 1)),)


# ResNet-50 (HF ResNetConfig's defaults, spelled out), ViT-B/16 at 224x224.
RESNET50 = dict(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3], layer_type="bottleneck")
VIT_B16 = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16)


def resnet(batch: int = 1, size: int = 64, classes: int | None = 10, seed: int = 0, **config):
    """HF ResNet (ResNetForImageClassification, or ResNetModel when classes is None); the default config is
    a small bottleneck net, resnet(size=224, classes=1000, **RESNET50) is ResNet-50."""
    config = {**dict(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 2, 1],
                     layer_type="bottleneck"), **config}
    return _hf_vision("ResNetConfig", "ResNetModel", "ResNetForImageClassification", classes, config, batch, size, seed)


def vit(batch: int = 1, size: int = 32, classes: int | None = None, seed: int = 0, **config):
    """HF ViTModel (last_hidden_state, or ViTForImageClassification's logits); the default config is a
    2-layer ViT with 8x8 patches, vit(size=224, **VIT_B16) is ViT-B/16."""
    config = {**dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, patch_size=8,
                     attn_implementation="sdpa"), **config, "image_size": size}
    return _hf_vision("ViTConfig", "ViTModel", "ViTForImageClassification", classes, config, batch, size, seed)


def beit(batch: int = 1, size: int = 32, classes: int | None = None, seed: int = 0, **config):
    """HF BeitModel: a ViT whose attention adds a learned relative position bias per head, its index
    table built in the graph by in-place writes into a contiguous() copy."""
    config = {**dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, patch_size=8,
                     use_relative_position_bias=True), **config, "image_size": size}
    return _hf_vision("BeitConfig", "BeitModel", "BeitForImageClassification", classes, config, batch, size, seed)


def convnext(batch: int = 1, size: int = 64, classes: int | None = 10, seed: int = 0, **config):
    """HF ConvNeXt (depthwise 7x7 convolutions, layer norm over channels, layer scale), small by default."""
    config = {**dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 2, 1]), **config}
    return _hf_vision("ConvNextConfig", "ConvNextModel", "ConvNextForImageClassification", classes, config, batch,
                      size, seed)


def mobilenet_v2(batch: int = 1, size: int = 64, classes: int | None = 10, seed: int = 0, **config):
    """HF MobileNetV2 (inverted residuals, depthwise convolutions, ReLU6, TF "same" padding), width 0.35."""
    config = {**dict(depth_multiplier=0.35), **config, "image_size": size}
    return _hf_vision("MobileNetV2Config", "MobileNetV2Model", "MobileNetV2ForImageClassification", classes, config,
                      batch, size, seed)


def efficientnet(batch: int = 1, size: int = 64, classes: int | None = 10, seed: int = 0, **config):
    """HF EfficientNet (depthwise convolutions, SiLU, squeeze-and-excitation), width and depth 0.25."""
    config = {**dict(width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320), **config, "image_size": size}
    return _hf_vision("EfficientNetConfig", "EfficientNetModel", "EfficientNetForImageClassification", classes,
                      config, batch, size, seed)


class _Encoder(nn.Module):
    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_features):
        return self.encoder(input_features).last_hidden_state


def whisper_encoder(n_layer: int = 2, d_model: int = 64, n_heads: int = 4, mel_bins: int = 16, frames: int = 64,
                    batch: int = 1, seed: int = 0):
    """HF Whisper's encoder (conv1d front end: two convolutions with GELU, the second strided, then the
    transformer) on (B, mel_bins, frames) features; returns last_hidden_state."""
    from transformers import WhisperConfig, WhisperModel
    cfg = WhisperConfig(d_model=d_model, encoder_layers=n_layer, encoder_attention_heads=n_heads,
                        encoder_ffn_dim=2 * d_model, num_mel_bins=mel_bins, max_source_positions=frames // 2,
                        decoder_layers=1, decoder_attention_heads=n_heads, decoder_ffn_dim=d_model)
    encoder = _build_hf(WhisperModel, cfg, seed).get_encoder()
    return _Encoder(encoder).eval(), (torch.randn(batch, mel_bins, frames, generator=_gen(seed + 1)),)


class UNet(nn.Module):
    """A small UNet: two conv + batch norm + ReLU stages down (max pooling), a bottleneck, then up through a
    transposed convolution and a bilinear upsampling, each joined to its skip connection by concatenation."""

    def __init__(self, c: int = 8, out: int = 2):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),  # noqa: E731
                                           nn.ReLU())
        self.d1, self.d2, self.mid = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
        self.up2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2)
        self.u2 = block(4 * c, 2 * c)
        self.u1 = block(3 * c, c)
        self.head = nn.Conv2d(c, out, 1)

    def forward(self, x):
        s1 = self.d1(x)
        s2 = self.d2(F.max_pool2d(s1, 2))
        y = self.mid(F.max_pool2d(s2, 2))
        y = self.u2(torch.cat([self.up2(y), s2], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(self.u1(torch.cat([y, s1], dim=1)))


def unet(c: int = 8, size: int = 32, batch: int = 1, seed: int = 0):
    """UNet with random weights and batch-norm statistics; input (B, 3, size, size), size a multiple of 4."""
    torch.manual_seed(seed)
    model = UNet(c)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval(), (torch.randn(batch, 3, size, size, generator=_gen(seed + 1)),)


def resnet50(batch: int = 1, size: int = 224, seed: int = 0):
    """ResNet-50 (ResNetForImageClassification, 1000 classes)."""
    return resnet(batch=batch, size=size, classes=1000, seed=seed, **RESNET50)


def vit_b16(batch: int = 1, size: int = 224, seed: int = 0):
    """ViT-B/16 (ViTModel, last_hidden_state)."""
    return vit(batch=batch, size=size, seed=seed, **VIT_B16)


__all__ += ["resnet", "vit", "convnext", "mobilenet_v2", "efficientnet", "whisper_encoder", "resnet50", "vit_b16",
            "RESNET50", "VIT_B16", "unet", "UNet"]
