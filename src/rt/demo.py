"""`rt demo`: compile an embedded default model and show what rt did with it."""
from __future__ import annotations

import time

import numpy as np


def _mlp(seq):
    from .testing.models import mlp
    return mlp()


def _gpt2(seq):
    from .testing.models import gpt2_lm
    return gpt2_lm(n_layer=12, seq=seq or 128)


DEMO_MODELS = {"mlp": _mlp, "gpt2": _gpt2}
DEFAULT_MODEL = "gpt2"


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def run_demo(model_name: str, seq: int | None, repeat: int = 20) -> int:
    import torch

    import rt

    print(f"rt demo: {model_name} (random weights, built from its config; nothing is downloaded)")
    model, args = DEMO_MODELS[model_name](seq)
    t0 = time.perf_counter()
    compiled = rt.compile(model, args)
    for stage, secs in compiled.compile_times.items():
        print(f"  [stage] {stage:<11} {secs * 1e3:8.1f} ms")
    print(f"  compiled in {time.perf_counter() - t0:.2f} s\n")

    print(f"{'stage':<8} {'ops':>6}   most frequent")
    for stage, module in compiled.stages.items():
        counts = module.op_counts()
        counts.pop("const", None)
        top = ", ".join(f"{k.split('.', 1)[1]}×{v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
        print(f"{stage:<8} {sum(counts.values()):>6}   {top}")

    plan = compiled.plan_report()
    print(f"\narena {_mib(plan['arena_bytes'])}  lower bound {_mib(plan['lower_bound_bytes'])}  "
          f"(ratio {plan['ratio']:.3f})  no reuse {_mib(plan['no_reuse_bytes'])}")

    with torch.inference_mode():
        want = model(*args)
        eager_ms = _median_ms(lambda: model(*args), repeat)
    got = compiled(*args)
    rt_ms = _median_ms(lambda: compiled(*args), repeat)
    err = float((got - want).abs().max() / want.abs().max())
    print(f"\n{'engine':<12} {'latency':>10}")
    print(f"{'torch eager':<12} {eager_ms:>8.2f} ms")
    print(f"{'rt':<12} {rt_ms:>8.2f} ms   ({eager_ms / rt_ms:.2f}x)")
    print(f"max abs error relative to the output's scale: {err:.2e}")
    return 0 if err <= 1e-4 else 1
