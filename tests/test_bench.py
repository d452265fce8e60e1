"""The benchmark harness runs end to end on the smallest case and writes its JSON (no timing asserted);
the decode cases' pieces work on tiny models (the llama.cpp ones only where llama-cpp-python is installed)."""
import json
import subprocess
import sys

import pytest


def test_bench_smoke(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "rt.cli", "bench", "--cases", "mlp_tiny", "--engines", "rt", "eager",
                        "--rounds", "1", "--round-seconds", "0.05", "--quiet-wait", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "mlp_tiny_64_b1" in r.stdout and "eager" in r.stdout
    data = json.loads(out.read_text())
    assert "mlp_tiny" in json.dumps(data)


# ---- decode cases: cheap checks of the pieces (tiny models; the real cases are for `rt bench`) ----
def _tiny_gpt2():
    from rt.testing.models import gpt2_lm
    wrapped, (prompt,) = gpt2_lm(n_layer=2, seq=12, n_embd=64, n_head=4, vocab_size=97, n_positions=256)
    return wrapped.model, prompt


def test_decode_cases_stay_out_of_quick():
    from rt.bench.cases import DECODE_ENGINES, select
    decode = select(["decode_"], quick=False)
    assert {c.name for c in decode} == {"decode_gpt2_c128", "decode_smollm2_c128", "decode_qwen3_c128",
                                        "decode_gpt2_c1024", "decode_smollm2_c1024"}
    assert all(c.engines == DECODE_ENGINES for c in decode)
    assert not any(c.decode for c in select(None, quick=True))


def test_decode_traffic_counts_a_tied_head_once():
    from rt.bench.decode import traffic
    model, prompt = _tiny_gpt2()
    t = traffic(model, prompt.shape[1])
    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert t["weight_bytes"] == 4 * params
    assert t["kv_bytes"] == 2 * 2 * 64 * 12 * 4          # K and V, 2 layers, 4 heads x 16, 12 positions


def test_eager_decode_matches_uncached_greedy():
    import torch
    from rt.bench.decode import eager_decode
    model, prompt = _tiny_gpt2()
    out = eager_decode(model, prompt, steps=4)
    ids = prompt
    with torch.inference_mode():
        for _ in range(5):
            ids = torch.cat([ids, model(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert out["tokens"] == ids[0, prompt.shape[1]:].tolist()
    assert len(out["step_s"]) == 4 and out["prefill_s"] > 0


def test_rt_decode_engine_matches_hf_greedy():
    from rt.bench import decode
    model, prompt = _tiny_gpt2()
    session, info = decode.prepare_rt(model, prompt, 3, 1, "")
    assert info["greedy_tokens_matching_hf"] == info["greedy_tokens"] == 4
    out = session()
    assert set(out) >= {"prefill_s", "decode_s_per_token", "step_s"} and len(out["step_s"]) == 3


def test_llama_cpp_engine_is_na_without_llama_cpp(monkeypatch):
    import sys
    from rt.bench import decode, llama_cpp_engine
    from rt.bench.runner import _status_of
    monkeypatch.setitem(sys.modules, "llama_cpp", None)     # import llama_cpp raises ImportError
    with pytest.raises(decode.Unavailable, match="pip install llama-cpp-python") as e:
        llama_cpp_engine._import()
    assert _status_of(f"Unavailable: {e.value}").startswith("n/a: llama_cpp cannot be imported")


@pytest.mark.parametrize("factory, kw", [("gpt2_lm", {}), ("llama_lm", dict(tie_word_embeddings=True)),
                                         ("qwen3_lm", dict(head_dim=32))])
def test_gguf_logits_match_hf(factory, kw, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (not an rt dependency)")
    pytest.importorskip("gguf")
    from rt.bench.gguf_export import write_gguf
    from rt.bench.llama_cpp_engine import LlamaCpp, logits_error
    from rt.testing import models
    wrapped, (prompt,) = getattr(models, factory)(n_layer=2, seq=24, vocab_size=97, **kw)
    write_gguf(wrapped.model, str(tmp_path / "m.gguf"))
    assert logits_error(LlamaCpp(str(tmp_path / "m.gguf"), 1), wrapped.model, prompt[0].tolist()) < 1e-3
