"""Decode cases, inside a worker: greedy generation of one token per step after a prefilled prompt.

`prepare(case, engine, threads, workdir, rt_import_error)` returns (session, info, facts). `session()` prefills
the case's prompt into an empty cache, then runs `case.decode.steps` decode steps (each feeding the previous
step's argmax) and returns {"prefill_s", "decode_s_per_token", "tokens"} plus "step_s" (one time per step)
when the engine can time steps singly. `facts` are the same for every engine: the bytes one decode step
reads in fp32. An engine storing its weights otherwise puts their bytes in info["weight_bytes"].

  eager      HF's own KV cache (DynamicCache), the model called step by step; prefill computes the logits
             of the last prompt row only (logits_to_keep=1), as generate() does.
  llama.cpp  the model written to an f32 GGUF file, run by llama-cpp-python's low-level API (llama_cpp_engine.py);
             llama.cpp-q8_0 / -q4_0: that file through llama.cpp's own quantizer first.
  rt         rt.compile_generator(model, max_context=...), timed by its own g.last_timings (each step's
             program run and token choice); rt-bf16 / -int8 / -int4: compiled with weights=<format>.
  ort-genai  onnxruntime-genai on the model its builder writes (ort_genai_engine.py).

Every engine is checked the same way before timing (`check_logits`): its logits after each of
ERROR_POSITIONS tokens of a fixed prompt against HF's fp32 model run without a cache, and its greedy
tokens for the case's prompt against HF's.
"""
from __future__ import annotations

import time

import numpy as np

ERROR_POSITIONS = 128     # the logits error is over this many positions of a fixed prompt (issue 21)
ERROR_SEED = 21


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


def eager_position_logits(model, ids) -> np.ndarray:
    """HF's logits [n, vocab] after each token of `ids`, fed one at a time through its DynamicCache (the
    path the eager engine times)."""
    import torch
    from transformers import DynamicCache
    kw = {_cache_argument(model): DynamicCache(config=model.config), "use_cache": True}
    with torch.inference_mode():
        return np.stack([model(input_ids=torch.tensor([[int(t)]]), **kw).logits[0, -1].double().numpy()
                         for t in ids])


# ---- the error metric every engine reports --------------------------------------------------------------
def error_ids(vocab: int, n: int = ERROR_POSITIONS) -> list[int]:
    """The fixed prompt the logits error is measured on: n ids drawn with a fixed seed."""
    return np.random.default_rng(ERROR_SEED).integers(0, vocab, n).tolist()


# rt's "-gptq" formats round on these prompts (random ids, another seed than the measured prompt's)
CALIBRATION_PROMPTS, CALIBRATION_SEED = 8, 1


def calibration_ids(vocab: int, n: int) -> list[list[int]]:
    rng = np.random.default_rng(CALIBRATION_SEED)
    return [rng.integers(0, vocab, n).tolist() for _ in range(CALIBRATION_PROMPTS)]


def reference_logits(model, ids) -> np.ndarray:
    """HF's fp32 logits [n, vocab] after each token of `ids`: one forward without a cache."""
    import torch
    with torch.inference_mode():
        return model(input_ids=torch.tensor([list(ids)]), use_cache=False).logits[0].double().numpy()


def logits_error(got, want) -> dict:
    """How far logits `got` [n, vocab] are from the reference `want`: max |Δ| / max |ref| over all of them,
    the mean over positions of ||Δ_row||_2 / ||ref_row||_2, and at how many positions the argmax is the same."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise RuntimeError(f"the engine gave logits of shape {got.shape}, HF {want.shape}")
    d = got - want
    return {"max_rel_err": float(np.abs(d).max() / np.abs(want).max()),
            "mean_rel_l2_err": float(np.mean(np.linalg.norm(d, axis=1) / np.linalg.norm(want, axis=1))),
            "argmax_match": int((got.argmax(1) == want.argmax(1)).sum()), "error_positions": len(want)}


def check_logits(position_logits, model, context: int) -> dict:
    """logits_error of `position_logits(ids)` (the engine's logits [n, vocab] after each token of ids) over
    the fixed prompt of ERROR_POSITIONS ids (fewer when the engine's context holds fewer)."""
    ids = error_ids(model.config.vocab_size, min(ERROR_POSITIONS, context))
    return logits_error(position_logits(ids), reference_logits(model, ids))


def greedy_match(got: list[int], want: list[int]) -> dict:
    """How many greedy tokens, from the first, equal the reference's."""
    return {"greedy_tokens_matching_hf": next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want)),
            "greedy_tokens": len(want)}


# ---- the engines ----------------------------------------------------------------------------------------
def prepare_eager(model, prompt, steps, threads, workdir, **_):
    info = {"cache": "transformers.DynamicCache", "prefill_logits": "last row"}
    info.update(check_logits(lambda ids: eager_position_logits(model, ids), model, context_for(prompt, steps)))
    return (lambda: eager_decode(model, prompt, steps)), info


def _compile_generator(model, context: int, weights: str | None):
    """rt.compile_generator at `context`, its weights in `weights` (None: fp32); a format this rt does not
    take is Unavailable (n/a), not a failure."""
    import inspect

    import rt
    from rt.errors import UnsupportedOpError, UsageError
    if weights is None:
        return rt.compile_generator(model, max_context=context)
    if "weights" not in inspect.signature(rt.compile_generator).parameters:
        raise Unavailable(f"this rt's compile_generator takes no weights= argument (quantized weights, issue 21): "
                          f"cannot compile with weights={weights!r}")
    fmt, _, rounding = weights.partition("-")
    extra = {}
    if rounding == "gptq":
        if "calibration" not in inspect.signature(rt.compile_generator).parameters:
            raise Unavailable("this rt's compile_generator takes no calibration= argument")
        extra["calibration"] = calibration_ids(model.config.vocab_size, min(ERROR_POSITIONS, context))
    try:
        return rt.compile_generator(model, max_context=context, weights=fmt, **extra)
    except (UsageError, UnsupportedOpError) as e:
        raise Unavailable(f"rt refuses weights={weights!r}: {' '.join(str(e).split())[:300]}") from None


ROW_READS = ("planned.embedding", "planned.slice")    # planned ops that read a few rows of their first operand


def step_weight_bytes(program) -> int:
    """Bytes of the constants one run of a planned program reads, as stored: each once, leaving out the
    tables it only reads rows of (an embedding table that is not also the LM head, rope tables)."""
    users = program.users()
    seen, total = set(), 0
    for op in program.ops:
        if op.name != "const" or op.attrs["name"] in seen:
            continue
        uses = users.get(op.result, [])
        if uses and all(u.name in ROW_READS and u.operands[0] is op.result for u in uses):
            continue
        seen.add(op.attrs["name"])
        total += program.constants[op.attrs["name"]].nbytes
    return int(total)


def prepare_rt(model, prompt, steps, threads, workdir, weights=None, rt_import_error=None):
    if rt_import_error:
        raise RuntimeError(f"import rt failed: {rt_import_error}")
    t0 = time.perf_counter()
    context = context_for(prompt, steps)
    g = _compile_generator(model, context, weights)
    info = {"compile_s": time.perf_counter() - t0, "max_context": context, "weights": weights or "fp32"}
    if weights is not None:
        info["weight_bytes"] = step_weight_bytes(g.stages["decode"])
    ids = prompt[0].tolist()

    def session():
        tokens = list(g.generate(ids, max_new_tokens=steps + 1))
        t = g.last_timings
        return {"prefill_s": t["prefill_ms"] / 1e3, "decode_s_per_token": t["decode_ms_per_token"] / 1e3,
                "step_s": [ms / 1e3 for ms in t["decode_step_ms"]], "tokens": tokens}

    info.update(check_logits(g.position_logits, model, context))
    return session, info


def _prepare_llama_cpp(*args, **kw):
    from .llama_cpp_engine import prepare
    return prepare(*args, **kw)


def _prepare_ort_genai(*args, **kw):
    from .ort_genai_engine import prepare
    return prepare(*args, **kw)


# cases.DECODE_ENGINES and the bases of cases.WEIGHT_FORMATS; each takes weights= (None: fp32)
PREPARE = {"rt": prepare_rt, "eager": prepare_eager, "llama.cpp": _prepare_llama_cpp, "ort-genai": _prepare_ort_genai}


def prepare(case, engine, threads, workdir, rt_import_error=None):
    import torch

    from .cases import engine_spec
    torch.set_num_threads(threads)
    base, weights = engine_spec(engine)
    model, prompt = build(case)
    facts = traffic(model, prompt.shape[1])
    kw = {"rt_import_error": rt_import_error} if base == "rt" else {}
    steps = case.decode.steps
    session, info = PREPARE[base](model, prompt, steps, threads, workdir, weights=weights, **kw)
    info.update(greedy_match(session()["tokens"], hf_greedy(model, prompt, steps + 1)))
    return session, info, facts
