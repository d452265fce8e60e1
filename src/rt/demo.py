"""`rt demo`: compile an embedded default model and show what rt did with it.

Latency is measured fairly: each engine runs in a fresh process of its own (two thread pools in one
process slow each other down on a small machine). rt's process loads the saved model file, without torch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from .errors import RtError, require


def _mlp(seq):
    from .testing.models import mlp
    return mlp()


def _gpt2(seq):
    require("transformers", "rt demo --model gpt2")
    from .testing.models import gpt2_lm
    return gpt2_lm(n_layer=12, seq=seq or 128)


DEMO_MODELS = {"mlp": _mlp, "gpt2": _gpt2}
DEFAULT_MODEL = "gpt2"


def _median_ms(fn, repeat: int) -> float:
    from .bench.measure import median_seconds
    return median_seconds(fn, repeat) * 1e3


def time_engine(engine: str, model_name: str, seq: int | None, repeat: int, model_file: str, inputs: str) -> float:
    """Runs in the engine's own process: median latency in ms."""
    arrays = list(np.load(inputs).values())
    if engine == "rt":
        import rt
        served = rt.load(model_file)
        return _median_ms(lambda: served(*arrays), repeat)
    import torch
    model, _ = DEMO_MODELS[model_name](seq)
    tensors = [torch.from_numpy(a) for a in arrays]
    with torch.inference_mode():
        return _median_ms(lambda: model(*tensors), repeat)


def _time_in_own_process(engine: str, args: list[str]) -> float:
    code = ("import json, sys; from rt.demo import time_engine; "
            f"print(json.dumps(time_engine({engine!r}, *json.loads(sys.argv[1]))))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise RtError(f"timing {engine} in its own process failed: {last}")
    return float(r.stdout.strip().splitlines()[-1])


def run_demo(model_name: str, seq: int | None, repeat: int = 20) -> int:
    torch = require("torch", "rt demo")
    import rt

    print(f"rt demo: {model_name} (random weights, built from its config; nothing is downloaded)")
    model, args = DEMO_MODELS[model_name](seq)
    t0 = time.perf_counter()
    compiled = rt.compile(model, args, progress=lambda stage, secs: print(
        f"  [stage] {stage:<14} {secs * 1e3:8.1f} ms", flush=True))
    print(f"  compiled in {time.perf_counter() - t0:.2f} s\n")

    print(f"{'stage':<8} {'ops':>6}   most frequent")
    for stage in compiled.stages:
        n, top = compiled.op_summary(stage, top=5)
        print(f"{stage:<8} {n:>6}   {top}")
    print(f"\n{compiled.plan_summary()}")

    with torch.inference_mode():
        want = model(*args).numpy()
    got = compiled(*[a.numpy() for a in args])
    err = float(np.abs(got - want).max() / np.abs(want).max())

    with tempfile.TemporaryDirectory() as tmp:
        model_file, inputs = os.path.join(tmp, "model.rt"), os.path.join(tmp, "inputs.npz")
        compiled.save(model_file)
        np.savez(inputs, *[a.numpy() for a in args])
        job = [model_name, seq, repeat, model_file, inputs]
        print("\ntiming each engine in its own process ...")
        eager_ms = _time_in_own_process("eager", job)
        rt_ms = _time_in_own_process("rt", job)
    print(f"\n{'engine':<24} {'median latency':>15}")
    print(f"{'torch eager':<24} {eager_ms:>12.2f} ms")
    print(f"{'rt (loaded, no torch)':<24} {rt_ms:>12.2f} ms   (speed-up over eager: {eager_ms / rt_ms:.2f}x)")
    print(f"max abs error relative to the output's scale: {err:.2e}")
    return 0 if err <= 1e-4 else 1
