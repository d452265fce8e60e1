"""Load test of models served by rt.serving on 127.0.0.1 (issue 22), bounded in requests and time.

    python benchmarks/serve_load.py [--models mlp mlp_batched gpt2] [--requests 1000] [--clients 8]
                                    [--replicas 2] [--threads T] [--json out.json]

For each model: `--requests` calls in-process (one after another, on the replicas' thread count), the
same requests over HTTP from `--clients` concurrent httpx clients, and (with 2 or more replicas) the
same again while one replica is SIGKILLed midway: p50/p99 latency, throughput, errors, what Serve failed
and the client retried, and how long Serve took to replace the replica. Every answer is checked against
the in-process one, bit for bit. Models (random weights, nothing downloaded): `mlp` (the tiny MLP, 64
wide, one row), `mlp_batched` (the same with a dynamic batch dim: requests share calls), `gpt2` (GPT-2
small at S=128, logits out, as .npy: 25 MB an answer). Compiled files are kept in `--cache`.
tests/test_serve.py runs the short form (rt.testing.serve_load.measure, a few hundred requests).
Run the full form on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from ray import serve

import rt
from rt.serving import deploy, shutdown
from rt.testing import models
from rt.testing.serve_load import measure

DISTINCT = 16           # distinct inputs per model: the answers they are checked against stay in memory


def _mlp(batch: int, dynamic: dict | None):
    model, (x,) = models.mlp(d_in=64, d_hidden=64, d_out=64, n_layers=2, batch=batch)
    return rt.compile(model, (x,), dynamic=dynamic)


MODELS = {   # name -> (its file in --cache, how to compile it, one random input for it)
    "mlp": ("mlp.rt", lambda: _mlp(1, None), lambda rng: [rng.standard_normal((1, 64)).astype(np.float32)]),
    "mlp_batched": ("mlp_batched.rt", lambda: _mlp(4, {"input": {0: ("B", 1, 16)}}),
                    lambda rng: [rng.standard_normal((1, 64)).astype(np.float32)]),
    "gpt2": ("gpt2_s128.rt", lambda: rt.compile(*models.gpt2_lm(n_layer=12, seq=128)),
             lambda rng: [rng.integers(0, 50257, (1, 128))]),
}


def model_file(name: str, cache: str) -> str:
    """The model's compiled file in `cache`, compiled now if it is missing or no longer loads."""
    path = os.path.join(cache, MODELS[name][0])
    try:
        rt.load(path)
    except rt.ModelFileError:
        os.makedirs(cache, exist_ok=True)
        print(f"compiling {name} -> {path}", flush=True)
        MODELS[name][1]().save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["mlp", "mlp_batched", "gpt2"])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="rt threads per replica (default: cores / replicas)")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--deadline-s", type=float, default=600, help="each run stops sending after this long")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/rt/serve_load"))
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    results = {"cores": len(os.sched_getaffinity(0)), "options": vars(a), "models": {}}
    try:
        for name in a.models:
            path = model_file(name, a.cache)
            served = deploy(path, replicas=a.replicas, threads=a.threads, port=a.port, name=name, route=f"/{name}")
            inputs = [MODELS[name][2](rng) for _ in range(DISTINCT)]
            out = measure(served, path, inputs, a.requests, a.clients, kill=a.replicas > 1, deadline_s=a.deadline_s)
            results["models"][name] = {"replicas": served.replicas, "threads": served.threads,
                                       "max_batch": served.max_batch, **out}
            _print(name, results["models"][name])
            serve.delete(name)              # its CPUs for the next model
    finally:
        shutdown()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    runs = [r for m in results["models"].values() for k, r in m.items() if k in ("served", "kill")]
    return 0 if all(r["wrong"] == 0 and not r["errors"] and not r["unsent"] for r in runs) else 1


def _print(name: str, r: dict) -> None:
    print(f"\n{name}: {r['replicas']} replica(s) x {r['threads']} thread(s), batches of up to {r['max_batch']} rows")
    print(f"  {'run':<12}{'ok':>7}{'wrong':>7}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for run in ("in_process", "served", "kill"):
        if run in r:
            s = r[run]
            print(f"  {run:<12}{s['ok']:>7}{s['wrong']:>7}{sum(s['errors'].values()):>8}{s['p50_ms']:>10.2f}"
                  f"{s['p99_ms']:>10.2f}{s['requests_per_s']:>10.1f}")
    if "kill" in r:
        k = r["kill"]
        print(f"  replica kill: pid {k.get('killed_pid')} replaced after {k.get('replaced_after_s')} s; "
              f"retried {k['retried'] or 'nothing'}; errors {k['errors'] or 'none'}; unsent {k['unsent']}")


if __name__ == "__main__":
    sys.exit(main())
