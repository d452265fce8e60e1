"""The ONNX Runtime GenAI int4 decode baseline (engine "ort-genai-int4").

The HF model is saved with save_pretrained, beside a word-level tokenizer of dummy tokens written with the
`tokenizers` library (the builder insists on loading a tokenizer; ids are all it is fed here), and turned
into an ONNX model by onnxruntime-genai's own builder, as a user runs it:
`python -m onnxruntime_genai.models.builder -i <dir> -o <out> -p int4 -e cpu` (its defaults: MatMulNBits
4-bit weights, block size and accuracy level as the builder picks; onnxruntime-genai 0.18 quantizes the LM
head too and, for a tied embedding, looks the embedding up in that 4-bit matrix (GatherBlockQuantized);
info["quantization"] says what it wrote). Offline: nothing is downloaded. The session runs `threads`
intra-op threads (genai_config.json's session_options), greedy search, max_length = the case's context.

Timing: append_tokens(prompt) runs the prompt (prefill), the first generate_next_token picks the first
token from its logits; each later generate_next_token runs the model on the previous token and picks the
next: one decode step, timed singly. The logits check (decode.check_logits) reads the logits of every row
of the fixed prompt appended as one batch (get_output("logits")).

Not an rt dependency: `pip install onnxruntime-genai`. Its builder has no GPT-2 (GPT2LMHeadModel): n/a there.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from .decode import Unavailable, check_logits, context_for

BUILDER = "onnxruntime_genai.models.builder"
# HF architectures of the cases that the builder converts (its list is longer)
SUPPORTED = ("LlamaForCausalLM", "Qwen3ForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def _import():
    try:
        import onnxruntime_genai as og
    except ImportError as e:
        raise Unavailable(f"onnxruntime_genai cannot be imported ({e}): pip install onnxruntime-genai") from None
    return og


def write_tokenizer(path: str, vocab: int) -> None:
    """A word-level tokenizer of `vocab` dummy tokens "t0".. (the builder loads one; nothing is tokenized)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t0", eos_token="t0",
                            pad_token="t0").save_pretrained(path)


def build(model, out: str, workdir: str, precision: str) -> float:
    """Run the builder on `model` (saved to workdir first); its seconds."""
    arch = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    if arch not in SUPPORTED:
        raise Unavailable(f"onnxruntime-genai's model builder does not convert {arch}")
    hf = os.path.join(workdir, "hf")
    model.save_pretrained(hf)
    write_tokenizer(hf, model.config.vocab_size)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = os.path.join(workdir, "builder.log")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", BUILDER, "-i", hf, "-o", out, "-p", precision, "-e", "cpu",
                             "-c", os.path.join(workdir, "cache")], stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - t0
    with open(log, errors="replace") as f:
        text = f.read()
    sys.stderr.write(text[-4000:])          # into the worker's log
    if rc != 0:
        raise RuntimeError(f"the onnxruntime-genai builder failed (exit {rc}): {' '.join(text[-400:].split())}")
    import shutil
    shutil.rmtree(hf, ignore_errors=True)
    return seconds


def set_session(out: str, threads: int, context: int) -> None:
    path = os.path.join(out, "genai_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["model"]["decoder"].setdefault("session_options", {}).update(intra_op_num_threads=threads,
                                                                     inter_op_num_threads=1)
    cfg["search"].update(max_length=context, do_sample=False)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


def quantization(out: str) -> dict:
    """What the builder wrote: the MatMulNBits nodes' bits / block size / accuracy level, the types of the
    other weight-reading ops, and the bytes of the initializers a step reads (all but a table only gathered
    from: the embedding)."""
    import onnx
    m = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
    g = m.graph
    sizes = {t.name: int(np.prod(t.dims, dtype=np.int64)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
             for t in g.initializer}
    users: dict[str, list] = {}
    for node in g.node:
        for i, name in enumerate(node.input):
            if name in sizes:
                users.setdefault(name, []).append((node.op_type, i))
    gathered = {n for n, us in users.items() if all(op == "Gather" and i == 0 for op, i in us)}
    nbits = {}
    for node in g.node:
        if node.op_type == "MatMulNBits":
            a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
            key = f"bits={a.get('bits')} block_size={a.get('block_size')} accuracy_level={a.get('accuracy_level', 0)}"
            nbits[key] = nbits.get(key, 0) + 1
    ops = {}
    for node in g.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"matmulnbits": nbits, "embedding_bytes": sum(sizes[n] for n in gathered),
            "weight_bytes": sum(v for n, v in sizes.items() if n not in gathered),
            "op_counts": {k: v for k, v in sorted(ops.items()) if k in ("MatMulNBits", "MatMul", "Gather",
                                                                         "GatherBlockQuantized", "GroupQueryAttention")}}


class OrtGenAI:
    def __init__(self, og, path: str, context: int):
        self.og, self.context = og, context
        self.model = og.Model(path)

    def _generator(self):
        p = self.og.GeneratorParams(self.model)
        p.set_search_options(max_length=self.context, do_sample=False)
        return self.og.Generator(self.model, p)

    def position_logits(self, ids) -> np.ndarray:
        g = self._generator()
        g.append_tokens(np.asarray(ids, dtype=np.int32))
        return np.array(g.get_output("logits"), dtype=np.float32)[0]

    def session(self, prompt: list[int], steps: int) -> dict:
        g = self._generator()
        ids = np.asarray(prompt, dtype=np.int32)
        t0 = time.perf_counter()
        g.append_tokens(ids)
        g.generate_next_token()
        tokens = [int(g.get_next_tokens()[0])]
        prefill_s = time.perf_counter() - t0
        step_s = []
        for _ in range(steps):
            t0 = time.perf_counter()
            g.generate_next_token()
            tok = int(g.get_next_tokens()[0])
            step_s.append(time.perf_counter() - t0)
            tokens.append(tok)
        return {"prefill_s": prefill_s, "decode_s_per_token": sum(step_s) / len(step_s), "step_s": step_s,
                "tokens": tokens}


def prepare(model, prompt, steps, threads, workdir, weights=None, **_):
    og = _import()
    if weights is None:
        raise Unavailable("ort-genai runs quantized weights only here (ort-genai-int4)")
    out = os.path.join(workdir, f"ort-genai-{weights}")
    context = context_for(prompt, steps)
    build_s = build(model, out, workdir, weights)
    set_session(out, threads, context)
    q = quantization(out)
    info = {"builder": f"python -m {BUILDER} -p {weights} -e cpu", "build_s": build_s, "weights": weights,
            "ort_genai_version": getattr(og, "__version__", None), "quantization": q,
            "weight_bytes": q["weight_bytes"], "prefill_logits": "every row (the builder's graph returns them all)"}
    engine = OrtGenAI(og, out, context)
    info.update(check_logits(engine.position_logits, model, context))
    ids = prompt[0].tolist()
    return (lambda: engine.session(ids, steps)), info
