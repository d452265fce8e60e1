"""Reference interpreter: runs a module of any dialect op by op with the registry's numpy implementations.

This is the oracle for every lowering stage. (Planned programs can also be run op by op through the
C kernels: see rt.kernels.executor.)
"""
from __future__ import annotations

import time

import numpy as np

from .dialects.ir import Module
from .dialects.registry import REGISTRY
from .errors import InputError


def run_reference(module: Module, inputs: list[np.ndarray], timings: dict | None = None,
                  states: list[np.ndarray] | None = None, observe=None) -> list[np.ndarray]:
    """states: the persistent buffers `state {index = i}` reads (a generator's KV caches); each
    cache_write returns an updated copy, so the caller's are left as they were. observe(op, args),
    when given, sees each op's operand arrays before it runs (calibration statistics)."""
    if len(inputs) != len(module.inputs):
        raise InputError(f"{module.name} takes {len(module.inputs)} inputs, got {len(inputs)}")
    env = {}
    for v, x in zip(module.inputs, inputs):
        env[v] = np.asarray(x)
    for op in module.ops:
        if op.name == "const":
            env[op.result] = module.constants[op.attrs["name"]]
            continue
        if op.name == "state":
            env[op.result] = states[op.attrs["index"]]
            continue
        opdef = REGISTRY[op.name]
        if opdef.reference is None:
            raise NotImplementedError(f"{op.name} has no reference implementation")
        args = [None if v is None else env[v] for v in op.operands]
        if observe is not None:
            observe(op, args)
        t0 = time.perf_counter()
        out = np.asarray(opdef.reference(args, opdef.with_defaults(op.attrs)))
        if timings is not None:
            timings[op.result.name] = time.perf_counter() - t0
        want = op.result.type
        if out.shape != want.shape or out.dtype != want.np_dtype:
            raise AssertionError(f"{op.name} (%{op.result.name}) reference gave {out.dtype}{list(out.shape)}, "
                                 f"type says {want}")
        env[op.result] = out
    return [env[v] for v in module.outputs]
