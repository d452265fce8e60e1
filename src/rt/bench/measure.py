"""Measurements taken inside a worker: memory (RSS), matmul FLOPs, torch's peak activation memory, errors.

FLOPs: one eager forward under torch.utils.flop_counter.FlopCounterMode, which counts 2*M*N*K for every
mm/addmm/bmm/baddbmm (so every nn.Linear / HF Conv1D, and attention written as matmuls: Q@K^T and P@V).
The CPU SDPA kernel (aten._scaled_dot_product_flash_attention_for_cpu) is not in torch's table, so we add
it with torch's own sdpa formula: 2*B*H*Sq*Sk*D for Q@K^T plus the same for P@V (dense: a causal mask is
not discounted). Elementwise ops, softmax, layernorm and embedding lookups are not counted.
"""
from __future__ import annotations

import os
import resource
import time


def median_seconds(fn, repeat: int, warm: bool = True) -> float:
    """Median wall time of `repeat` calls of fn (after one untimed call when warm)."""
    if warm:
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    n = len(times)
    return times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    """Current resident set size."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return -1


def memory_point() -> dict:
    return {"rss": rss_bytes(), "maxrss": maxrss_bytes()}


def flatten(out) -> list:
    """The tensors of a model output (tensor, tuple/list, dict or HF ModelOutput)."""
    import torch
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten(o)]
    return []


def max_rel_error(got, want) -> float:
    """max |got - want| / max |want| over all outputs (got may be numpy or torch)."""
    import numpy as np
    g = [np.asarray(x.detach().numpy() if hasattr(x, "detach") else x, dtype=np.float64) for x in flatten_any(got)]
    w = [np.asarray(x.detach().numpy(), dtype=np.float64) for x in flatten(want)]
    if len(g) != len(w):
        raise ValueError(f"{len(g)} outputs, the eager model has {len(w)}")
    err = 0.0
    for a, b in zip(g, w):
        if a.shape != b.shape:
            raise ValueError(f"output shape {a.shape}, eager has {b.shape}")
        scale = float(np.abs(b).max()) or 1.0
        err = max(err, float(np.abs(a - b).max()) / scale)
    return err


def flatten_any(out) -> list:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_any(o)]
    if hasattr(out, "shape"):
        return [out]
    return flatten(out)


def count_flops(model, args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_cpu(q, k, v, *rest, out_shape=None, **kw):
        return sdpa_flop_count(q, k, v)

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = sdpa_cpu
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(*args)
    return int(counter.get_total_flops())


def torch_peak_activation_bytes(model, args) -> int:
    """Peak bytes held by tensors allocated during one eager forward (activations, temporaries and the
    output; parameters excluded), from the profiler's allocation/free events replayed in time order."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with torch.inference_mode():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = model(*args)
        del out
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    if not events:
        raise RuntimeError("the profiler recorded no allocation events")
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


def read_bandwidth(threads: int, nbytes: int = 1 << 30, repeat: int = 10) -> dict:
    """The machine's read bandwidth with `threads` threads, in bytes/s: numpy sums over a float32 array of
    `nbytes`, one slice per thread (numpy drops the GIL in the sum); the best of `repeat` passes, so that
    other processes' load lowers it as little as possible."""
    import threading

    import numpy as np
    a = np.ones(nbytes // 4, dtype=np.float32)          # written once, so every page is resident
    parts = np.array_split(a, threads)
    best = float("inf")
    for _ in range(repeat):
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t0)
    return {"bytes_per_s": a.nbytes / best, "threads": threads, "array_bytes": a.nbytes}
