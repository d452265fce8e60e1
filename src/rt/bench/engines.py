"""The engines, each prepared inside its own worker process: `prepare(name, model, args, threads, workdir)`
returns (call, info). `call()` runs one inference on the fixed example inputs and returns its outputs.

  rt       rt.compile(model, args); call = compiled(*arrays) on numpy arrays, the way a deployed (torch-free)
           rt model is served and the way ORT is fed here; calling with torch tensors instead adds about
           2 us per call (tensor.numpy() in, torch.from_numpy out). RT_NUM_THREADS is set in the worker's environment before rt
           is imported.
  eager    the torch module itself (the worker runs every engine under torch.inference_mode()).
  compile  torch.compile(model) (inductor, default mode); the first call compiles.
  ort      ONNX Runtime on the model exported by torch.onnx.export(dynamo=True), falling back to the legacy
           TorchScript exporter when that fails; all graph optimisations, intra-op threads = --threads.
  rt-1t, rt-fixed, rt-before, ort-nospin
           shared-core variants (cases.SHARED_CORE_VARIANTS, for --contend): rt on one thread, rt on a fixed
           thread count, rt as before issue 22 (fixed count, libgomp's default spinning), ORT with its
           intra-op spinning off.
  numpy    (sgemm case only) numpy.matmul of two float32 n x n matrices.
"""
from __future__ import annotations

import os
import time

from ..errors import require


def _short(e: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:limit]}"


def prepare_rt(model, args, threads, workdir, rt_import_error=None, rt_options=None):
    if rt_import_error:
        raise RuntimeError(f"import rt failed: {rt_import_error}")
    import rt
    from rt import kernels
    t0 = time.perf_counter()
    compiled = rt.compile(model, args, **(rt_options or {}))
    info = {"compile_s": time.perf_counter() - t0, "stage_s": dict(compiled.compile_times),
            "threads": kernels.get_num_threads()}
    try:
        info["plan"] = {k: v for k, v in compiled.plan_report().items() if isinstance(v, (int, float, str))}
    except Exception as e:  # noqa: BLE001 - report, do not fail the timing
        info["plan_error"] = _short(e)
    arrays = [a.numpy() for a in args]
    return (lambda: compiled(*arrays)), info


def prepare_eager(model, args, threads, workdir, **_):
    return (lambda: model(*args)), {}


def prepare_compile(model, args, threads, workdir, **_):
    import torch
    compiled = torch.compile(model)
    return (lambda: compiled(*args)), {"backend": "inductor"}


def _export_onnx(model, args, path):
    import torch
    errors = []
    for dynamo in (True, False):
        try:
            torch.onnx.export(model, tuple(args), path, dynamo=dynamo)
            return ("dynamo" if dynamo else "legacy"), errors
        except Exception as e:  # noqa: BLE001 - try the other exporter
            errors.append(f"{'dynamo' if dynamo else 'legacy'} export: {_short(e)}")
    raise RuntimeError("; ".join(errors))


def prepare_ort(model, args, threads, workdir, spinning=True, **_):
    ort = require("onnxruntime", "the ort engine")
    path = os.path.join(workdir, "model.onnx")
    t0 = time.perf_counter()
    exporter, export_errors = _export_onnx(model, args, path)
    export_s = time.perf_counter() - t0
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:      # its intra-op threads sleep between parallel sections instead of spinning
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t0 = time.perf_counter()
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != len(args):
        raise RuntimeError(f"the exported graph takes {len(inputs)} inputs ({[i.name for i in inputs]}), "
                           f"the model {len(args)}")
    feed = {i.name: a.detach().numpy() for i, a in zip(inputs, args)}
    info = {"exporter": exporter, "export_s": export_s, "session_s": time.perf_counter() - t0,
            "ort_version": ort.__version__, "spinning": spinning}
    if export_errors:
        info["export_fallback_reason"] = export_errors
    return (lambda: sess.run(None, feed)), info


def prepare_numpy(n, threads):
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    info = {"numpy_version": np.__version__}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas"] = f"{blas.get('name')} {blas.get('version')} ({blas.get('openblas configuration', '')})"
    except Exception:  # noqa: BLE001 - informational only
        pass
    return (lambda: np.matmul(a, b, out=c)), info


PREPARE = {"rt": prepare_rt, "eager": prepare_eager, "compile": prepare_compile, "ort": prepare_ort}
