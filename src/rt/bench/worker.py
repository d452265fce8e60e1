"""One engine's worker process. The parent (runner.py) starts it with `python -c BOOTSTRAP` and talks to
it in JSON lines: the worker reads commands on stdin and answers on the original stdout, which it keeps
for itself (fd 1 is pointed at stderr so library prints cannot corrupt the protocol).

Commands: setup (build the model, prepare the engine, warm up), time (run `reps` timed calls),
finish (memory, FLOPs, torch's peak activations, read bandwidth; then exit).

In a decode case one call is one generation (decode.py); `time` then also returns each call's own phase
timings (prefill, decode per token), and setup the bytes a decode step reads (`facts`).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import traceback

# The parent runs this; it imports rt (real package, or a bare stand-in when rt fails to import, so the
# baselines still run and the rt engine reports why).
BOOTSTRAP = """
import sys, types
err = None
try:
    import rt
except BaseException as e:
    err = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
    for k in [k for k in sys.modules if k == 'rt' or k.startswith('rt.')]:
        del sys.modules[k]
    pkg = types.ModuleType('rt'); pkg.__path__ = [RT_DIR]; sys.modules['rt'] = pkg
from rt.bench.worker import serve
sys.exit(serve(err))
"""


PHASE_KEYS = ("prefill_s", "decode_s_per_token", "step_s")   # what a decode call's timings hold


def bootstrap_code() -> str:
    rt_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return BOOTSTRAP.replace("RT_DIR", repr(rt_dir))


class Worker:
    def __init__(self, rt_import_error):
        self.rt_import_error = rt_import_error
        self.model = self.args = self.call = None
        self.is_sgemm = self.is_decode = False
        self.workdir = tempfile.mkdtemp(prefix="rt-bench-")
        self.mem = {}

    def setup(self, req):
        from . import measure
        from .cases import BY_NAME, build
        case, engine, threads = BY_NAME[req["case"]], req["engine"], int(req["threads"])
        self.is_sgemm = case.is_sgemm
        self.mem["start"] = measure.memory_point()
        ref, facts = None, {}
        if case.decode:
            from . import decode
            self.is_decode = True
            t0 = time.perf_counter()
            self.call, info, facts = decode.prepare(case, engine, threads, self.workdir, self.rt_import_error)
            self.mem["built"] = measure.memory_point()
        elif case.is_sgemm:
            from .engines import prepare_numpy
            t0 = time.perf_counter()
            self.call, info = prepare_numpy(case.kwargs["n"], threads)
            self.mem["built"] = measure.memory_point()
        else:
            import torch
            torch.set_num_threads(threads)
            from .cases import shared_core_variant
            from .engines import PREPARE
            self.model, self.args = build(case)
            self.mem["built"] = measure.memory_point()
            with torch.inference_mode():
                ref = self.model(*self.args)
            t0 = time.perf_counter()
            variant = shared_core_variant(engine)
            self.call, info = PREPARE[variant.base](self.model, self.args, threads, self.workdir,
                                                    rt_import_error=self.rt_import_error, **variant.options,
                                                    **({"rt_options": case.rt_options} if variant.base == "rt" else {}))
        prepare_s = time.perf_counter() - t0
        with self._mode():
            t0 = time.perf_counter()
            out = self.call()
            first_s = time.perf_counter() - t0
            warm, deadline = [], time.perf_counter() + float(req["warmup_s"])
            while len(warm) < int(req["warmup_min"]) or (time.perf_counter() < deadline and len(warm) < 1000):
                t0 = time.perf_counter()
                out = self.call()
                warm.append(time.perf_counter() - t0)
        err = info.get("max_rel_err")
        if ref is not None:
            from .measure import max_rel_error
            err = max_rel_error(out, ref)
        self.mem["ready"] = measure.memory_point()
        return {"info": info, "prepare_s": prepare_s, "first_call_s": first_s, "warmup_calls": len(warm),
                "est_s": statistics.median(warm), "max_rel_err": err, "pid": os.getpid(), "facts": facts}

    def _mode(self):
        if self.is_sgemm:
            import contextlib
            return contextlib.nullcontext()
        import torch
        return torch.inference_mode()

    def time(self, req):
        times, phases = [], []
        call = self.call
        with self._mode():
            for _ in range(int(req["reps"])):
                t0 = time.perf_counter()
                out = call()
                times.append(time.perf_counter() - t0)
                if self.is_decode:
                    phases.append({k: out[k] for k in PHASE_KEYS if k in out})
                del out                     # not alive during the next call
        return {"times": times, **({"phases": phases} if self.is_decode else {})}

    def finish(self, req):
        from . import measure
        self.mem["end"] = measure.memory_point()
        res = {"mem": self.mem}
        if req.get("flops") and self.model is not None:
            try:
                res["flops"] = measure.count_flops(self.model, self.args)
            except Exception as e:  # noqa: BLE001
                res["flops_error"] = f"{type(e).__name__}: {e}"[:300]
        if req.get("bandwidth"):
            res["read_bandwidth"] = measure.read_bandwidth(int(req["threads"]))
        if req.get("activations") and self.model is not None:
            try:
                res["torch_peak_activation_bytes"] = measure.torch_peak_activation_bytes(self.model, self.args)
            except Exception as e:  # noqa: BLE001
                res["torch_peak_activation_error"] = f"not measurable: {type(e).__name__}: {e}"[:300]
        return res


def serve(rt_import_error=None) -> int:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(rt_import_error)
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req["cmd"]
        try:
            reply = {"ok": True, **getattr(worker, cmd)(req)}
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            tb = traceback.format_exc()
            print(tb, file=sys.stderr, flush=True)
            msg = " ".join(str(e).split())
            reply = {"ok": False, "error": f"{type(e).__name__}: {msg}"[:500], "traceback": tb[-3000:]}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()
        if cmd == "finish" or not reply["ok"]:
            break
    import shutil
    shutil.rmtree(worker.workdir, ignore_errors=True)
    return 0
