"""Dynamic sizes: one compile serves every size in range, through both executors, saved and loaded.

Sizes as polynomials (rt.dialects.symbolic), their IR text, and models compiled once with a dynamic
sequence length / batch and called at many sizes against PyTorch."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import rt
from rt.dialects.instantiate import instantiate
from rt.dialects.ir import TensorType
from rt.dialects.symbolic import Sym, SymbolicSizeError, exact_div, parse_size, size_ranges
from rt.dialects.text import parse_module, parse_type, print_module
from rt.lowering.plan import to_planned
from rt.testing import models
from test_save_load import BLOCK_TORCH

S, B = Sym.symbol("S"), Sym.symbol("B")


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max() / np.abs(want).max())


# ---- sizes ----------------------------------------------------------------------------------
def test_sizes_are_canonical_polynomials():
    assert S * 12 == 12 * S and (S + 1) * (S - 1) == S * S - 1
    assert (S * 64) - S * 64 == 0 and isinstance(S - S, int)
    assert exact_div(12 * B * S, B * S) == 12 and exact_div(S + 1, 2) is None
    assert (768 * S) // 768 == S
    with pytest.raises(SymbolicSizeError):
        (S + 63) // 64
    assert parse_size(str(3 * S * S - 2 * B + 5)) == 3 * S * S - 2 * B + 5


def test_comparisons_answer_only_what_holds_for_every_size():
    assert S >= 1 and S > 0 and not (S < 1)
    with pytest.raises(SymbolicSizeError):
        S > 1
    with pytest.raises(SymbolicSizeError):
        int(S)
    with size_ranges({"S": (1, 256)}):
        assert S <= 256 and min(S, 256) == S and not (S > 256)
        with pytest.raises(SymbolicSizeError):
            S < 256


def test_dynamic_types_and_ranges_round_trip_as_text():
    t = TensorType((1, S, 12 * S - 1))
    assert str(t) == "tensor<1x?(S)x?(12*S - 1)xf32>" and parse_type(str(t)) == t
    text = ("module @m(%x: tensor<?(B)x?(S)xf32>) -> (tensor<?(B)x?(S)xf32>) where B in [1, 8], S in [2, 64] {\n"
            "  %0 = fused.relu %x : tensor<?(B)x?(S)xf32>\n  return %0\n}\n")
    m = parse_module(text)
    assert m.meta["symbols"] == {"B": (1, 8), "S": (2, 64)} and print_module(m) == text


# ---- models ----------------------------------------------------------------------------------
GPT2_SIZES = (1, 2, 7, 64, 300, 1024)


@pytest.fixture(scope="module")
def gpt2():
    model, (ids,) = models.gpt2_body(n_layer=2, seq=16, n_embd=64, n_head=4, vocab_size=500)
    return model, rt.compile(model, (ids,), dynamic={"input_ids": {1: ("S", 1, 1024)}})


@pytest.mark.parametrize("seq", GPT2_SIZES)
def test_gpt2_compiled_once_matches_torch_at_every_length(gpt2, seq):
    model, compiled = gpt2
    ids = torch.randint(0, 500, (1, seq), generator=torch.Generator().manual_seed(seq))
    with torch.no_grad():
        want = model(ids).numpy()
    assert rel_err(compiled(ids.numpy()), want) <= 1e-4
    if seq <= 64:       # the debugging executors instantiate the plan at the size
        assert rel_err(compiled.run_op_by_op(ids.numpy(), kernels="c"), want) <= 1e-4
        assert rel_err(compiled.run_op_by_op(ids.numpy(), kernels="numpy"), want) <= 1e-4


def test_gpt2_dynamic_ir_names_the_symbol_and_its_range(gpt2):
    _, compiled = gpt2
    for stage in ("torch", "fused", "planned"):
        text = compiled.ir(stage)
        assert "where S in [1, 1024]" in text and "tensor<1x?(S)x64xf32>" in text
        assert print_module(parse_module(text)) == text


def test_a_size_out_of_range_or_inconsistent_is_an_input_error(gpt2):
    _, compiled = gpt2
    with pytest.raises(rt.InputError, match=r"input 'input_ids' dim 1 is 1025; its dynamic size S takes 1\.\.1024"):
        compiled(np.zeros((1, 1025), np.int64))
    with pytest.raises(rt.InputError, match="input 'input_ids' has shape"):
        compiled(np.zeros((2, 8), np.int64))


def test_arena_at_the_bound_equals_a_static_plan_there(gpt2):
    model, compiled = gpt2
    static = rt.compile(model, (torch.zeros(1, 1024, dtype=torch.long),))
    dyn, stat = compiled.plan_report(), static.plan_report()
    assert dyn["arena_bytes"] <= 1.05 * stat["arena_bytes"]



def test_binding_a_size_rewrites_only_size_fields_and_is_checked_again(gpt2):
    """Program.bound_to_sizes writes only ip / offset words, keeps constants' sizes and the planned
    arena, and its records pass the C check again: a bad binding is refused, never run."""
    _, compiled = gpt2
    prog = compiled._program
    values, slot_nbytes, _ = prog.binder.bind({"S": 7})
    bound = prog.program.bound_to_sizes(prog.binder.words, values, slot_nbytes)
    ids = np.arange(7, dtype=np.int64)[None]
    assert np.array_equal(compiled(ids), compiled(ids))         # the cached binding runs as well
    assert bound.records["code"].tolist() == prog.program.records["code"].tolist()
    code_word = np.array([0], np.intp)                           # word 0 holds an op's code and nargs
    with pytest.raises(rt.ProgramError, match="not an op's size field"):
        prog.program.bound_to_sizes(code_word, np.array([5]), slot_nbytes)
    with pytest.raises(rt.ProgramError, match="more than the"):
        prog.program.bound_to_sizes(prog.binder.words, values, np.r_[slot_nbytes[:1] * 2, slot_nbytes[1:]])
    const = next(iter(prog.layout.constants))
    grown = slot_nbytes.copy()
    grown[const] += 4
    with pytest.raises(rt.ProgramError, match="changes size"):
        prog.program.bound_to_sizes(prog.binder.words, values, grown)
    too_far = np.full_like(values, 1 << 40)                      # sizes past the planned buffers
    with pytest.raises(rt.ProgramError, match="op #"):
        prog.program.bound_to_sizes(prog.binder.words, too_far, slot_nbytes)
    with pytest.raises(rt.ProgramError, match="largest sizes"):
        bound.bound_to_sizes(prog.binder.words, values, slot_nbytes)

@pytest.mark.parametrize("seq", [1, 2, 513, 1024])
def test_planned_storages_never_overlap_at_any_size(gpt2, seq):
    """At each size, every arena value lies inside its planned slot (which is planned at the bound),
    so the bound's non-overlap holds at every size."""
    _, compiled = gpt2
    planned = compiled.stages["planned"]
    at = instantiate(planned, {"S": seq})
    for big, small in zip(planned.ops, at.ops):
        st = small.result.storage
        if st.kind == "arena":
            assert small.result.type.nbytes <= st.size == big.result.storage.size


def test_saved_dynamic_model_runs_any_size_in_range_without_torch(gpt2, tmp_path):
    model, compiled = gpt2
    path = str(tmp_path / "gpt2_dyn.rt")
    compiled.save(path)
    sizes = (3, 129)
    for seq in sizes:
        np.save(tmp_path / f"x{seq}.npy", torch.randint(0, 500, (1, seq)).numpy())
    script = BLOCK_TORCH + f"""
import numpy as np, rt
m = rt.load({path!r})
for seq in {sizes!r}:
    np.save({str(tmp_path)!r} + f"/y{{seq}}.npy", m(np.load({str(tmp_path)!r} + f"/x{{seq}}.npy")))
try:
    m(np.zeros((1, 1025), np.int64))
except rt.InputError as e:
    print(e)
assert "torch" not in sys.modules
"""
    r = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert "its dynamic size S takes 1..1024" in r.stdout
    for seq in sizes:
        with torch.no_grad():
            want = model(torch.from_numpy(np.load(tmp_path / f"x{seq}.npy"))).numpy()
        assert rel_err(np.load(tmp_path / f"y{seq}.npy"), want) <= 1e-4


def test_bert_with_dynamic_batch_and_length():
    model, (ids, mask) = models.bert(n_layer=2, seq=16, batch=2)
    compiled = rt.compile(model, (ids, mask), dynamic={"input_ids": {0: ("B", 1, 8), 1: ("S", 1, 128)},
                                                       "attention_mask": {0: ("B", 1, 8), 1: ("S", 1, 128)}})
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 1), (3, 7), (8, 64), (2, 128)):
        ids = torch.from_numpy(rng.integers(0, 1000, (batch, seq)))
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1:, seq - seq // 4:] = 0
        with torch.no_grad():
            want = model(ids, mask).numpy()
        assert rel_err(compiled(ids, mask), want) <= 1e-4, (batch, seq)


def test_random_sizes_match_torch(gpt2):
    """A property test over random lengths (fixed seed)."""
    model, compiled = gpt2
    rng = np.random.default_rng(7)
    for seq in rng.integers(1, 1025, 6):
        ids = torch.from_numpy(rng.integers(0, 500, (1, int(seq))))
        with torch.no_grad():
            want = model(ids).numpy()
        assert rel_err(compiled(ids.numpy()), want) <= 1e-4, seq


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_llama_family_compiled_once_matches_torch(family):
    """Rotary tables and (sliding-window) causal masks fold once at the largest size; a causal one
    becomes the kernel's causal flag."""
    model, (ids,) = models.causal_lm(family, n_layer=2, seq=16, max_positions=512)
    compiled = rt.compile(model, (ids,), dynamic={"input_ids": {1: ("S", 1, 512)}})
    attn = [op for op in compiled.stages["fused"].ops if op.name == "fused.attention"]
    assert len(attn) == 2 and all(bool(op.attrs.get("causal")) == (family == "llama") for op in attn)
    for seq in (1, 2, 7, 64, 300):
        ids = torch.randint(0, 256, (1, seq), generator=torch.Generator().manual_seed(seq))
        with torch.no_grad():
            want = model(ids).numpy()
        assert rel_err(compiled(ids), want) <= 1e-4, seq


def test_gpt2_lm_head_dynamic():
    model, (ids,) = models.gpt2_lm(n_layer=2, seq=8, n_embd=64, n_head=4, vocab_size=500)
    compiled = rt.compile(model, (ids,), dynamic={"input_ids": {1: (1, 64)}})
    assert "where input_ids_1 in [1, 64]" in compiled.ir("planned")
    for seq in (1, 5, 64):
        ids = torch.randint(0, 500, (1, seq))
        with torch.no_grad():
            want = model(ids).numpy()
        assert rel_err(compiled(ids), want) <= 1e-4, seq


def test_unbounded_dims_and_unknown_inputs_are_refused_clearly():
    model, (ids,) = models.gpt2_body(n_layer=1, seq=8, n_embd=32, n_head=2, vocab_size=100, n_positions=64)
    with pytest.raises(rt.ExportError, match="has no upper bound: give it a max"):
        rt.compile(model, (ids,), dynamic_shapes={"input_ids": {1: torch.export.Dim.AUTO}})
    with pytest.raises(rt.UsageError, match="dynamic names input"):
        rt.compile(model, (ids,), dynamic={"ids": {1: (1, 64)}})
    with pytest.raises(rt.LoweringError, match="lower its max"):      # 65 positions do not exist
        rt.compile(model, (ids,), dynamic={"input_ids": {1: (1, 65)}})


def test_more_row_counts_than_a_matmul_keeps_primitives_for(gpt2):
    """Past the row shapes a oneDNN matmul keeps (32), each run makes and drops its own: still right."""
    model, compiled = gpt2
    for seq in range(80, 120):
        ids = torch.randint(0, 500, (1, seq), generator=torch.Generator().manual_seed(seq))
        with torch.no_grad():
            want = model(ids).numpy()
        assert rel_err(compiled(ids.numpy()), want) <= 1e-4, seq
    again = torch.randint(0, 500, (1, 81))
    with torch.no_grad():
        assert rel_err(compiled(again.numpy()), model(again).numpy()) <= 1e-4


def test_a_range_the_model_cannot_take_is_refused_with_torchs_suggestion():
    class Positions(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("pos", torch.randn(64, 8))

        def forward(self, x):
            return x + self.pos[: x.shape[1]]

    with pytest.raises(rt.ExportError, match=r"(?s)max=64.*allow only part of the dynamic range"):
        rt.compile(Positions(), (torch.randn(1, 16, 8),), dynamic={"x": {1: ("S", 1, 128)}})


def test_command_line_runs_a_dynamic_model_at_any_size(gpt2, tmp_path):
    _, compiled = gpt2
    path = str(tmp_path / "g.rt")
    compiled.save(path)
    cli = [sys.executable, "-m", "rt.cli"]
    r = subprocess.run(cli + ["inspect", path], capture_output=True, text=True, check=True)
    assert "dynamic sizes: S in 1..1024" in r.stdout and "input_ids int64[1, S]" in r.stdout
    for seq in (2, 33):
        np.save(tmp_path / "x.npy", np.zeros((1, seq), np.int64))
        r = subprocess.run(cli + ["run", path, "--input", str(tmp_path / "x.npy")], capture_output=True, text=True)
        assert r.returncode == 0 and f"float32[1, {seq}, 64]" in r.stdout, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 2000), np.int64))
    r = subprocess.run(cli + ["run", path, "--input", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert r.returncode == 3 and r.stderr.strip().count("\n") == 0 and "S takes 1..1024" in r.stderr


def test_a_graph_that_does_not_hold_at_size_1_takes_sizes_from_2():
    """torch.export traces a dynamic dim as never 1 (the squeeze stays in the graph) but reports the
    range from 1: rt re-infers every op at 1, and narrows the range rather than answer wrongly."""
    class Squeeze(torch.nn.Module):
        def forward(self, x):
            return x.squeeze(1) * 2

    with pytest.warns(UserWarning, match="does not hold at size 1"):
        compiled = rt.compile(Squeeze(), (torch.randn(3, 16, 8),), dynamic={"x": {1: ("S", 1, 64)}})
    x = torch.randn(3, 5, 8)
    assert torch.equal(compiled(x), x * 2)
    with pytest.raises(rt.InputError, match="S takes 2..64"):
        compiled(torch.randn(3, 1, 8))


def test_a_decomposition_never_pins_a_dynamic_size():
    class Glu(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.glu(x, -1)

    with pytest.raises(rt.UnsupportedOpError, match="traced at fixed sizes only"):
        rt.compile(Glu(), (torch.randn(2, 16, 8),), dynamic={"x": {1: ("S", 1, 64)}})


def test_unfused_attention_scores_with_a_dynamic_length():
    """q @ k^T reads k transposed with a dynamic row count (a position-biased attention, T5-style)."""
    class Scores(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.randn(4, 64, 64))

        def forward(self, q, k):
            s = q @ k.transpose(-1, -2)
            n = q.shape[1]
            return torch.softmax(s + self.bias[:, :n, :n], -1)

    model = Scores().eval()
    spec = {"q": {1: ("S", 1, 63)}, "k": {1: ("S", 1, 63)}}      # a slice up to 64 would be a no-op
    compiled = rt.compile(model, (torch.randn(4, 16, 8), torch.randn(4, 16, 8)), dynamic=spec)
    for n in (1, 9, 63):
        q, k = torch.randn(4, n, 8), torch.randn(4, n, 8)
        with torch.no_grad():
            assert rel_err(compiled(q, k), model(q, k)) <= 1e-4, n


def test_ratios_and_floats_of_dynamic_sizes_are_size_errors():
    for ask in (lambda: S / 2, lambda: 2 / S, lambda: float(S)):
        with pytest.raises(SymbolicSizeError):
            ask()
