"""Constant matmul weights packed in the formats a user chose (rt/weight_formats.py), at compile time.

A `fused.matmul` whose B is a constant 2-D weight and whose A is read as it is becomes
`fused.matmul_packed` on the packed bytes (a u8 constant saved in the .rt file and mapped like any
weight), keeping its bias, residual, alpha and activation. The fp32 original goes to dead-code
elimination unless something else reads it (a tied embedding gathers its rows: those stay exact).
With calibration samples, `input_moments` first measures each weight's inputs, and int formats round
by GPTQ on them (weight_formats._gptq) instead of to nearest.
"""
from __future__ import annotations

import numpy as np

from ..dialects.builder import Builder
from ..dialects.ir import Module, Operation, replace_all_uses
from ..dialects.registry import REGISTRY, VIEW
from ..errors import UsageError
from ..weight_formats import AUTO, WeightChoice, choose_variant, pack
from .fold import dead_code_elimination


def _feeds_output(module: Module, op: Operation, users: dict) -> bool:
    """Whether op's result reaches a module output through views only (the LM head's logits)."""
    outputs = {id(v) for v in module.outputs}
    todo, seen = [op.result], set()
    while todo:
        v = todo.pop()
        if id(v) in outputs:
            return True
        if id(v) in seen:
            continue
        seen.add(id(v))
        todo += [u.result for u in users.get(v, []) if REGISTRY[u.name].has(VIEW)]
    return False


def _weight_of(module: Module, op: Operation):
    """The constant 2-D weight of a matmul packing can take (A read as it is), or None."""
    if op.name != "fused.matmul" or op.attrs.get("transpose_a", False):
        return None
    arr = module.const_value(op.operands[1])
    return arr if arr is not None and arr.ndim == 2 else None


def input_moments(module: Module, samples: list[list]) -> dict[str, np.ndarray]:
    """Per packable matmul weight (by name: other exports of the model name theirs alike): X^T X /
    rows of its input over the calibration samples (each the module's input arrays), every row of
    every sample, run by the reference interpreter. A weight read by several products sums theirs."""
    from ..dialects.instantiate import instantiate, sizes_of
    from ..interpreter import run_reference
    sums: dict = {}

    def observe(op, args):
        if _weight_of(module, op) is not None:
            x = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
            name = op.operands[1].producer.attrs["name"]
            s, n = sums.get(name, (0, 0))
            sums[name] = (s + x.T @ x, n + x.shape[0])

    for arrays in samples:
        if module.meta.get("symbols"):          # a dynamic module runs at each sample's sizes
            at = instantiate(module, sizes_of(module, [a.shape for a in arrays]))
            same = {id(b): a for a, b in zip(module.ops, at.ops)}      # instantiate keeps op order
            run_reference(at, arrays, observe=lambda op, args: observe(same[id(op)], args))
        else:
            run_reference(module, arrays, observe=observe)
    return {name: s / max(n, 1) for name, (s, n) in sums.items()}


def pack_weights(module: Module, choice: WeightChoice, moments: dict | None = None) -> list[dict]:
    """Pack every eligible matmul weight in its chosen format, in place; returns one entry per
    constant matmul weight: its name, [N, K], the format it took (or "fp32") and why it kept fp32.
    moments (input_moments): int formats round by GPTQ on their matmul's input statistics."""
    users = module.users()
    names = {v.name for v in module.values()}
    report = []
    for op in list(module.ops):
        arr = _weight_of(module, op)
        if arr is None:
            continue
        w = op.operands[1]
        name = w.producer.attrs["name"]
        is_output = _feeds_output(module, op, users)
        fmt = choice.pick(name, is_output)
        weight = arr if op.attrs.get("transpose_b", False) else arr.T      # [N, K]
        n, k = weight.shape
        entry = {"name": name, "shape": [n, k], "lm_head": is_output, "format": "fp32"}
        report.append(entry)
        if fmt is None:
            continue
        why = fmt.fits(k)
        if why:
            entry["kept_fp32_because"] = why
            continue
        b = Builder(module, names, name)
        moment = (moments or {}).get(name) if fmt.kind != "bf16" else None
        fmt = choose_variant(weight, fmt, moment)
        packed = b.const(pack(weight, fmt, moment), hint=f"{name}.{fmt.name}")
        a, _, *rest = op.operands
        new = b.op("fused.matmul_packed", [a, packed, *rest], {
            "format": fmt.kind, "n": n, "k": k, "group": fmt.group_for(k), "zero_point": fmt.zero_point,
            "rotate": fmt.rotate, "alpha": float(op.attrs.get("alpha", 1.0)), "act": op.attrs.get("act", "none")})
        replace_all_uses(module, op.result, new)
        names.discard(op.result.name)
        b.rename(new, op.result.name)
        at = module.ops.index(op)
        module.ops[at:at + 1] = b.new_ops
        entry["format"] = fmt.name
        entry["rounding"] = "gptq" if moment is not None else "nearest"
        entry["bytes"] = int(packed.producer.result.type.nbytes)
    module.invalidate_names()
    return report


def check_calibration(weights, lm_head=AUTO) -> None:
    if not WeightChoice(weights, lm_head).rounds_to_ints:
        raise UsageError("calibration= chooses how int weight formats round; the weights chosen "
                         f"({weights!r}) have none")


def pack_chosen_weights(fused: Module, weights, lm_head=AUTO, moments: dict | None = None) -> list[dict]:
    """pack_weights for rt.compile's / compile_generator's `weights` and `lm_head`, then dead-code
    elimination of the fp32 originals; nothing at all when every weight stays fp32. moments
    (input_moments on calibration samples): int formats round by GPTQ."""
    choice = WeightChoice(weights, lm_head)
    if not choice.active:
        return []
    report = pack_weights(fused, choice, moments)
    dead_code_elimination(fused)
    return report
