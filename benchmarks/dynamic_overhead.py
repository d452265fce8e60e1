"""What binding a dynamic size costs beyond the run itself (issue 19), on one model in this process.

    python benchmarks/dynamic_overhead.py [--layers 12] [--max 1024] [--reps 2000]

Reports, in microseconds (medians): a call of a static program at S, a call of the dynamic program at
the same S (the program for that size cached), the sizes of a new size (SizeBinder.bind), its records
(Program.bound_to_sizes: a copy of the records and the C check), and a new size end to end (both, on
the shared arenas and oneDNN state; the first run at a new row count then makes oneDNN's primitives,
timed separately); and the arena at the bound against a static plan compiled at the bound. Run it on
an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import rt
from rt.bench.measure import median_seconds
from rt.testing import models


def median_us(fn, reps: int) -> float:
    return median_seconds(fn, reps, warm=False) * 1e6


def interleaved_median_us(fns, reps: int) -> list[float]:
    """Each fn's median over reps rounds of one call each, in turn: drift on a noisy host hits all alike."""
    times = [[] for _ in fns]
    for f in fns:
        f()
    for _ in range(reps):
        for f, t in zip(fns, times):
            t0 = time.perf_counter()
            f()
            t.append(time.perf_counter() - t0)
    return [float(np.median(t)) * 1e6 for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--max", type=int, default=1024)
    ap.add_argument("--seq", type=int, default=1, help="the size the per-call costs are measured at")
    ap.add_argument("--reps", type=int, default=2000)
    a = ap.parse_args()
    model, (ids,) = models.gpt2_lm(n_layer=a.layers, seq=16)
    dyn = rt.compile(model, (ids,), dynamic={"input_ids": {1: ("S", 1, a.max)}})
    x = np.zeros((1, a.seq), np.int64)
    static = rt.compile(model, (torch.from_numpy(x),))
    prog = dyn._program
    print(f"GPT-2 {a.layers} layers, S in [1, {a.max}], measured at S={a.seq}: {prog.program.nops} records, "
          f"{len(prog.layout.sized)} size-dependent fields, {len(prog.binder.monomials)} monomials")
    static_us, dynamic_us = interleaved_median_us([lambda: static(x), lambda: dyn(x)], a.reps)
    print(f"  static program call          {static_us:9.1f} us")
    print(f"  dynamic program, same size   {dynamic_us:9.1f} us ({dynamic_us / static_us - 1:+.1%}; calls interleaved)")
    print(f"  SizeBinder.bind (new size)   {median_us(lambda: prog.binder.bind({'S': a.seq + 1}), a.reps):9.1f} us")
    values, slot_nbytes, _ = prog.binder.bind({'S': a.seq + 1})
    print(f"  records bound (new size)     "
          f"{median_us(lambda: prog.program.bound_to_sizes(prog.binder.words, values, slot_nbytes), a.reps):9.1f} us")

    def new_size():
        prog._at_sizes.clear()
        prog.at_sizes({"S": a.seq + 1})
    print(f"  new size: bind + check + build {median_us(new_size, a.reps // 4):7.1f} us")
    fresh = [s for s in range(2, a.max) if s != a.seq][:20]
    t0 = time.perf_counter()
    for s in fresh:
        dyn(np.zeros((1, s), np.int64))
    t_first = (time.perf_counter() - t0) / len(fresh)
    t0 = time.perf_counter()
    for s in fresh:
        dyn(np.zeros((1, s), np.int64))
    t_again = (time.perf_counter() - t0) / len(fresh)
    print(f"  first call at a new length (oneDNN primitives made) {t_first * 1e3:.2f} ms, "
          f"again {t_again * 1e3:.2f} ms (lengths {fresh[0]}..{fresh[-1]})")
    big = rt.compile(model, (torch.zeros(1, a.max, dtype=torch.long),))
    d, b = dyn.plan_report()["arena_bytes"], big.plan_report()["arena_bytes"]
    print(f"  arena at the bound {d / 2**20:.2f} MiB; static plan at S={a.max}: {b / 2**20:.2f} MiB "
          f"(ratio {d / b:.3f})")


if __name__ == "__main__":
    main()
