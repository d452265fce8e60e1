"""The llama.cpp decode baseline: the HF model written to an f32 GGUF file (gguf_export.py) and run through
llama-cpp-python's low-level API with `threads` threads, the K/V cache in f32 (llama.cpp's default is f16;
f32 reads the same bytes as the other engines) and flash attention off: its CPU kernel rounds through f16
(relative logit error ~5e-4 against HF, 1e-6 without), and at context 128 attention is a small part of a step. The prompt is decoded as one batch that asks for the logits
of its last row only, as llama.cpp's own generation does; then one token per llama_decode call.

Before timing, the conversion is checked: llama.cpp's logits for every row of a short prompt, and for a few
tokens decoded one by one through its cache, against HF's (fp32).

llama-cpp-python is not an rt dependency: `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python`.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

import numpy as np

from .decode import Unavailable, context_for

CHECK_PROMPT, CHECK_STEPS = 16, 3
GGML_TYPE_F32 = 0
FLASH_ATTN_DISABLED = 0
GGML_LOG_LEVEL_WARN = 3
_log_callback = None     # llama.cpp keeps a pointer to it: it must live as long as the process


def _need(module: str, install: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise Unavailable(f"{module} cannot be imported ({e}): {install}") from None


def _import():
    global _log_callback
    llama_cpp = _need("llama_cpp", "CMAKE_ARGS=\"-DGGML_NATIVE=ON\" pip install llama-cpp-python")
    if _log_callback is None:
        # llama.cpp logs every graph it builds (each decode step): keep only warnings and errors
        @llama_cpp.llama_log_callback
        def _log_callback(level, text, user_data):
            if level in (GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_WARN + 1):
                sys.stderr.write(text.decode(errors="replace"))
        llama_cpp.llama_log_set(_log_callback, None)
    return llama_cpp


class LlamaCpp:
    """One model and one context (one sequence) of llama.cpp."""

    def __init__(self, path: str, threads: int, context: int = 256):
        L = self.L = _import()
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path} (its log is in the worker's log)")
        p = L.llama_context_default_params()
        p.n_ctx = p.n_batch = p.n_ubatch = context
        p.n_threads = p.n_threads_batch = threads
        p.type_k = p.type_v = GGML_TYPE_F32
        p.flash_attn_type = FLASH_ATTN_DISABLED
        self.ctx = L.llama_init_from_model(self.model, p)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        self.flash_attn = L.llama_flash_attn_type_name(p.flash_attn_type).decode()
        self.n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(self.model))
        self.batch = L.llama_batch_init(context, 0, 1)

    def reset(self):
        self.L.llama_memory_clear(self.L.llama_get_memory(self.ctx), True)

    def decode(self, tokens, start: int, all_logits: bool = False) -> np.ndarray:
        """Feed `tokens` at positions start.. ; the logits (rows, vocab) of every row or of the last one."""
        b, n = self.batch, len(tokens)
        b.n_tokens = n
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.seq_id[i][0] = int(t), start + i, 1, 0
            b.logits[i] = all_logits or i == n - 1
        rc = self.L.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        rows = n if all_logits else 1
        ptr = self.L.llama_get_logits(self.ctx) if all_logits else self.L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab))

    def session(self, prompt: list[int], steps: int) -> dict:
        self.reset()
        t0 = time.perf_counter()
        tok = int(self.decode(prompt, 0)[-1].argmax())
        prefill_s = time.perf_counter() - t0
        step_s = []
        for pos in range(len(prompt), len(prompt) + steps):
            t0 = time.perf_counter()
            tok = int(self.decode([tok], pos)[-1].argmax())
            step_s.append(time.perf_counter() - t0)
        return {"prefill_s": prefill_s, "decode_s_per_token": sum(step_s) / len(step_s), "step_s": step_s}


def logits_error(engine: LlamaCpp, model, prompt: list[int]) -> float:
    """max |llama.cpp - HF| / max |HF| over the logits of a CHECK_PROMPT-token batch (all rows) and of
    CHECK_STEPS more tokens decoded one at a time."""
    import torch
    ids = prompt[:CHECK_PROMPT + CHECK_STEPS]
    with torch.inference_mode():
        want = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].double().numpy()
    engine.reset()
    got = [engine.decode(ids[:CHECK_PROMPT], 0, all_logits=True).copy()]
    got += [engine.decode([t], pos).copy() for pos, t in enumerate(ids[CHECK_PROMPT:], start=CHECK_PROMPT)]
    got = np.concatenate(got).astype(np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def prepare(model, prompt, steps, threads, workdir, **_):
    from .gguf_export import write_gguf
    _import()
    _need("gguf", "pip install gguf")
    path = os.path.join(workdir, "model.gguf")
    t0 = time.perf_counter()
    summary = write_gguf(model, path)
    info = {**summary, "gguf_write_s": time.perf_counter() - t0, "gguf_bytes": os.path.getsize(path),
            "prefill_logits": "last row", "kv_type": "f32"}
    engine = LlamaCpp(path, threads, context_for(prompt, steps))
    info["flash_attn"] = engine.flash_attn
    ids = prompt[0].tolist()
    info["max_rel_err"] = logits_error(engine, model, ids)
    info["llama_cpp_version"] = getattr(engine.L, "__version__", None)
    return (lambda: engine.session(ids, steps)), info
