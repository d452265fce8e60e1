"""PyTorch's own OpInfo samples through rt end to end (rt.testing.opinfo): imported, run by the numpy
reference interpreter, then compiled and run in the C loop and op by op through the C kernels, each
against torch, each sample as exported (`python -m rt.frontend.coverage --opinfo` also runs every one
decomposed to the core ATen opset: ~0.7 s more per sample, for torch's run_decompositions). The counts are printed; every sample that fails (other than those whose right answer is
ambiguous: tie order, duplicate scatter indices) fails the test, and the samples rt refuses are counted
and listed by `python -m rt.testing.opinfo --list`, never hidden."""
from __future__ import annotations

import collections
import time

import pytest

pytest.importorskip("expecttest")

from rt.testing.opinfo import AMBIGUOUS, summary, sweep  # noqa: E402


def test_opinfo_sweep():
    t0 = time.perf_counter()
    results = sweep(core_samples=0)      # as exported; the coverage table also runs each decomposed to core ATen
    print("\n" + summary(results) + f" ({time.perf_counter() - t0:.0f} s)")
    bad = [r for r in results if r[2] in ("mismatch", "error", "c-mismatch", "c-error")
           and r[0].split(" ")[0].split(".")[0] not in AMBIGUOUS]
    for r in bad:
        print("  ", *r[:4])
    counts = collections.Counter(r[2] for r in results)
    assert counts["supported"] + counts["decomposed"] >= PASSING
    assert not bad, f"{len(bad)} samples fail: " + "; ".join(f"{r[0]}#{r[1]}: {r[3]}" for r in bad[:10])


PASSING = 575          # samples passing end to end, at least (580 when this was written)
