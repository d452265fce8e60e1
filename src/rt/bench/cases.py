"""The benchmark cases: a name, how to build (model, example_args) inside a worker, and whether --quick runs it.

A case with `decode` set times text generation instead of one call (decode.py): its factory's example input
is the prompt, prefilled before `decode.steps` greedy decode steps of one token each. With
`decode.quantized` it also runs the quantized-weight engines (QUANT_ENGINES).

Models come from `rt.testing.models` (random weights from configs; nothing is downloaded). The builder is
a (factory name, kwargs) pair so the parent never imports torch; the worker calls it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

SGEMM_N = 2048
MODEL_ENGINES = ("rt", "eager", "compile", "ort")
DECODE_ENGINES = ("rt", "eager", "llama.cpp")
# Quantized weights (issue 21): engine "<base>-<format>" is decode engine <base> with its weights in <format>
# (rt: rt.compile_generator(weights=...), "-gptq" rounded on calibration prompts (decode.CALIBRATION_*);
# llama.cpp: its f32 GGUF through its own quantizer, as `llama-quantize model.gguf q8_0` does;
# ort-genai: onnxruntime-genai's model builder, `-p int4`).
WEIGHT_FORMATS = {"rt": ("bf16", "int8", "int4", "int8-gptq", "int4-gptq", "int4nl", "int4nl:rot",
                         "int4:best"),
                  "llama.cpp": ("q8_0", "q4_0"), "ort-genai": ("int4",)}
VARIANTS = {f"{base}-{fmt}": (base, fmt) for base, fmts in WEIGHT_FORMATS.items() for fmt in fmts}
QUANT_ENGINES = tuple(VARIANTS)


@dataclass(frozen=True)
class SharedCoreVariant:
    """A model engine set up as it would be on cores it shares with other work (issue 22, --contend)."""
    base: str
    threads: int | None = None                          # None: --threads
    env: dict = field(default_factory=dict)             # the worker's environment, on top of worker_env
    options: dict = field(default_factory=dict)         # the base engine's prepare options


SHARED_CORE_VARIANTS = {
    "rt-1t": SharedCoreVariant("rt", threads=1),
    # rt without its thread count following the free cores (csrc/threads.c)
    "rt-fixed": SharedCoreVariant("rt", env={"RT_ADAPT_THREADS": "0"}),
    # and also with libgomp's own spinning before its threads sleep (~3 ms; rt/openmp_wait.py bounds it)
    "rt-before": SharedCoreVariant("rt", env={"RT_ADAPT_THREADS": "0", "GOMP_SPINCOUNT": "300000"}),
    "ort-nospin": SharedCoreVariant("ort", options={"spinning": False}),
}
# what --engines may name, in round order; the shared-core variants run only when named
ENGINES = tuple(dict.fromkeys(MODEL_ENGINES + tuple(SHARED_CORE_VARIANTS) + DECODE_ENGINES + QUANT_ENGINES))
DEFAULT_ENGINES = tuple(e for e in ENGINES if e not in SHARED_CORE_VARIANTS)
# whose time "rt x" divides by: a quantized baseline's by rt's of the same weight width, the rest by rt's
RT_PEER = {"llama.cpp-q8_0": "rt-int8", "llama.cpp-q4_0": "rt-int4", "ort-genai-int4": "rt-int4"}


def engine_spec(engine: str) -> tuple[str, str | None]:
    """(base engine, weight format or None for fp32) of an engine name: "rt-int4" -> ("rt", "int4")."""
    return VARIANTS.get(engine, (engine, None))


def shared_core_variant(engine: str) -> SharedCoreVariant:
    """How a model engine is set up: its variant, or the engine itself with no changes."""
    return SHARED_CORE_VARIANTS.get(engine, SharedCoreVariant(engine))


def rt_peer(engine: str) -> str:
    """The rt engine that `engine`'s "rt x" is taken against (an rt engine is its own)."""
    return engine if engine_spec(engine)[0] == "rt" else RT_PEER.get(engine, "rt")


@dataclass(frozen=True)
class Decode:
    steps: int = 32                   # decode steps timed per generation, after the prompt's prefill
    quantized: bool = False           # also the quantized-weight engines (QUANT_ENGINES)


@dataclass(frozen=True)
class Case:
    name: str
    factory: str                      # function name in rt.testing.models, or "sgemm"
    kwargs: dict = field(default_factory=dict)
    quick: bool = False
    note: str = ""
    rt_options: dict = field(default_factory=dict)     # extra rt.compile arguments (e.g. dynamic=)
    decode: Decode | None = None
    smoke: bool = False               # a check of the harness, not a benchmark: only run when named

    @property
    def is_sgemm(self) -> bool:
        return self.factory == "sgemm"

    @property
    def kind(self) -> str:
        return "sgemm" if self.is_sgemm else "decode" if self.decode else "model"

    @property
    def engines(self) -> tuple[str, ...]:
        if self.decode:
            return DECODE_ENGINES + (QUANT_ENGINES if self.decode.quantized else ())
        return {"sgemm": ("numpy",), "model": MODEL_ENGINES + tuple(SHARED_CORE_VARIANTS)}[self.kind]


# Llama-family models shaped like SmolLM2-135M and Qwen3-0.6B (random weights, tied embeddings).
_SMOLLM2_LAYER = dict(hidden=576, intermediate=1536, n_heads=9, n_kv_heads=3)
_SMOLLM2 = dict(_SMOLLM2_LAYER, n_layer=30, vocab_size=49152, tie_word_embeddings=True, max_positions=2048)
_QWEN3_0P6B = dict(hidden=1024, intermediate=3072, n_layer=28, n_heads=16, n_kv_heads=8, head_dim=128,
                   vocab_size=151936, tie_word_embeddings=True, max_positions=2048)

# BERT at BERT-base widths (the factory's default config is a tiny one).
_BERT_BASE = dict(hidden=768, n_heads=12, intermediate=3072, vocab_size=30522)

CASES: list[Case] = [
    Case("sgemm_2048", "sgemm", {"n": SGEMM_N}, quick=True,
         note="numpy float32 matmul 2048^3 (numpy's own OpenBLAS): the machine's BLAS GFLOP/s"),
    Case("mlp_tiny_64_b1", "mlp", dict(d_in=64, d_hidden=64, d_out=64, n_layers=2, batch=1), quick=True),
    Case("mlp_512_b32", "mlp", dict(d_in=512, d_hidden=512, d_out=512, n_layers=2, batch=32), quick=True),
    Case("block_d256_s128", "transformer_block", dict(d_model=256, n_heads=4, seq=128), quick=True),
    Case("block_d512_s256", "transformer_block", dict(d_model=512, n_heads=8, seq=256)),
    Case("block_d768_s512", "transformer_block", dict(d_model=768, n_heads=12, seq=512)),
    Case("gpt2_body_2l_s16", "gpt2_body", dict(n_layer=2, seq=16)),
    Case("gpt2_body_2l_s64", "gpt2_body", dict(n_layer=2, seq=64), quick=True),
    Case("gpt2_body_2l_s256", "gpt2_body", dict(n_layer=2, seq=256)),
    Case("gpt2_lm_12l_s1", "gpt2_lm", dict(n_layer=12, seq=1)),
    Case("gpt2_lm_12l_s128", "gpt2_lm", dict(n_layer=12, seq=128)),
    Case("gpt2_lm_12l_s128_dynamic", "gpt2_lm", dict(n_layer=12, seq=128),
         rt_options=dict(dynamic={"input_ids": {1: (1, 1024)}}),
         note="rt compiled once for every length 1..1024, called at 128 (the others as gpt2_lm_12l_s128)"),
    Case("gpt2_lm_12l_s512", "gpt2_lm", dict(n_layer=12, seq=512)),
    Case("bert_2l_b2_s128_pad", "bert", dict(n_layer=2, seq=128, batch=2, **_BERT_BASE),
         note="BERT-base widths, 2 layers; batch element 1 has its last 32 tokens padded"),
    Case("llama_body_2l_s128", "llama_lm", dict(n_layer=2, seq=128, **_SMOLLM2_LAYER, vocab_size=1024),
         note="2 Llama layers at SmolLM2-135M widths, small vocabulary"),
    Case("smollm2_135m_s1", "llama_lm", dict(seq=1, **_SMOLLM2), note="SmolLM2-135M-shaped Llama, no cache"),
    Case("smollm2_135m_s128", "llama_lm", dict(seq=128, **_SMOLLM2)),
    Case("qwen3_0p6b_s1", "qwen3_lm", dict(seq=1, **_QWEN3_0P6B), note="Qwen3-0.6B-shaped, no cache"),
    Case("qwen3_0p6b_s128", "qwen3_lm", dict(seq=128, **_QWEN3_0P6B)),
    # vision (issue 17): convolutions on oneDNN in NHWC, batch norms folded
    Case("resnet50_b1_224", "resnet50", dict(batch=1), note="HF ResNet-50, 1000 classes, 224x224"),
    Case("resnet50_b8_224", "resnet50", dict(batch=8), note="HF ResNet-50, 1000 classes, 224x224"),
    Case("vit_b16_b1_224", "vit_b16", dict(batch=1), note="HF ViT-B/16 (ViTModel), 224x224"),
    Case("vit_b16_b8_224", "vit_b16", dict(batch=8), note="HF ViT-B/16 (ViTModel), 224x224"),
    # text generation at context 128: prefill 128 tokens, then 32 greedy steps of one token (KV cache);
    # these also run the quantized-weight engines
    Case("decode_gpt2_c128", "gpt2_lm", dict(n_layer=12, seq=128), decode=Decode(quantized=True),
         note="GPT-2 small (GPT2Config defaults)"),
    Case("decode_smollm2_c128", "llama_lm", dict(seq=128, **_SMOLLM2), decode=Decode(quantized=True),
         note="SmolLM2-135M-shaped Llama"),
    Case("decode_qwen3_c128", "qwen3_lm", dict(seq=128, **_QWEN3_0P6B), decode=Decode(quantized=True),
         note="Qwen3-0.6B-shaped"),
    # at context ~1024: a prompt of 991 tokens, so the last of the 32 steps fills GPT-2's 1024 positions
    Case("decode_gpt2_c1024", "gpt2_lm", dict(n_layer=12, seq=991), decode=Decode(),
         note="GPT-2 small, a 991-token prompt"),
    Case("decode_smollm2_c1024", "llama_lm", dict(seq=991, **_SMOLLM2), decode=Decode(),
         note="SmolLM2-135M-shaped Llama, a 991-token prompt"),
    # not a benchmark: every decode engine end to end in seconds (tests/test_bench.py)
    Case("smoke_llama_gen", "llama_lm", dict(n_layer=2, seq=24, tie_word_embeddings=True),
         decode=Decode(steps=4, quantized=True), smoke=True, note="2-layer 64-wide Llama, 24-token prompt, 4 steps"),
]

BY_NAME = {c.name: c for c in CASES}


def select(filters: list[str] | None, quick: bool) -> list[Case]:
    """Cases whose name contains any of `filters` (all but the smoke ones when none); --quick keeps the
    quick ones only unless a filter names cases explicitly."""
    if filters:
        return [c for c in CASES if any(f in c.name for f in filters)]
    return [c for c in CASES if (c.quick or not quick) and not c.smoke]


def build(case: Case):
    """(model, args) for a model case; called inside a worker."""
    from rt.testing import models
    factory = getattr(models, case.factory, None)
    if factory is None:
        raise RuntimeError(f"rt.testing.models has no factory {case.factory!r}")
    return factory(**case.kwargs)
