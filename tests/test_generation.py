"""Generation: a KV cache derived by the compiler, prefill and decode programs, rt.generate.

Token for token against HF `generate` (greedy, fp32) and logits per step against HF's scores, for
GPT-2 and the Llama family (Llama, Qwen3, Mistral's sliding window), from prompts of 1, 17 and 200
tokens; sampling, stop tokens, streaming, bad input; saved and run where torch cannot be imported."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import rt
from rt.dialects.instantiate import instantiate
from rt.dialects.text import parse_module, print_module
from rt.kernels.executor import OpByOpProgram
from rt.lowering.kv_cache import PAST, with_kv_cache
from rt.testing import models
from test_save_load import BLOCK_TORCH

CONTEXT = 256
NEW = 32
PROMPTS = (1, 17, 200)


def _hf(family: str):
    if family == "gpt2":
        wrapped, _ = models.gpt2_lm(n_layer=2, seq=8, n_embd=64, n_head=4, vocab_size=500, n_positions=CONTEXT)
    elif family == "gpt2_wide":     # GPT-2 small's widths and vocabulary: decode runs the split form, prefill oneDNN
        wrapped, _ = models.gpt2_lm(n_layer=2, seq=8, n_positions=CONTEXT)
    else:
        wrapped, _ = models.causal_lm(family, n_layer=2, seq=8, max_positions=CONTEXT)
    return wrapped.model


BATCH = 3


@pytest.fixture(scope="module", params=["gpt2", "gpt2_wide", "llama", "qwen3", "mistral"])
def compiled(request):
    """(family, HF model, generator); with a batched decode program but for Mistral (its sliding
    window is a mask of positions, which batched decoding refuses)."""
    hf = _hf(request.param)
    batch = 1 if request.param == "mistral" else BATCH
    return request.param, hf, rt.compile_generator(hf, max_context=CONTEXT, max_batch=batch)


def _prompt(n: int, vocab: int) -> list[int]:
    return torch.randint(1, vocab, (n,), generator=torch.Generator().manual_seed(n)).tolist()


@pytest.mark.parametrize("n", PROMPTS)
def test_tokens_and_logits_match_hf_generate(compiled, n):
    family, hf, gen = compiled
    prompt = _prompt(n, gen.vocab_size)
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=NEW, do_sample=False, eos_token_id=None,
                          pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    want = out.sequences[0, n:].tolist()
    got = list(gen.stream(prompt, NEW, with_logits=True))
    assert [t for t, _ in got] == want
    for (_, logits), scores in zip(got, out.scores):
        ref = scores[0].numpy()
        assert np.abs(logits - ref).max() <= 1e-4 * np.abs(ref).max()
    assert gen.last_timings["new_tokens"] == NEW and gen.last_timings["prompt_tokens"] == n


def test_programs_share_weights_and_one_cache_layout(compiled):
    family, hf, gen = compiled
    report = gen.plan_report()
    kv = report["kv_cache"]
    layers = hf.config.num_hidden_layers
    assert kv["buffers"] == 2 * layers and kv["context"] == CONTEXT
    # K and V per layer, per token: kv heads x head dim floats each (grouped-query K/V unrepeated)
    heads = getattr(hf.config, "num_key_value_heads", None) or hf.config.num_attention_heads
    head_dim = getattr(hf.config, "head_dim", None) or hf.config.hidden_size // hf.config.num_attention_heads
    assert kv["bytes_per_token"] == 2 * layers * heads * head_dim * 4
    pre, dec = gen.stages["prefill"], gen.stages["decode"]
    names = lambda m: {op.attrs["name"] for op in m.ops if op.name == "const"}   # noqa: E731
    shared = names(pre) & names(dec)
    assert shared and all(pre.constants[c] is dec.constants[c] for c in shared)
    if gen.max_batch > 1:                 # a second export: its weights are the first one's arrays
        bat = gen.stages["decode_batch"]
        assert names(bat) == names(dec) and all(bat.constants[c] is dec.constants[c] for c in names(dec))
    # each program reads the weights in place: no packed or split copy of any
    modes = {k.get("mode") for p in gen.programs for k in gen.kernel_plan(p)}
    assert not modes & {"packed", "split"}, modes
    assert dec.meta["symbols"] == {PAST: (1, CONTEXT - 1)}
    assert dec.op_counts()["planned.cache_write"] == 2 * layers == dec.op_counts()["state"]


def test_decode_through_both_executors_and_ir_text(compiled):
    """The decode program at a bound past length, run op by op through the C kernels on the same
    cache, gives the production executor's logits; its planned IR (states, cache writes) round-trips."""
    family, hf, gen = compiled
    prompt = _prompt(12, gen.vocab_size)
    cache = [np.empty(t.shape, t.np_dtype) for t in gen.cache_types]
    gen._prefill.run([np.array([prompt[:-1]])], cache)
    before = [c.copy() for c in cache]
    fast = gen._decode.run([np.array([prompt[-1:]])], cache, sizes={PAST: 11})[0]
    slow = OpByOpProgram(instantiate(gen.stages["decode"], {PAST: 11}), gen.run_target).run(
        [np.array([prompt[-1:]])], states=before)[0]
    assert np.abs(fast - slow).max() <= 1e-5 * np.abs(fast).max()
    text = print_module(gen.stages["decode"])
    assert "= state {index = 0}" in text and "@ state[0]" in text and "planned.cache_write" in text
    assert print_module(parse_module(text, gen.stages["decode"].constants)) == text


def test_sampling_is_reproducible_for_a_seed(compiled):
    family, hf, gen = compiled
    prompt = _prompt(5, gen.vocab_size)
    a = gen.generate(prompt, 16, temperature=1.5, top_k=50, top_p=0.95, seed=3)
    assert gen.generate(prompt, 16, temperature=1.5, top_k=50, top_p=0.95, seed=3) == a
    assert any(gen.generate(prompt, 16, temperature=1.5, seed=s) != a for s in range(4, 8))
    greedy = gen.generate(prompt, 16)
    assert gen.generate(prompt, 16, temperature=0.7, top_k=1, seed=1) == greedy
    assert gen.generate(prompt, 16, temperature=0.7, top_p=1e-6, seed=1) == greedy


def test_stop_tokens_and_streaming(compiled):
    family, hf, gen = compiled
    prompt = _prompt(9, gen.vocab_size)
    full = gen.generate(prompt, 12)
    stop = full[3]
    first = full.index(stop)
    assert gen.generate(prompt, 12, stop_tokens=[stop]) == full[:first + 1]
    stream = gen.stream(prompt, 12)
    assert next(stream) == full[0] and list(stream) == full[1:]
    assert rt.generate(gen, prompt, 12) == full


def test_bad_input_is_refused_clearly(compiled):
    family, hf, gen = compiled
    v = gen.vocab_size
    with pytest.raises(rt.InputError, match=f"longer than this generator's context of {CONTEXT}"):
        gen.generate([1] * (CONTEXT + 1), 1)
    with pytest.raises(rt.InputError, match="need a KV cache of 257 positions; this generator holds 256"):
        gen.generate([1] * 200, 58)
    gen.generate([1] * 200, 57)                      # fills the cache exactly
    with pytest.raises(rt.InputError, match=rf"prompt token 2 is {v}, outside the vocabulary \[0, {v}\)"):
        gen.generate([1, 2, v], 4)
    with pytest.raises(rt.InputError, match="non-empty"):
        gen.generate([], 4)
    with pytest.raises(rt.InputError, match="integers"):
        gen.generate([1.5, 2.0], 4)
    with pytest.raises(rt.InputError, match="max_new_tokens must be an integer >= 0"):
        gen.generate([1], -1)
    with pytest.raises(rt.InputError, match="temperature"):
        gen.generate([1], 2, temperature=-1.0)
    with pytest.raises(rt.InputError, match="top_p"):
        gen.generate([1], 2, temperature=1.0, top_p=0.0)
    with pytest.raises(rt.UsageError, match="takes a Generator"):
        rt.generate(hf, [1], 2)


def test_a_batch_of_prompts_decodes_as_each_alone(compiled):
    family, hf, gen = compiled
    prompts = [_prompt(n, gen.vocab_size) for n in (1, 17, 40)]
    if gen.max_batch == 1:
        with pytest.raises(rt.UsageError, match="max_batch"):
            gen.generate_batch(prompts, 4)
        with pytest.raises(rt.LoweringError, match="sliding window"):
            rt.compile_generator(hf, max_context=CONTEXT, max_batch=2)
        return
    together = gen.generate_batch(prompts, NEW)
    assert gen.last_timings["prompts"] == 3 and len(gen.last_timings["decode_step_ms"]) == NEW - 1
    assert together == [gen.generate(p, NEW) for p in prompts]
    assert gen.generate_batch(prompts[1:], 8, temperature=1.0, top_k=20, seed=2) == \
        gen.generate_batch(prompts[1:], 8, temperature=1.0, top_k=20, seed=2)
    stop = together[1][2]
    ended = gen.generate_batch(prompts, 12, stop_tokens=[stop])
    for seq, full in zip(ended, together):
        want = full[:full.index(stop) + 1] if stop in full[:12] else full[:12]
        assert seq == want
    with pytest.raises(rt.InputError, match="1..3 prompts"):
        gen.generate_batch(prompts + prompts, 2)
    with pytest.raises(rt.InputError, match="longest prompt has 200 tokens"):
        gen.generate_batch([[1], [1] * 200], 58)


def test_saved_generator_runs_without_torch(compiled, tmp_path):
    family, hf, gen = compiled
    if family not in ("gpt2_wide", "llama"):
        pytest.skip("one GPT-2 and one Llama-family file suffice")
    path = str(tmp_path / "gen.rt")
    gen.save(path)
    prompt = _prompt(17, gen.vocab_size)
    want = gen.generate(prompt, NEW)
    sampled = gen.generate(prompt, 8, temperature=1.0, top_k=20, seed=5)
    script = BLOCK_TORCH + f"""
import rt
g = rt.load({path!r})
assert isinstance(g, rt.Generator) and "torch" not in sys.modules
print(g.generate({prompt!r}, {NEW}))
print(g.generate({prompt!r}, 8, temperature=1.0, top_k=20, seed=5))
print(g.generate_batch([{prompt!r}, [3, 4]], 8))
"""
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    lines = out.strip().splitlines()
    assert lines[-3] == str(want) and lines[-2] == str(sampled)
    assert lines[-1] == str(gen.generate_batch([prompt, [3, 4]], 8))


def test_models_the_cache_cannot_hold_are_refused():
    """A bidirectional encoder (BERT's attention is not causal): no KV cache keeps what it reads."""
    bert, _ = models.bert(n_layer=1, seq=8, batch=1)
    with pytest.raises(rt.LoweringError, match=r"(?s)generation: .*fused.attention.*not causal.*modeling_bert.py"):
        rt.compile_generator(bert, max_context=32, example_ids=torch.randint(0, 100, (1, 8)))


def _word_tokenizer(path, vocab: int):
    """A tokenizer.json of `vocab` words w0, w1, ... split on whitespace (the tokenizers package)."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(str(path))
    return tok


def compile_checkpoint_with_cli(tmp_path, n_layer: int, context: int, *options) -> tuple[str, str, int]:
    """A small Llama saved as a transformers checkpoint, compiled by `rt compile --generator`: (its
    directory, the generator file, the CLI's exit code)."""
    from rt.cli import main
    wrapped, _ = models.causal_lm("llama", n_layer=n_layer, seq=8, max_positions=context)
    wrapped.model.save_pretrained(tmp_path / "ckpt")
    path = str(tmp_path / "g.rt")
    code = main(["compile", str(tmp_path / "ckpt"), "-o", path, "--generator", "--max-context", str(context), *options])
    return str(tmp_path / "ckpt"), path, code


def test_cli_compiles_a_checkpoint_directory_and_generates(tmp_path, capsys):
    from rt.cli import main
    ckpt, path, code = compile_checkpoint_with_cli(tmp_path, 2, 64, "--max-batch", "2")
    assert code == 0
    assert "generator" in capsys.readouterr().out
    want = rt.load(path).generate([1, 2, 3], 6)
    assert main(["generate", path, "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--timing"]) == 0
    out = capsys.readouterr()
    assert out.out.split() == [str(t) for t in want] and "decode" in out.err and "prefill" in out.err
    batch = rt.load(path).generate_batch([[1, 2, 3], [9, 8]], 5)
    assert main(["generate", path, "--prompt-ids", "1,2,3", "--prompt-ids", "9,8", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.splitlines() == [" ".join(map(str, seq)) for seq in batch]
    tok = _word_tokenizer(tmp_path / "tokenizer.json", 256)
    assert main(["generate", path, "--prompt", "w1 w2 w3", "--tokenizer", str(tmp_path / "tokenizer.json"),
                 "--max-new-tokens", "6"]) == 0
    assert capsys.readouterr().out.strip() == tok.decode(want).strip()
    assert main(["inspect", path]) == 0
    assert "context 64" in capsys.readouterr().out
    for argv, code, message in [
            (["generate", path], 2, "give the prompt as --prompt-ids"),
            (["generate", path, "--prompt-ids", "1,x"], 3, "takes integers"),
            (["generate", path, "--prompt-ids", "1,300"], 3, "outside the vocabulary"),
            (["run", path], 2, "is a generator"),
            (["compile", ckpt, "-o", path, "--generator"], 2, "needs --max-context")]:
        assert main(argv) == code, argv
        assert message in capsys.readouterr().err


def test_a_generator_file_without_its_decode_program_is_refused(tmp_path):
    from rt.serialize import save_model
    hf = _hf("gpt2")
    gen = rt.compile_generator(hf, max_context=32)
    path = str(tmp_path / "half.rt")
    save_model(path, {"prefill": gen.stages["prefill"]}, programs=("prefill",))
    with pytest.raises(rt.ModelFileError, match="needs a decode program"):
        rt.load(path)


KV_IN = """module @m(%q: tensor<1x2x?(S)x8xf32>, %k: tensor<1x1x?(S)x8xf32>, %v: tensor<1x1x?(S)x8xf32>) -> (tensor<1x?(S)x16xf32>) where S in [1, 16] {
  %o = fused.attention %q, %k, %v {causal = true, kv_group = 2, merge_heads = true, scale = 0.25} : tensor<1x?(S)x16xf32>
  return %o
}
"""


def test_kv_cache_derivation_as_ir_text():
    """IR text in, IR text out: grouped K/V written at row P into their states and read at rows
    [0, P + 1) (decode, no causal mask left for one row), or at 0 and [0, S) with the prefill's last row
    returned."""
    assert print_module(with_kv_cache(parse_module(KV_IN), "decode")) == """module @m(%q: tensor<1x2x1x8xf32>, %k: tensor<1x1x1x8xf32>, %v: tensor<1x1x1x8xf32>) -> (tensor<1x1x16xf32>) where P in [1, 15] {
  %k_cache0 = state {index = 0} : tensor<1x1x16x8xf32>
  %k_cache0_written = fused.cache_write %k_cache0, %k {dim = 2, start = ?(P)} : tensor<1x1x16x8xf32>
  %k_cache0_rows = fused.slice %k_cache0_written {dim = 2, end = ?(P + 1), start = 0, step = 1} : tensor<1x1x?(P + 1)x8xf32>
  %v_cache0 = state {index = 1} : tensor<1x1x16x8xf32>
  %v_cache0_written = fused.cache_write %v_cache0, %v {dim = 2, start = ?(P)} : tensor<1x1x16x8xf32>
  %v_cache0_rows = fused.slice %v_cache0_written {dim = 2, end = ?(P + 1), start = 0, step = 1} : tensor<1x1x?(P + 1)x8xf32>
  %o = fused.attention %q, %k_cache0_rows, %v_cache0_rows {causal = false, kv_group = 2, merge_heads = true, scale = 0.25} : tensor<1x1x16xf32>
  return %o
}
"""
    assert print_module(with_kv_cache(parse_module(KV_IN), "prefill")) == """module @m(%q: tensor<1x2x?(S)x8xf32>, %k: tensor<1x1x?(S)x8xf32>, %v: tensor<1x1x?(S)x8xf32>) -> (tensor<1x1x16xf32>) where S in [1, 16] {
  %k_cache0 = state {index = 0} : tensor<1x1x16x8xf32>
  %k_cache0_written = fused.cache_write %k_cache0, %k {dim = 2, start = 0} : tensor<1x1x16x8xf32>
  %k_cache0_rows = fused.slice %k_cache0_written {dim = 2, end = ?(S), start = 0, step = 1} : tensor<1x1x?(S)x8xf32>
  %v_cache0 = state {index = 1} : tensor<1x1x16x8xf32>
  %v_cache0_written = fused.cache_write %v_cache0, %v {dim = 2, start = 0} : tensor<1x1x16x8xf32>
  %v_cache0_rows = fused.slice %v_cache0_written {dim = 2, end = ?(S), start = 0, step = 1} : tensor<1x1x?(S)x8xf32>
  %o = fused.attention %q, %k_cache0_rows, %v_cache0_rows {causal = true, kv_group = 2, merge_heads = true, scale = 0.25} : tensor<1x?(S)x16xf32>
  %o_last = fused.slice %o {dim = 1, end = ?(S), start = ?(S - 1), step = 1} : tensor<1x1x16xf32>
  return %o_last
}
"""
