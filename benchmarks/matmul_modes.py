"""One MATMUL op run through rt's runtime in each way it can read a constant B: BLAS (gemm, or gemv for
one row) with B stored [K, N] or [N, K] (transpose_b), oneDNN reading B in place in either layout, and
oneDNN with B packed once. GFLOP/s and the weight bandwidth (GB/s) it implies, median over the calls.

Weights are "cold" as in a model (each layer's weights are read once per call and a model's layers
do not fit the L3 cache): each case cycles through copies of B that together exceed --cold-mib.

    python benchmarks/matmul_modes.py                       # the GPT-2 small shapes, M = 1, 64, 128
    python benchmarks/matmul_modes.py --m 1 --shapes 768x50257 --calls 50

Run nothing else on the machine meanwhile (2 cores: another process's spinning threads halve these).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from rt.kernels import MATMUL_B_MODES, RECORD_DTYPE, HAVE_ONEDNN, Program, op_codes

GPT2_SHAPES = ["768x2304", "768x768", "768x3072", "3072x768", "768x50257"]   # K x N


def program(m: int, n: int, k: int, b: np.ndarray, tb: bool, mode: str) -> Program:
    ip = [1, 1, m, n, k, 0, int(tb), k, k if tb else n, n, 0, 0, 0, 0, 0, 0, 0, 0, 0, MATMUL_B_MODES[mode]]
    rec = np.zeros(1, RECORD_DTYPE)
    rec["code"], rec["nargs"] = op_codes()["MATMUL"], 5
    rec["slot"] = [[1, 2, -1, -1, 3, -1, -1, -1]]
    rec["ip"][0, :len(ip)] = ip
    rec["fp"][0, 0] = 1.0
    return Program(rec, [0, m * k * 4, b.nbytes, m * n * 4], {2: b}, [1], [3])


def time_case(m: int, k: int, n: int, tb: bool, mode: str, calls: int, cold_mib: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    copies = max(1, -(-cold_mib * 2**20 // (k * n * 4)))
    shape = (n, k) if tb else (k, n)
    progs = [program(m, n, k, rng.standard_normal(shape, np.float32), tb, mode) for _ in range(copies)]
    a = rng.standard_normal((m, k), np.float32)
    out = np.empty((m, n), np.float32)
    for p in progs:
        p.run([a], [out])
    times = []
    for i in range(calls):
        t = time.perf_counter()
        progs[i % copies].run([a], [out])
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return 2.0 * m * n * k / med * 1e-9, k * n * 4 / med * 1e-9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", type=int, nargs="+", default=[1, 64, 128])
    ap.add_argument("--shapes", nargs="+", default=GPT2_SHAPES, help="KxN")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--cold-mib", type=int, default=256)
    args = ap.parse_args()
    ways = [("blas", False), ("blas", True)]
    if HAVE_ONEDNN:
        ways += [("onednn", False), ("onednn", True), ("packed", False)]
    print(f"{'M':>4} {'K x N':>10}  " + "  ".join(f"{mode + (' [N,K]' if tb else ' [K,N]'):>15}"
                                             for mode, tb in ways) + "   (GFLOP/s | GB/s of B)")
    for m in args.m:
        for shape in args.shapes:
            k, n = map(int, shape.split("x"))
            cells = []
            for mode, tb in ways:
                gf, gbs = time_case(m, k, n, tb, mode, max(10, args.calls // (1 + (k * n * m) // 2**25)),
                                    args.cold_mib)
                cells.append(f"{gf:7.1f} |{gbs:6.1f}")
            print(f"{m:>4} {shape:>10}  " + "  ".join(f"{c:>15}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
