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
    from rt.bench.cases import DECODE_ENGINES, QUANT_ENGINES, select
    decode = select(["decode_"], quick=False)
    assert {c.name for c in decode} == {"decode_gpt2_c128", "decode_smollm2_c128", "decode_qwen3_c128",
                                        "decode_gpt2_c1024", "decode_smollm2_c1024"}
    assert all(c.engines == DECODE_ENGINES + (QUANT_ENGINES if c.name.endswith("_c128") else ()) for c in decode)
    assert not any(c.decode for c in select(None, quick=True))
    assert "smoke_llama_gen" not in {c.name for c in select(None, quick=False)}


def test_quantized_engine_names():
    from rt.bench.cases import ENGINES, engine_spec, rt_peer
    assert engine_spec("rt-int4") == ("rt", "int4") and engine_spec("llama.cpp-q8_0") == ("llama.cpp", "q8_0")
    assert engine_spec("ort-genai-int4") == ("ort-genai", "int4") and engine_spec("llama.cpp") == ("llama.cpp", None)
    assert {"rt-bf16", "rt-int8", "rt-int4", "llama.cpp-q8_0", "llama.cpp-q4_0"} <= set(ENGINES)
    assert [rt_peer(e) for e in ("eager", "rt-int8", "llama.cpp-q8_0", "llama.cpp-q4_0", "llama.cpp")] == \
        ["rt", "rt-int8", "rt-int8", "rt-int4", "rt"]


def test_logits_error_metric():
    import numpy as np
    from rt.bench.decode import error_ids, logits_error
    want = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, -1.0]])
    got = want + np.array([[0.0, 0.0, 0.4], [0.0, 3.5, 0.0]])
    e = logits_error(got, want)
    assert e["max_rel_err"] == pytest.approx(3.5 / 4)
    assert e["mean_rel_l2_err"] == pytest.approx((0.4 / np.sqrt(21) + 3.5 / np.sqrt(10)) / 2)
    assert (e["argmax_match"], e["error_positions"]) == (1, 2)
    assert error_ids(97) == error_ids(97) and len(error_ids(97)) == 128 and max(error_ids(97)) < 97


def test_decode_report_prints_the_errors():
    from rt.bench.decode_report import engine_line
    r = {"status": "ok", "median_s": 0.02, "min_s": 0.019, "max_s": 0.03, "prefill_median_s": 0.1,
         "max_rel_err": 3e-3, "info": {"mean_rel_l2_err": 8e-3, "argmax_match": 120, "error_positions": 128,
                                       "greedy_tokens_matching_hf": 7, "greedy_tokens": 33, "weight_bytes": 10}}
    line = engine_line({"case": "c"}, "llama.cpp-q8_0", r)
    assert "3e-03" in line and "8e-03" in line and "120/128" in line and "7/33" in line


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


def test_rt_decode_engine_matches_hf():
    from rt.bench import decode
    model, prompt = _tiny_gpt2()
    session, info = decode.prepare_rt(model, prompt, 3, 1, "")
    assert info["max_rel_err"] < 1e-5 and info["argmax_match"] == info["error_positions"] == 16   # the context
    out = session()
    assert set(out) >= {"prefill_s", "decode_s_per_token", "step_s"} and len(out["step_s"]) == 3
    assert decode.greedy_match(out["tokens"], decode.hf_greedy(model, prompt, 4)) == \
        {"greedy_tokens_matching_hf": 4, "greedy_tokens": 4}


def test_rt_weights_refused_is_not_applicable(monkeypatch):
    import rt
    from rt.bench import decode
    from rt.errors import UsageError
    model, prompt = _tiny_gpt2()
    monkeypatch.setattr(rt, "compile_generator", lambda model, max_context=None: None)
    with pytest.raises(decode.Unavailable, match="takes no weights="):
        decode.prepare_rt(model, prompt, 3, 1, "", weights="int4")

    def refuse(model, max_context=None, weights=None):
        raise UsageError(f"no {weights} here")
    monkeypatch.setattr(rt, "compile_generator", refuse)
    with pytest.raises(decode.Unavailable, match="rt refuses weights='int8': no int8 here"):
        decode.prepare_rt(model, prompt, 3, 1, "", weights="int8")


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
    from rt.bench.decode import check_logits
    from rt.bench.gguf_export import write_gguf
    from rt.bench.llama_cpp_engine import LlamaCpp
    from rt.testing import models
    wrapped, (prompt,) = getattr(models, factory)(n_layer=2, seq=24, vocab_size=97, **kw)
    write_gguf(wrapped.model, str(tmp_path / "m.gguf"))
    err = check_logits(LlamaCpp(str(tmp_path / "m.gguf"), 1).position_logits, wrapped.model, 256)
    assert err["max_rel_err"] < 1e-3 and err["error_positions"] == 128 and err["argmax_match"] == 128


def test_llama_cpp_quantized_engines(tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (not an rt dependency)")
    pytest.importorskip("gguf")
    from rt.bench import llama_cpp_engine
    from rt.testing import models
    wrapped, (prompt,) = models.llama_lm(n_layer=2, seq=12, tie_word_embeddings=True)
    errors = {}
    for fmt in ("q8_0", "q4_0"):
        (tmp_path / fmt).mkdir()
        session, info = llama_cpp_engine.prepare(wrapped.model, prompt, 3, 1, str(tmp_path / fmt), weights=fmt)
        assert info["tensor_types"]["attn_q.weight"] == fmt.upper() and info["tensor_types"]["attn_norm.weight"] == "F32"
        assert info["weight_bytes"] < info["f32_gguf_bytes"] / 3 and "repack" in info
        assert len(session()["tokens"]) == 4
        errors[fmt] = info["mean_rel_l2_err"]
    assert 0 < errors["q8_0"] < 0.03 and errors["q8_0"] < errors["q4_0"] < 0.3


def test_ort_genai_int4_engine(tmp_path):
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (not an rt dependency)")
    from rt.bench import ort_genai_engine
    from rt.testing import models
    wrapped, (prompt,) = models.llama_lm(n_layer=2, seq=12, tie_word_embeddings=True)
    session, info = ort_genai_engine.prepare(wrapped.model, prompt, 3, 1, str(tmp_path), weights="int4")
    assert info["quantization"]["matmulnbits"] and 0 < info["mean_rel_l2_err"] < 0.3
    assert len(session()["tokens"]) == 4


def test_decode_harness_runs_the_quantized_engines(tmp_path):
    out = tmp_path / "d.json"
    r = subprocess.run([sys.executable, "-m", "rt.cli", "bench", "--cases", "smoke_llama_gen", "--engines", "rt-int4",
                        "llama.cpp-q4_0", "--rounds", "1", "--round-seconds", "0.05", "--quiet-wait", "0",
                        "--threads", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    engines = json.loads(out.read_text())["results"][0]["engines"]
    assert list(engines) == ["rt-int4", "llama.cpp-q4_0"]
    for name, e in engines.items():     # each runs, or says why it cannot here
        assert e["status"] == "ok" or e["status"].startswith("n/a"), (name, e["status"])
        if e["status"] == "ok":
            assert e["info"]["error_positions"] == 29 and "mean_rel_l2_err" in e["info"]
