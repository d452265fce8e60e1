"""PyTorch's own OpInfo samples through the frontend: each float32 sample is wrapped in a module, exported,
imported to the torch dialect (with the decomposition fallback) and run by the numpy reference
interpreter, against torch's own output (max abs error <= 1e-4 * max(1, output scale); exact for
integer and bool outputs, the same NaN/inf positions).

The test sweeps a fixed subset (the first sample of every OpInfo, plus the second of the ops whose name
is a core ATen op) and prints the counts; `python tests/test_frontend_opinfo.py [--per-op N] [--list]`
runs the whole database and lists every sample that does not pass. Samples that cannot pass by design
(random ops, uninitialised memory, complex or other dtypes rt lacks, data-dependent shapes) are counted
apart, never hidden.
"""
from __future__ import annotations

import collections
import sys
import time
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("expecttest")

from rt.errors import ExportError, UnsupportedOpError  # noqa: E402
from rt.frontend import import_program  # noqa: E402
from rt.interpreter import run_reference  # noqa: E402

TOL = 1e-4
# OpInfos whose samples have no single right answer: random draws, uninitialised memory
RANDOM = ("rand", "normal", "bernoulli", "multinomial", "uniform", "cauchy", "exponential", "geometric",
          "log_normal", "dropout", "rrelu", "poisson")
UNINITIALISED = ("empty", "new_empty", "empty_like", "empty_strided", "empty_permuted", "new_empty_strided")
# torch picks one of several valid answers here (duplicate scatter indices, tie order)
AMBIGUOUS = {"index_put", "put", "index_copy", "scatter", "scatter_reduce", "index_reduce", "_unsafe_masked_index_put_accumulate",
             "sort", "argsort", "msort", "topk", "kthvalue", "mode", "median", "nanmedian", "unique", "unique_consecutive"}


class Sample(torch.nn.Module):
    """One OpInfo sample as a module: the sample's tensors are the inputs, everything else is baked in."""

    def __init__(self, fn, spec, consts):
        super().__init__()
        self.fn, self.spec, self.consts = fn, spec, consts

    def forward(self, *tensors):
        it = iter(tensors)
        leaves = [next(it) if c is _TENSOR else c for c in self.consts]
        inp, args, kwargs = torch.utils._pytree.tree_unflatten(leaves, self.spec)
        return self.fn(inp, *args, **kwargs)


_TENSOR = object()


def wrap(opinfo, sample):
    leaves, spec = torch.utils._pytree.tree_flatten((sample.input, sample.args, sample.kwargs))
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    consts = [_TENSOR if isinstance(x, torch.Tensor) else x for x in leaves]
    return Sample(opinfo.op, spec, consts).eval(), tuple(t.detach().clone() for t in tensors)


def _flat_outputs(out):
    leaves, _ = torch.utils._pytree.tree_flatten(out)
    return leaves


def compare(got: list[np.ndarray], want: list, shapes_only: bool = False) -> str | None:
    """None when rt's outputs match torch's, else what differs."""
    if len(got) != len(want):
        return f"{len(got)} outputs, torch gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        w = w.detach().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
        g = np.asarray(g)
        if g.shape != w.shape or g.dtype != w.dtype:
            return f"output {i}: {g.dtype}{list(g.shape)}, torch gives {w.dtype}{list(w.shape)}"
        if shapes_only or w.size == 0:
            continue
        if w.dtype.kind != "f":
            if not np.array_equal(g, w):
                return f"output {i}: {int((g != w).sum())} of {w.size} elements differ"
            continue
        fin = np.isfinite(w)
        if not np.array_equal(np.isnan(g), np.isnan(w)) or not np.array_equal(g[np.isinf(w)], w[np.isinf(w)]):
            return f"output {i}: nan/inf positions differ"
        if not fin.any():
            continue
        scale = max(1.0, float(np.abs(w[fin]).max()))
        err = float(np.abs(g[fin].astype(np.float64) - w[fin]).max()) if np.isfinite(g[fin]).all() else np.inf
        if err > TOL * scale:
            return f"output {i}: max abs error {err:.3g} > {TOL} * {scale:.3g}"
    return None


def run_sample(opinfo, sample) -> tuple[str, str]:
    """(status, detail). status: 'export' (torch.export refused the wrapper: not counted), 'dtype'
    (a dtype rt lacks), 'unsupported', 'supported' / 'decomposed' (passed, with or without the
    decomposition fallback), 'mismatch', 'error'."""
    model, tensors = wrap(opinfo, sample)
    if any(t.dtype not in (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool) for t in tensors):
        return "dtype", "an input dtype rt lacks"
    try:
        with torch.no_grad():
            want = _flat_outputs(model(*[t.clone() for t in tensors]))
        if not want or not all(isinstance(w, torch.Tensor) for w in want):
            return "export", "not a tensor function"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(model, tensors)
    except Exception as e:
        return "export", f"{type(e).__name__}: {str(e)[:80]}"
    try:
        module = import_program(ep)
    except UnsupportedOpError as e:
        return "unsupported", ", ".join(sorted({u[0] for u in e.unsupported}))
    except ExportError as e:
        return "dtype", str(e)[:100]
    except Exception as e:
        return "error", f"import: {type(e).__name__}: {str(e)[:200]}"
    if any(w.dtype not in (torch.float32, torch.float64, torch.int64, torch.int32, torch.bool) for w in want):
        return "dtype", "an output dtype rt lacks"
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            got = run_reference(module, [t.numpy() for t in tensors])
    except Exception as e:
        return "error", f"reference: {type(e).__name__}: {str(e)[:200]}"
    uninit = opinfo.name.split(".")[0] in UNINITIALISED
    diff = compare(got, want, shapes_only=uninit)
    if diff is not None:
        return "mismatch", diff
    return ("decomposed" if module.meta.get("decomposed") else "supported"), ", ".join(module.meta.get("decomposed", []))


def _core_names() -> set[str]:
    names = set()
    for name in dir(torch.ops.aten):
        packet = getattr(torch.ops.aten, name, None)
        if isinstance(packet, torch._ops.OpOverloadPacket):
            for over in packet.overloads():
                if torch.Tag.core in getattr(packet, over).tags:
                    names.add(name)
                    break
    return names


def selected(per_op: int | None = None):
    """(opinfo, sample index, sample) of the sweep: float32 samples, random ops left out."""
    from torch.testing._internal.common_methods_invocations import op_db
    core = _core_names()
    for opinfo in op_db:
        if any(r in opinfo.name for r in RANDOM) or torch.float32 not in opinfo.supported_dtypes("cpu"):
            continue
        n = per_op if per_op is not None else (2 if opinfo.name.split(".")[0] in core else 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gen = opinfo.sample_inputs("cpu", torch.float32, requires_grad=False)
                samples = [s for _, s in zip(range(n), gen)]
        except Exception:
            continue
        for i, s in enumerate(samples):
            yield opinfo, i, s


def sweep(per_op: int | None = None):
    torch.manual_seed(0)
    results = []
    for opinfo, i, sample in selected(per_op):
        status, detail = run_sample(opinfo, sample)
        name = opinfo.name + (f".{opinfo.variant_test_name}" if opinfo.variant_test_name else "")
        results.append((name, i, status, detail))
    return results


def summary(results) -> str:
    counts = collections.Counter(r[2] for r in results)
    counted = sum(v for k, v in counts.items() if k != "export")
    passing = counts["supported"] + counts["decomposed"]
    return (f"OpInfo float32 samples: {counted} exported; {passing} pass ({counts['supported']} with rt's own "
            f"converters, {counts['decomposed']} through the decomposition fallback); "
            f"{counts['unsupported']} unsupported, {counts['dtype']} need a dtype rt lacks, "
            f"{counts['mismatch']} mismatch, {counts['error']} errors")


def test_opinfo_sweep():
    t0 = time.perf_counter()
    results = sweep()
    print("\n" + summary(results) + f" ({time.perf_counter() - t0:.0f} s)")
    bad = [r for r in results if r[2] in ("mismatch", "error") and r[0].split(".")[0] not in AMBIGUOUS]
    for r in bad:
        print("  ", *r)
    counts = collections.Counter(r[2] for r in results)
    assert counts["supported"] + counts["decomposed"] >= 560          # 571 when this was written
    assert not bad, f"{len(bad)} samples fail: " + "; ".join(f"{r[0]}#{r[1]}: {r[3]}" for r in bad[:10])


if __name__ == "__main__":
    per = int(sys.argv[sys.argv.index("--per-op") + 1]) if "--per-op" in sys.argv else None
    t0 = time.perf_counter()
    res = sweep(per)
    print(summary(res), f"({time.perf_counter() - t0:.0f} s)")
    if "--list" in sys.argv:
        for r in res:
            if r[2] not in ("supported", "decomposed", "export"):
                print(*r, sep="\t")
