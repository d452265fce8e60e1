"""Which matmuls the compiled program runs through oneDNN (B packed once, or read in place) and which
through BLAS, on a real model with tied weights; and that each choice gives PyTorch's answer."""

import numpy as np
import pytest
import torch

import rt
from rt.kernels import HAVE_ONEDNN, MATMUL_B_MODES, op_codes
from rt.testing import models

pytestmark = pytest.mark.skipif(not HAVE_ONEDNN, reason="built without oneDNN (-Donednn=false)")
MODE_NAME = {v: k for k, v in MATMUL_B_MODES.items()}


def matmul_modes(compiled):
    """(mode, N) of every MATMUL record, and whether its B is the embedding table."""
    program = compiled._program
    recs = program.records
    table = program.layout.const_slot["model.lm_head.weight"]     # what export names the tied table
    mm = recs[recs["code"] == op_codes()["MATMUL"]]
    return [(MODE_NAME[int(r["ip"][19])], int(r["ip"][3]), int(r["slot"][1]) == table) for r in mm]


@pytest.mark.parametrize("seq", [1, 9])
def test_gpt2_lm_tied_head_reads_its_table_in_place(seq):
    model, (ids,) = models.gpt2_lm(n_layer=2, seq=seq, n_embd=64, n_head=4, vocab_size=300, n_positions=32)
    compiled = rt.compile(model, (ids,))
    modes = matmul_modes(compiled)
    if seq == 1:      # one row: bandwidth-bound gemv through BLAS, nothing copied
        assert {m for m, _, _ in modes} == {"blas"}
    else:             # the LM head shares the embedding table: read in place, never held twice
        assert [m for m, _, tied in modes if tied] == ["onednn"]
        assert {m for m, _, tied in modes if not tied} == {"packed"}
    with torch.no_grad():
        want = model(ids).numpy()
    got = compiled(ids.numpy())
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
