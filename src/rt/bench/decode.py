"""Decode cases, inside a worker: greedy generation of one token per step after a prefilled prompt.

`prepare(case, engine, threads, workdir, rt_import_error)` returns (session, info, facts). `session()` prefills
the case's prompt into an empty cache, then runs `case.decode.steps` decode steps (each feeding the previous
step's argmax) and returns {"prefill_s", "decode_s_per_token"} plus "step_s" (one time per step) when the
engine can time steps singly. `facts` are the same for every engine: the bytes one decode step must read.

  eager      HF's own KV cache (DynamicCache), the model called step by step; prefill computes the logits
             of the last prompt row only (logits_to_keep=1), as generate() does.
  llama.cpp  the model written to an f32 GGUF file, run by llama-cpp-python's low-level API (llama_cpp_engine.py).
  rt         rt.compile_generator(model, max_context=...), timed by its own g.last_timings (each step's
             program run and token choice).
"""
from __future__ import annotations

import time

def context_for(prompt, steps: int) -> int:
    """Positions an engine's cache holds for a case: the prompt, the first token and each step's."""
    return prompt.shape[1] + steps + 1


class Unavailable(RuntimeError):
    """The engine cannot run this case here (reported as n/a, not as a failure)."""


def build(case):
    """(HF causal LM with its LM head, prompt ids (1, S)): the model case's wrapped model, unwrapped."""
    from .cases import build as build_case
    wrapped, (prompt,) = build_case(case)
    return wrapped.model, prompt


def attention_shape(cfg) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) of an HF config (GPT-2's names are mapped by its attribute_map)."""
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return cfg.num_hidden_layers, kv_heads, head_dim


def traffic(model, context: int) -> dict:
    """Bytes one decode step reads at `context` cached positions: every fp32 parameter once (the LM head
    included; a tied embedding is one parameter) plus the K and V caches."""
    layers, kv_heads, head_dim = attention_shape(model.config)
    return {"weight_bytes": sum(p.numel() for p in model.parameters()) * 4,
            "kv_bytes": 2 * layers * kv_heads * head_dim * context * 4, "context": context}


def hf_greedy(model, prompt, new_tokens: int) -> list[int]:
    """The greedy continuation by HF's cached decoding: the reference the other engines are checked against."""
    return eager_decode(model, prompt, new_tokens - 1)["tokens"]


def _cache_argument(model) -> str:
    """The forward argument taking the KV cache: later transformers 5 releases renamed past_key_values."""
    import inspect
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def eager_decode(model, prompt, steps: int) -> dict:
    import torch
    from transformers import DynamicCache
    kw = {_cache_argument(model): DynamicCache(config=model.config), "use_cache": True}
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(input_ids=prompt, logits_to_keep=1, **kw)
        tok = out.logits[:, -1:].argmax(-1)
        prefill_s = time.perf_counter() - t0
        tokens, step_s = [int(tok)], []
        for _ in range(steps):
            t0 = time.perf_counter()
            out = model(input_ids=tok, **kw)
            tok = out.logits[:, -1:].argmax(-1)
            step_s.append(time.perf_counter() - t0)
            tokens.append(int(tok))
    return {"prefill_s": prefill_s, "decode_s_per_token": sum(step_s) / len(step_s), "step_s": step_s,
            "tokens": tokens}


def prepare_eager(model, prompt, steps, threads, workdir, **_):
    return (lambda: eager_decode(model, prompt, steps)), {"cache": "transformers.DynamicCache",
                                                          "prefill_logits": "last row"}


def prepare_rt(model, prompt, steps, threads, workdir, rt_import_error=None):
    if rt_import_error:
        raise RuntimeError(f"import rt failed: {rt_import_error}")
    import rt
    t0 = time.perf_counter()
    context = context_for(prompt, steps)
    g = rt.compile_generator(model, max_context=context)
    info = {"compile_s": time.perf_counter() - t0, "max_context": context}
    ids = prompt[0].tolist()

    def session():
        tokens = list(g.generate(ids, max_new_tokens=steps + 1))
        t = g.last_timings
        return {"prefill_s": t["prefill_ms"] / 1e3, "decode_s_per_token": t["decode_ms_per_token"] / 1e3,
                "step_s": [ms / 1e3 for ms in t["decode_step_ms"]], "tokens": tokens}

    want = hf_greedy(model, prompt, steps + 1)
    got = session()["tokens"]
    info["greedy_tokens_matching_hf"] = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))
    info["greedy_tokens"] = len(want)
    return session, info


def _prepare_llama_cpp(*args, **kw):
    from .llama_cpp_engine import prepare
    return prepare(*args, **kw)


PREPARE = {"rt": prepare_rt, "eager": prepare_eager, "llama.cpp": _prepare_llama_cpp}   # cases.DECODE_ENGINES


def prepare(case, engine, threads, workdir, rt_import_error=None):
    import torch
    torch.set_num_threads(threads)
    model, prompt = build(case)
    facts = traffic(model, prompt.shape[1])
    kw = {"rt_import_error": rt_import_error} if engine == "rt" else {}
    session, info = PREPARE[engine](model, prompt, case.decode.steps, threads, workdir, **kw)
    return session, info, facts
