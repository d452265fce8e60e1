"""Constant matmul weights packed in the formats a user chose (rt/weight_formats.py), at compile time.

A `fused.matmul` whose B is a constant 2-D weight and whose A is read as it is becomes
`fused.matmul_packed` on the packed bytes (a u8 constant saved in the .rt file and mapped like any
weight), keeping its bias, residual, alpha and activation. The fp32 original goes to dead-code
elimination unless something else reads it (a tied embedding gathers its rows: those stay exact).
"""
from __future__ import annotations

from ..dialects.builder import Builder
from ..dialects.ir import Module, Operation, replace_all_uses
from ..dialects.registry import REGISTRY, VIEW
from ..weight_formats import AUTO, WeightChoice, pack
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


def pack_weights(module: Module, choice: WeightChoice) -> list[dict]:
    """Pack every eligible matmul weight in its chosen format, in place; returns one entry per
    constant matmul weight: its name, [N, K], the format it took (or "fp32") and why it kept fp32."""
    users = module.users()
    names = {v.name for v in module.values()}
    report = []
    for op in list(module.ops):
        if op.name != "fused.matmul":
            continue
        w = op.operands[1]
        arr = module.const_value(w)
        if arr is None or arr.ndim != 2 or op.attrs.get("transpose_a", False):
            continue
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
        packed = b.const(pack(weight, fmt), hint=f"{name}.{fmt.name}")
        a, _, *rest = op.operands
        new = b.op("fused.matmul_packed", [a, packed, *rest], {
            "format": fmt.kind, "n": n, "k": k, "group": fmt.group_for(k), "zero_point": fmt.zero_point,
            "alpha": float(op.attrs.get("alpha", 1.0)), "act": op.attrs.get("act", "none")})
        replace_all_uses(module, op.result, new)
        names.discard(op.result.name)
        b.rename(new, op.result.name)
        at = module.ops.index(op)
        module.ops[at:at + 1] = b.new_ops
        entry["format"] = fmt.name
        entry["bytes"] = int(packed.producer.result.type.nbytes)
    module.invalidate_names()
    return report


def pack_chosen_weights(fused: Module, weights, lm_head=AUTO) -> list[dict]:
    """pack_weights for rt.compile's / compile_generator's `weights` and `lm_head`, then dead-code
    elimination of the fp32 originals; nothing at all when every weight stays fp32."""
    choice = WeightChoice(weights, lm_head)
    if not choice.active:
        return []
    report = pack_weights(fused, choice)
    dead_code_elimination(fused)
    return report
