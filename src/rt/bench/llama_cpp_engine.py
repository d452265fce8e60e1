"""The llama.cpp decode baseline: the HF model written to an f32 GGUF file (gguf_export.py) and run through
llama-cpp-python's low-level API with `threads` threads, the K/V cache in f32 (llama.cpp's default is f16;
f32 reads the same bytes as the other engines) and flash attention off: its CPU kernel rounds through f16
(relative logit error ~5e-4 against HF, 1e-6 without), and at context 128 attention is a small part of a step. The prompt is decoded as one batch that asks for the logits
of its last row only, as llama.cpp's own generation does; then one token per llama_decode call.

llama.cpp-q8_0 / llama.cpp-q4_0: the f32 file through llama.cpp's own quantizer (llama_model_quantize with
llama_model_quantize_default_params and the ftype: what `llama-quantize model.gguf q4_0` does, so tensors it
keeps wider, the 1-D norms and its choice for the output / tied embedding matrix, stay so; info["tensor_types"]
says what each kind of tensor became). llama.cpp then repacks the quantized matrices into its "extra buffer
types" (CPU_REPACK, and AMX on a CPU with AMX), except on a CPU with AMX: there its AMX matmul crashes on
any batch of more than one row (llama.cpp issue 20824; seen with llama-cpp-python 0.3.36 on every model
shape tried), so the quantized engines load as `--no-repack` does (use_extra_bufts off: llama.cpp's plain
CPU kernels for Q8_0 / Q4_0); info["repack"] says which.

Before timing, every engine's logits are checked against HF's fp32 ones (decode.check_logits): here the
fixed prompt decoded as one batch with the logits of every row, and its greedy tokens (through the cache).

llama-cpp-python is not an rt dependency: `CMAKE_ARGS="-DGGML_NATIVE=ON" pip install llama-cpp-python`.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

import numpy as np

from .decode import Unavailable, check_logits, context_for

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

    def __init__(self, path: str, threads: int, context: int = 256, repack: bool = True):
        L = self.L = _import()
        L.llama_backend_init()
        mp = L.llama_model_default_params()
        mp.use_extra_bufts = repack          # False: `--no-repack`
        self.model = L.llama_model_load_from_file(path.encode(), mp)
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

    def position_logits(self, ids) -> np.ndarray:
        """The logits [n, vocab] after each token of `ids`: one batch from an empty cache, every row's logits."""
        self.reset()
        return self.decode(ids, 0, all_logits=True).copy()

    def session(self, prompt: list[int], steps: int) -> dict:
        self.reset()
        t0 = time.perf_counter()
        tok = int(self.decode(prompt, 0)[-1].argmax())
        prefill_s = time.perf_counter() - t0
        tokens, step_s = [tok], []
        for pos in range(len(prompt), len(prompt) + steps):
            t0 = time.perf_counter()
            tok = int(self.decode([tok], pos)[-1].argmax())
            step_s.append(time.perf_counter() - t0)
            tokens.append(tok)
        return {"prefill_s": prefill_s, "decode_s_per_token": sum(step_s) / len(step_s), "step_s": step_s,
                "tokens": tokens}


def quantize(src: str, dst: str, fmt: str, threads: int) -> None:
    """llama.cpp's own quantizer on the GGUF `src` to `fmt` ("q8_0", "q4_0", ...) with its default
    parameters, as `llama-quantize src dst fmt` runs it."""
    L = _import()
    ftype = getattr(L, f"LLAMA_FTYPE_MOSTLY_{fmt.upper()}", None)
    if ftype is None:
        raise Unavailable(f"this llama_cpp has no LLAMA_FTYPE_MOSTLY_{fmt.upper()}")
    p = L.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = threads          # the work's threads only: the output is the same for any count
    rc = L.llama_model_quantize(src.encode(), dst.encode(), p)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize to {fmt} returned {rc} (its log is in the worker's log)")


def tensor_types(path: str) -> dict:
    """What a GGUF file holds: each tensor kind's type (the token embedding, the output matrix if any,
    the layers' matrices by name, the norms), the count of tensors per type and the bytes of all tensors."""
    import gguf
    reader = gguf.GGUFReader(path)
    kinds, counts, nbytes = {}, {}, 0
    for t in reader.tensors:
        kind = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else t.name
        kinds.setdefault(kind, set()).add(t.tensor_type.name)
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
        nbytes += int(t.n_bytes)
    return {"tensor_types": {k: "/".join(sorted(v)) for k, v in kinds.items()}, "tensor_type_counts": counts,
            "tensor_bytes": nbytes}


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


def prepare(model, prompt, steps, threads, workdir, weights=None, **_):
    from .gguf_export import write_gguf
    _import()
    _need("gguf", "pip install gguf")
    path = os.path.join(workdir, "model.gguf")
    t0 = time.perf_counter()
    summary = write_gguf(model, path)
    info = {**summary, "gguf_write_s": time.perf_counter() - t0, "gguf_bytes": os.path.getsize(path),
            "prefill_logits": "last row", "kv_type": "f32", "weights": weights or "f32"}
    if weights is not None:
        quantized = os.path.join(workdir, f"model-{weights}.gguf")
        t0 = time.perf_counter()
        quantize(path, quantized, weights, threads)
        info.update(quantize_s=time.perf_counter() - t0, f32_gguf_bytes=info["gguf_bytes"],
                    gguf_bytes=os.path.getsize(quantized))
        os.remove(path)
        path = quantized
        types = tensor_types(path)
        info.update(types, weight_bytes=types["tensor_bytes"])
    context = context_for(prompt, steps)
    repack = weights is None or not cpu_has_amx()       # see the module's doc
    engine = LlamaCpp(path, threads, context, repack=repack)
    info["flash_attn"] = engine.flash_attn
    if weights is not None:
        info["repack"] = "on (llama.cpp's default)" if repack else "off (--no-repack: the CPU has AMX, issue 20824)"
    ids = prompt[0].tolist()
    info.update(check_logits(engine.position_logits, model, context))
    info["llama_cpp_version"] = getattr(engine.L, "__version__", None)
    return (lambda: engine.session(ids, steps)), info
