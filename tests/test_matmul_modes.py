"""How each matmul reads its B, as the public per-op summary (`CompiledModel.kernel_plan()`) reports it:
every mode (BLAS, oneDNN packed, oneDNN in place, split, small) on a real model, chosen from the target,
and each choice giving PyTorch's answer."""

import numpy as np
import pytest
import torch

import rt
from rt.kernels import HAVE_ONEDNN, SPLIT_FAST
from rt.testing import models

needs_onednn = pytest.mark.skipif(not HAVE_ONEDNN, reason="built without oneDNN (-Donednn=false)")
needs_split = pytest.mark.skipif(not SPLIT_FAST, reason="this CPU has no AVX-512 split decoder")


def matmuls(compiled):
    """(mode, B layout, B shared with another op) of every MATMUL as it runs."""
    return [(k["mode"], k["b_layout"], k["b_shared"]) for k in compiled.kernel_plan() if k["kernel"] == "MATMUL"]


def assert_matches_torch(model, compiled, *args):
    with torch.no_grad():
        want = model(*args).numpy()
    got = compiled(*(a.numpy() for a in args))
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def tied_lm(seq):
    # a table above fold.BIG_VIEW elements: smaller views of constants are folded into copies
    return models.gpt2_lm(n_layer=2, seq=seq, n_embd=64, n_head=4, vocab_size=1100, n_positions=32)


@needs_onednn
def test_several_rows_pack_weights_for_onednn_but_read_a_tied_table_in_place():
    model, (ids,) = tied_lm(9)
    compiled = rt.compile(model, (ids,))
    modes = matmuls(compiled)
    assert [m for m in modes if m[2]] == [("onednn", "[N, K]", True)]     # the LM head: never held twice
    assert {m for m, _, shared in modes if not shared} == {"packed"}
    assert_matches_torch(model, compiled, ids)


@needs_split
def test_one_row_reads_big_weights_in_the_split_form_and_small_ones_with_rts_loops():
    model, (ids,) = tied_lm(1)
    compiled = rt.compile(model, (ids,))
    modes = matmuls(compiled)
    assert [m for m in modes if m[2]] == [("split", "[N, K]", True)]      # LM head 1100x64 read as it arrives
    assert {m for m, _, shared in modes if not shared} == {"small"}      # 64x64 .. 64x256 weights
    assert_matches_torch(model, compiled, ids)


def test_a_target_without_avx512_or_onednn_runs_everything_on_blas_or_small_loops():
    """The target decides: compiled for a plain x86-64 target without oneDNN, the same model's big
    one-row product is on BLAS (its weight laid out [K, N] for gemv) and several-row ones too."""
    plain = rt.Target(frozenset({"sse4.2"}), onednn=False, threads=1)
    for seq, big in ((1, "[K, N]"), (9, "[N, K]")):
        model, (ids,) = tied_lm(seq)
        compiled = rt.compile(model, (ids,), target=plain)
        head = [m for m in matmuls(compiled) if m[2]]
        assert head == [("blas", big, True)]
        assert compiled.target == plain
        assert_matches_torch(model, compiled, ids)


def test_blas_for_products_of_two_activations():
    """Attention-free batched products of two inputs (no constant B) stay on BLAS."""
    class Bmm(torch.nn.Module):
        def forward(self, a, b):
            return a @ b
    a, b = torch.randn(3, 5, 7), torch.randn(3, 7, 4)
    compiled = rt.compile(Bmm(), (a, b))
    assert [m[0] for m in matmuls(compiled)] == ["blas"]
    assert_matches_torch(Bmm(), compiled, a, b)


@needs_split
def test_split_weights_the_form_cannot_hold_run_on_blas_and_say_so():
    """Weights spanning far more binades than the split form's window fall back to BLAS when the
    program is built: the summary reports the mode that runs, and the answer is right."""
    rng = np.random.default_rng(4)
    w = (rng.choice([-1, 1], (256, 512)) * 10.0 ** rng.uniform(-30, 30, (256, 512))).astype(np.float32)
    lin = torch.nn.Linear(512, 256, bias=False).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w))
    x = torch.randn(1, 512)
    compiled = rt.compile(lin, (x,))
    assert matmuls(compiled) == [("blas", "[N, K]", False)]
    assert_matches_torch(lin, compiled, x)
