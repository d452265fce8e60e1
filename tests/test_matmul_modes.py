"""Which matmuls the compiled program runs through oneDNN (B packed once, or read in place) and which
through BLAS, on a real model with tied weights; and that each choice gives PyTorch's answer."""

import numpy as np
import pytest
import torch

import rt
from rt.kernels import HAVE_ONEDNN, MATMUL_B_MODES, SPLIT_FAST, op_codes
from rt.testing import models

pytestmark = pytest.mark.skipif(not HAVE_ONEDNN, reason="built without oneDNN (-Donednn=false)")
MODE_NAME = {v: k for k, v in MATMUL_B_MODES.items()}


def matmul_modes(compiled):
    """(mode, transpose_b) of every MATMUL record, and whether its B is the embedding's table."""
    recs = compiled._program.records
    table = recs[recs["code"] == op_codes()["EMBEDDING"]]["slot"][0, 0]
    mm = recs[recs["code"] == op_codes()["MATMUL"]]
    return [(MODE_NAME[int(r["ip"][19])], bool(r["ip"][6]), r["slot"][1] == table) for r in mm]


@pytest.mark.parametrize("seq", [1, 9])
def test_gpt2_lm_tied_head_and_embedding_share_one_table(seq):
    # a table above fold.BIG_VIEW elements: smaller views of constants are folded into copies
    model, (ids,) = models.gpt2_lm(n_layer=2, seq=seq, n_embd=64, n_head=4, vocab_size=1100, n_positions=32)
    compiled = rt.compile(model, (ids,))
    modes = matmul_modes(compiled)
    if seq == 1:      # one row: the small weights through BLAS mode (matvec.c's loops); the LM head
        # in the split form read as it arrives ([N, K]), or without it through gemv on a [K, N] copy
        head = [("split", True)] if SPLIT_FAST else [("blas", False)]
        assert [(m, tb) for m, tb, tied in modes if tied] == head
        assert {m for m, _, tied in modes if not tied} == {"blas"}
    else:             # the LM head shares the embedding table: read in place, never held twice
        assert [(m, tb) for m, tb, tied in modes if tied] == [("onednn", True)]
        assert {m for m, _, tied in modes if not tied} == {"packed"}
    with torch.no_grad():
        want = model(ids).numpy()
    got = compiled(ids.numpy())
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
