"""Models as their users call them, with no wrapper: HF models straight from their classes (the cache they
return left out, with a note), non-tensor arguments fixed at compile time, outputs in the model's own
structure (ModelOutput fields, named tuples, nesting), also from a saved model loaded with or without torch."""
import collections
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import rt
from rt.signature import DroppedOutputWarning, NamedOutputs
from rt.testing import models

from test_save_load import BLOCK_TORCH


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want.detach())
    return float(np.abs(got - want).max() / np.abs(want).max())


def _hf(name: str):
    """GPT2LMHeadModel or BertModel from its config class, random weights, as users build them."""
    import transformers
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=97, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)
        return models._build_hf(transformers.GPT2LMHeadModel, cfg, 0)
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=97, max_position_embeddings=32)
    return models._build_hf(transformers.BertModel, cfg, 0)


IDS = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(1))


def test_hf_causal_lm_as_it_comes_drops_its_cache_with_a_note():
    model = _hf("gpt2")
    with pytest.warns(DroppedOutputWarning, match=r"GPT2LMHeadModel's output \w+ \(a DynamicCache\) is left out"):
        compiled = rt.compile(model, (IDS,))
    with torch.no_grad():
        want = model(IDS)
    for got in (compiled(IDS), compiled.run_op_by_op(IDS)):
        assert type(got) is type(want) and list(got.keys()) == ["logits"]
        assert rel_err(got.logits, want.logits) <= 1e-4
    assert compiled.signature.dropped and "DynamicCache" in compiled.signature.dropped[0]


def test_non_tensor_keyword_arguments_are_fixed_at_compile_time(recwarn):
    model = _hf("gpt2")
    compiled = rt.compile(model, (IDS,), kwargs={"use_cache": False})
    assert not [w for w in recwarn if issubclass(w.category, DroppedOutputWarning)]   # nothing to drop
    assert compiled.signature.baked == {"use_cache": False} and compiled.input_names == ["input_ids"]
    with torch.no_grad():
        want = model(IDS, use_cache=False).logits
    assert rel_err(compiled(IDS, use_cache=False).logits, want) <= 1e-4   # called as the model is
    with pytest.raises(rt.InputError, match="'use_cache' was fixed to False when the model was compiled, got True"):
        compiled(IDS, use_cache=True)


def test_a_model_output_holding_a_tuple_keeps_it():
    model = _hf("gpt2")
    compiled = rt.compile(model, (IDS,), kwargs={"output_hidden_states": True, "use_cache": False})
    assert compiled.output_names == ["logits", "hidden_states.0", "hidden_states.1", "hidden_states.2"]
    got = compiled(IDS)
    with torch.no_grad():
        want = model(IDS, output_hidden_states=True, use_cache=False)
    assert isinstance(got.hidden_states, tuple) and len(got.hidden_states) == 3
    assert rel_err(got.hidden_states[1], want.hidden_states[1]) <= 1e-4


def test_asking_for_a_cache_is_refused_with_the_reason():
    with pytest.raises(rt.ExportError, match="returns a cache .* because it was asked for one; rt keeps no state"):
        rt.compile(_hf("gpt2"), (IDS,), kwargs={"use_cache": True})


class Structured(nn.Module):
    Pair = collections.namedtuple("Pair", "total diff")

    def forward(self, x, y, scale: float, mode: str = "sum"):
        assert mode == "sum"
        return self.Pair(x + y, x - y), {"scaled": [x * scale, None], "one": (y.relu(),)}


def test_outputs_keep_the_model_structure_and_fixed_positional_arguments():
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    model = Structured()
    compiled = rt.compile(model, (x, y, 2.5), kwargs={"mode": "sum"})
    want = model(x, y, 2.5)
    for got in (compiled(x, y), compiled(x, y, 2.5, mode="sum"), compiled.run_op_by_op(x, y)):
        pair, rest = got
        assert type(pair) is Structured.Pair and list(rest) == ["scaled", "one"]
        assert rest["scaled"][1] is None and isinstance(rest["one"], tuple) and len(rest["one"]) == 1
        torch.testing.assert_close(torch.as_tensor(pair.diff), want[0].diff)
        torch.testing.assert_close(torch.as_tensor(rest["scaled"][0]), want[1]["scaled"][0])
    assert compiled.output_names == ["0.total", "0.diff", "1.scaled.0", "1.one.0"]
    with pytest.raises(rt.InputError, match="'scale' was fixed to 2.5"):
        compiled(x, y, 3.0)


def test_a_one_tuple_stays_a_tuple():
    compiled = rt.compile(lambda_module(lambda x: (x * 2,)), (torch.ones(2),))
    assert isinstance(compiled(torch.ones(2)), tuple) and isinstance(compiled(np.ones(2, np.float32)), tuple)


def lambda_module(fn):
    class M(nn.Module):
        def forward(self, x):
            return fn(x)
    return M()


@pytest.fixture(scope="module")
def saved_bert(tmp_path_factory):
    model = _hf("bert")
    compiled = rt.compile(model, (IDS,), kwargs={"return_dict": True})
    path = str(tmp_path_factory.mktemp("bert") / "bert.rt")
    compiled.save(path)
    with torch.no_grad():
        want = model(IDS)
    return path, compiled, want


def test_bert_returns_its_model_output(saved_bert):
    path, compiled, want = saved_bert
    for got in (compiled(IDS), rt.load(path)(IDS)):           # transformers is imported here
        assert type(got) is type(want) and list(got.keys()) == ["last_hidden_state", "pooler_output"]
        assert rel_err(got.pooler_output, want.pooler_output) <= 1e-4


def test_loaded_without_torch_outputs_come_by_name(saved_bert, tmp_path):
    path, _, want = saved_bert
    np.save(tmp_path / "ids.npy", IDS.numpy())
    script = BLOCK_TORCH + f"""
import numpy as np, rt
m = rt.load({path!r})
out = m(np.load({str(tmp_path / 'ids.npy')!r}))
assert type(out).__name__ == "NamedOutputs" and repr(out).startswith("BaseModelOutputWithPoolingAndCrossAttentions(")
assert out.keys() == ("last_hidden_state", "pooler_output") and out[1] is out["pooler_output"] is out.pooler_output
np.save({str(tmp_path / 'pooled.npy')!r}, out.pooler_output)
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert rel_err(np.load(tmp_path / "pooled.npy"), want.pooler_output) <= 1e-4


def test_inspect_shows_fixed_arguments_and_output_names(saved_bert):
    r = subprocess.run([sys.executable, "-m", "rt.cli", "inspect", saved_bert[0]], capture_output=True, text=True,
                       check=True)
    assert "fixed arguments: return_dict=True" in r.stdout
    assert "outputs: last_hidden_state float32[2, 7, 32], pooler_output float32[2, 32]" in r.stdout


def test_named_outputs_behave_like_a_model_output():
    out = NamedOutputs("Out", ["a", "b"], [1, 2])
    assert (out.a, out["b"], out[0], out.to_tuple(), out.items()) == (1, 2, 1, (1, 2), [("a", 1), ("b", 2)])
    with pytest.raises(AttributeError, match="Out has no output 'c'; it has: a, b"):
        out.c


def test_a_saved_signature_that_does_not_fit_the_program_is_refused(saved_bert):
    from rt.serialize import _signature
    planned = saved_bert[1].planned
    good = saved_bert[1].signature.to_json()
    for bad, why in [({**good, "outputs": {"kind": "tensor"}}, "an output structure of 1 tensors for a program of 2"),
                     ({**good, "params": ["ids"]}, "are not the program's inputs"),
                     ({**good, "outputs": {"kind": "set"}}, "not an output node")]:
        with pytest.raises(rt.ModelFileError, match=why):
            _signature("m.rt", bad, planned)
