"""One MATMUL op run through rt's runtime in each way it can read a constant B (its b_mode, rt.abi):
BLAS (gemm, or gemv for one row) with B stored [K, N] or [N, K] (transpose_b), oneDNN reading B in
place in either layout, oneDNN with B packed once, and for one row rt's split form (3.5 bytes per
float, where this CPU decodes it) and rt's small loops (B of at most rt.abi.MATVEC_SMALL_ELEMS).
GFLOP/s and the weight bandwidth (GB/s) it implies, median over the calls; "-" where a mode does not
apply, "(blas)" after a split weight the form could not hold (it then runs on BLAS).

Weights are "cold" as in a model (each layer's weights are read once per call and a model's layers
do not fit the L3 cache): each case cycles through copies of B that together exceed --cold-mib.

    python benchmarks/matmul_modes.py                       # the GPT-2 small shapes, M = 1, 64, 128
    python benchmarks/matmul_modes.py --m 1 --shapes 768x50257 --calls 50
    python benchmarks/matmul_modes.py --m 1 --shapes 64x128 768x768 --calls 20 --cold-mib 16   # quick

Run nothing else on the machine meanwhile (2 cores: another process's spinning threads halve these).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from rt.abi import ENUMS, MATVEC_SMALL_ELEMS
from rt.kernels import HAVE_ONEDNN, SPLIT_FAST, Program, make_record

GPT2_SHAPES = ["768x2304", "768x768", "768x3072", "3072x768", "768x50257"]   # K x N


def program(m: int, n: int, k: int, b: np.ndarray, tb: bool, mode: str) -> Program:
    """out[m, n] = a[m, k] @ B, B the constant b ([n, k] when tb, else [k, n]) read in b_mode `mode`."""
    rec = make_record("MATMUL", {"a": (1, 0), "b": (2, 0), "out": (3, 0)},
                      b1=1, b2=1, M=m, N=n, K=k, trans_a=False, trans_b=tb, lda=k, ldb=k if tb else n, ldc=n,
                      sa1=0, sa2=0, sb1=0, sb2=0, sc1=0, sc2=0, act="none", b_mode=mode, alpha=1.0)
    return Program(rec, [0, m * k * 4, b.nbytes, m * n * 4], {2: b}, [1], [3])


def applies(mode: str, m: int, k: int, n: int) -> bool:
    """Whether b_mode `mode` can run this product (the runtime's checker refuses it otherwise)."""
    if mode == "split":
        return m == 1 and SPLIT_FAST
    if mode == "small":
        return m == 1 and n * k <= MATVEC_SMALL_ELEMS
    return True


def time_case(m: int, k: int, n: int, tb: bool, mode: str, calls: int,
              cold_mib: int) -> tuple[float, float, str]:
    """(GFLOP/s, GB/s of B, the b_mode it ran in)."""
    rng = np.random.default_rng(0)
    copies = max(1, -(-cold_mib * 2**20 // (k * n * 4)))
    shape = (n, k) if tb else (k, n)
    progs = [program(m, n, k, rng.standard_normal(shape, np.float32), tb, mode) for _ in range(copies)]
    ran = ENUMS["b_mode"][progs[0].variant(0)]
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
    return 2.0 * m * n * k / med * 1e-9, k * n * 4 / med * 1e-9, ran


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
    if SPLIT_FAST and 1 in args.m:
        ways += [("split", True)]
    if 1 in args.m and any(int(k) * int(n) <= MATVEC_SMALL_ELEMS for k, n in (s.split("x") for s in args.shapes)):
        ways += [("small", False), ("small", True)]
    print(f"{'M':>4} {'K x N':>10}  " + "  ".join(f"{mode + (' [N,K]' if tb else ' [K,N]'):>15}"
                                             for mode, tb in ways) + "   (GFLOP/s | GB/s of B)")
    for m in args.m:
        for shape in args.shapes:
            k, n = map(int, shape.split("x"))
            cells = []
            for mode, tb in ways:
                if not applies(mode, m, k, n):
                    cells.append("-")
                    continue
                gf, gbs, ran = time_case(m, k, n, tb, mode, max(10, args.calls // (1 + (k * n * m) // 2**25)),
                                         args.cold_mib)
                cells.append(f"{gf:7.1f} |{gbs:6.1f}" + (f" ({ran})" if ran != mode else ""))
            print(f"{m:>4} {shape:>10}  " + "  ".join(f"{c:>15}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
