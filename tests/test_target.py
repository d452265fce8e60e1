"""The compile target as a value: recorded in the planned IR's meta and the saved file, shown by
`rt inspect`, and decided again for the machine a file is loaded on."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import rt
from rt.kernels import HAVE_ONEDNN, SPLIT_FAST, get_num_threads
from rt.target import TargetChangedWarning
from rt.testing import models

PLAIN = rt.Target(frozenset({"sse4.2"}), onednn=False, threads=1)


def test_host_target_describes_this_machine():
    host = rt.Target.host()
    assert host.threads == get_num_threads()
    assert host.onednn == HAVE_ONEDNN
    assert host.split_form == SPLIT_FAST
    assert rt.Target.from_dict(host.to_dict()) == host


def test_bad_targets_are_refused():
    with pytest.raises(rt.UsageError, match="unknown CPU feature"):
        rt.Target(frozenset({"avx9000"}))
    with pytest.raises(rt.UsageError, match="at least one thread"):
        rt.Target(threads=0)


@pytest.mark.skipif(not (SPLIT_FAST and HAVE_ONEDNN), reason="needs AVX-512 and oneDNN here")
def test_a_file_compiled_for_another_machine_is_decided_again_here(tmp_path):
    model, (ids,) = models.gpt2_lm(n_layer=1, seq=1, n_embd=64, n_head=4, vocab_size=1100, n_positions=32)
    compiled = rt.compile(model, (ids,), target=PLAIN)
    assert {k["mode"] for k in compiled.kernel_plan() if k["kernel"] == "MATMUL"} <= {"blas", "small"}
    path = tmp_path / "m.rt"
    compiled.save(str(path))
    with pytest.warns(TargetChangedWarning, match="split weight form available"):
        loaded = rt.load(str(path))
    assert loaded.target == PLAIN and loaded.run_target == rt.Target.host()
    assert "split" in {k["mode"] for k in loaded.kernel_plan() if k["kernel"] == "MATMUL"}
    with torch.no_grad():
        want = model(ids).numpy()
    assert np.abs(loaded(ids.numpy()) - want).max() <= 1e-4 * np.abs(want).max()

    r = subprocess.run([sys.executable, "-m", "rt.cli", "inspect", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "target: compiled for x86-64-v2, no oneDNN, 1 thread; here: split weight form available" in r.stdout
    assert "MATMUL[split]" in r.stdout


def test_a_file_loaded_where_it_was_compiled_says_nothing(tmp_path):
    m = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU()).eval()
    path = tmp_path / "m.rt"
    rt.compile(m, (torch.randn(2, 16),)).save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TargetChangedWarning)
        loaded = rt.load(str(path))
    assert loaded.target == rt.Target.host() and loaded.target_changes() == []
