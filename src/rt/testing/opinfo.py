"""PyTorch's own OpInfo samples through rt: each float32 sample is wrapped in a module, exported, imported
to the torch dialect (with the decomposition fallback) and run by the numpy reference interpreter, then
lowered, planned and run in the compiled C loop and op by op through the C kernels, every result against
torch's own output (max abs error <= 1e-4 * max(1, output scale); exact for integer and bool outputs,
the same NaN/inf positions).

`sweep()` runs a fixed subset (the first sample of every OpInfo, plus the second of the ops whose name is
a core ATen op; float32, or int64 / bool for the ops that take no float32), each as exported and again
decomposed to the core ATen opset (`run_decompositions()`: the .Scalar overloads, convolution, _softmax,
... appear only there) when that changes the graph, and records, per sample, the ATen overloads its
exported graph holds, so the coverage
table (`python -m rt.frontend.coverage`) can say which core ops ran in the C loop. `python -m
rt.testing.opinfo [--per-op N] [--list]` runs it and lists every sample that does not pass. Samples that
cannot pass by design (random ops, uninitialised memory, complex or other dtypes rt lacks,
data-dependent shapes) are counted apart, never hidden. Needs torch and expecttest.
"""
from __future__ import annotations

import collections
import sys
import time
import warnings

import numpy as np
import torch

from ..errors import ExportError, LoweringError, UnsupportedOpError
from ..frontend import import_program
from ..interpreter import run_reference

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


def run_sample(opinfo, sample, compiled: bool = True, seen: set | None = None, core: bool = False) -> tuple[str, str]:
    """(status, detail). status: 'export' (torch.export refused the wrapper: not counted), 'dtype'
    (a dtype rt lacks), 'unsupported', 'supported' / 'decomposed' (passed, with or without the
    decomposition fallback), 'mismatch', 'error'; compiled: also 'lowering', 'c-mismatch', 'c-error'.
    core: the exported program decomposed to the core ATen opset first, as
    `ExportedProgram.run_decompositions()` gives it (the .Scalar forms, convolution, _softmax, ...):
    'same' when that changes nothing."""
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
            if core:
                if _all_core(ep):           # the decomposition would keep every node
                    return "same", ""
                before = _targets(ep)
                ep = ep.run_decompositions()
                if _targets(ep) == before:
                    return "same", ""
    except Exception as e:
        return "export", f"{type(e).__name__}: {str(e)[:80]}"
    if seen is not None:          # the ATen overloads of the exported graph
        seen.update(_targets(ep))
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
    if compiled:
        status, detail = run_compiled(module, tensors, want, uninit)
        if status != "ok":
            return status, detail
    return ("decomposed" if module.meta.get("decomposed") else "supported"), ", ".join(module.meta.get("decomposed", []))


def _all_core(ep) -> bool:
    return all(not isinstance(n.target, torch._ops.OpOverload) or torch.Tag.core in n.target.tags
               for n in ep.graph.nodes if n.op == "call_function")


def _targets(ep) -> set[str]:
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def run_compiled(module, tensors, want, shapes_only: bool) -> tuple[str, str]:
    """The torch-dialect module lowered, planned and run in the C loop and op by op through the C
    kernels: ('ok', ''), ('lowering', why rt cannot compile it) or ('c-mismatch' / 'c-error', detail)."""
    from ..api import CompiledModel
    from ..lowering import to_fused
    from ..lowering.plan import to_planned
    from ..target import Target
    try:
        target = Target.host()
        fused = to_fused(module, target=target)
        planned = to_planned(fused, target)
        model = CompiledModel({"torch": module, "fused": fused, "planned": planned})
    except LoweringError as e:
        return "lowering", str(e).replace("\n", " ")[:300]
    except Exception as e:
        return "c-error", f"compile: {type(e).__name__}: {str(e)[:200]}"
    inputs = [t.numpy() for t in tensors]
    for name, run in (("C loop", model), ("op by op", model.run_op_by_op)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = run(*inputs)
        except Exception as e:
            return "c-error", f"{name}: {type(e).__name__}: {str(e)[:200]}"
        got = list(got) if isinstance(got, tuple) else [got]
        diff = compare(got, want, shapes_only=shapes_only)
        if diff is not None:
            return "c-mismatch", f"{name}: {diff}"
    return "ok", ""


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


class _Own:
    """An rt-owned sample for a core overload no OpInfo sample reaches (not even decomposed): the overload
    called directly, in the OpInfo interface the sweep reads (op, name; input, args, kwargs)."""

    def __init__(self, overload, inp, *args, result: int | None = None, **kwargs):
        self.op = overload if result is None else (lambda *a, **k: overload(*a, **k)[result])
        self.name, self.variant_test_name = f"own:{overload}", ""
        self.input, self.args, self.kwargs = inp, args, kwargs


def own_samples() -> list:
    aten = torch.ops.aten
    g = torch.Generator().manual_seed(0)
    x4 = torch.randn(2, 3, 5, 6, generator=g)
    x5 = torch.randn(1, 2, 3, 4, 5, generator=g)
    ints = torch.randint(-9, 9, (4, 5), generator=g)
    c = torch.randn(3, generator=g)
    return [
        _Own(aten.reflection_pad1d.default, x4[0], [2, 1]),
        _Own(aten.reflection_pad2d.default, x4, [1, 2, 2, 0]),
        _Own(aten.reflection_pad3d.default, x5, [1, 1, 0, 2, 1, 0]),
        _Own(aten.replication_pad2d.default, x4, [1, 2, 0, 3]),
        _Own(aten.replication_pad3d.default, x5, [2, 0, 1, 1, 0, 1]),
        _Own(aten.upsample_nearest2d.vec, x4, [10, 9], None),
        _Own(aten.scatter.value, x4[0, 0], 1, torch.randint(0, 6, (5, 3), generator=g), 2.5),
        _Own(aten.div.Scalar_mode, x4, 0.7, rounding_mode="floor"),
        _Own(aten.bitwise_and.Scalar, ints, 6),
        _Own(aten.bitwise_or.Scalar, ints, 6),
        _Own(aten.bitwise_xor.Scalar, ints, -3),
        _Own(aten._native_batch_norm_legit_no_training.default, x4, c, c.abs(), c, c.abs() + 0.5, 0.1, 1e-5),
        _Own(aten._native_batch_norm_legit.no_stats, x4, c, c, True, 0.1, 1e-5),
        _Own(aten._embedding_bag.default, torch.randn(10, 3, generator=g), torch.tensor([1, 2, 4, 5, 4, 3]),
             torch.tensor([0, 2, 2]), False, 1, result=0),
        _Own(aten.col2im.default, torch.randn(1, 12, 6, generator=g), [3, 4], [2, 2], [1, 1], [0, 0], [1, 1]),
    ]


def selected(per_op: int | None = None):
    """(opinfo, sample index, sample) of the sweep: float32 samples (int64, else bool, for an op that
    takes no float32: the bitwise ops), random ops left out."""
    from torch.testing._internal.common_methods_invocations import op_db
    core = _core_names()
    for opinfo in op_db:
        dtypes = opinfo.supported_dtypes("cpu")
        dtype = next((d for d in (torch.float32, torch.int64, torch.bool) if d in dtypes), None)
        if any(r in opinfo.name for r in RANDOM) or dtype is None:
            continue
        n = per_op if per_op is not None else (2 if opinfo.name.split(".")[0] in core else 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gen = opinfo.sample_inputs("cpu", dtype, requires_grad=False)
                samples = [s for _, s in zip(range(n), gen)]
        except Exception:
            continue
        for i, s in enumerate(samples):
            yield opinfo, i, s
    for own in own_samples():
        yield own, 0, own


def sweep(per_op: int | None = None, core_samples: int | None = None):
    """[(OpInfo name, sample index, status, detail, ATen overloads of its graph)]. core_samples: how many
    samples per OpInfo are also run decomposed to the core ATen opset (default: all)."""
    torch.manual_seed(0)
    results = []
    for opinfo, i, sample in selected(per_op):
        name = opinfo.name + (f".{opinfo.variant_test_name}" if opinfo.variant_test_name else "")
        for core in (False, True)[:1 if core_samples is not None and i >= core_samples else 2]:
            # as exported, then decomposed to the core ATen opset
            seen: set = set()
            status, detail = run_sample(opinfo, sample, seen=seen, core=core)
            if status != "same":
                results.append((name + (" (core ATen)" if core else ""), i, status, detail, frozenset(seen)))
            if status == "export":
                break
    return results


def summary(results) -> str:
    counts = collections.Counter(r[2] for r in results)
    counted = sum(v for k, v in counts.items() if k != "export")
    passing = counts["supported"] + counts["decomposed"]
    return (f"OpInfo samples (float32; int64 / bool for ops without float32; rt's own for overloads no OpInfo "
            f"sample reaches): {counted} exported; {passing} pass through both C executors "
            f"({counts['supported']} with rt's own converters, {counts['decomposed']} through the decomposition "
            f"fallback); {counts['unsupported']} unsupported, {counts['lowering']} refused by the lowering, "
            f"{counts['dtype']} need a dtype rt lacks, {counts['mismatch']} mismatch in the reference "
            f"interpreter, {counts['c-mismatch']} in the C loop, {counts['error'] + counts['c-error']} errors")




def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    per = int(argv[argv.index("--per-op") + 1]) if "--per-op" in argv else None
    t0 = time.perf_counter()
    res = sweep(per)
    print(summary(res), f"({time.perf_counter() - t0:.0f} s)")
    if "--list" in argv:
        for r in res:
            if r[2] not in ("supported", "decomposed", "export"):
                print(*r[:4], sep="\t")
    return 0


if __name__ == "__main__":
    sys.exit(main())
