"""Capture an nn.Module with torch.export and build its torch dialect module."""
from __future__ import annotations

import operator
import os
import re

import numpy as np
import torch

from ..dialects.ir import Module, Operation, TensorType, Value, dtype_name
from ..dialects.registry import REGISTRY
from ..errors import ExportError, UnsupportedOpError
from .converters import lookup

_TORCH_TO_NP = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64,
                torch.int32: np.int32, torch.bool: np.bool_}
_METADATA_ONLY = {torch.ops.aten._assert_tensor_metadata.default, torch.ops.aten._assert_scalar.default}


_TORCH_DIR = os.path.dirname(torch.__file__)


def tensor_to_numpy(t: torch.Tensor) -> np.ndarray:
    """Share memory with the tensor where possible (contiguous CPU tensors)."""
    t = t.detach()
    if t.dtype not in _TORCH_TO_NP:
        raise ExportError(f"tensor dtype {t.dtype} is not supported (use float32)")
    return t.contiguous().numpy()


def where(node) -> str:
    """'module.path (file:line)' of an FX node, from the export's metadata."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)', trace)
    loc = ""
    user_frames = [f for f in frames if _TORCH_DIR not in f[0]] or frames
    if user_frames:
        f, line, fn, code = user_frames[-1]
        loc = f"{f}:{line} `{code.strip()}`"
    return " ".join(p for p in (path or "<top>", f"({loc})" if loc else "") if p)


class Builder:
    """Emits torch dialect ops into a module while walking the FX graph."""

    def __init__(self, module: Module):
        self.module = module
        self.names: set[str] = set()

    def _name(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]", "_", hint) or "v"
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def new_value(self, hint: str, ttype: TensorType) -> Value:
        return Value(self._name(hint), ttype)

    def attr(self, v):
        if isinstance(v, torch.dtype):
            return dtype_name(_TORCH_TO_NP[v])
        if isinstance(v, (torch.device, torch.layout, torch.memory_format)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [self.attr(x) for x in v]
        return v

    def constant(self, name: str, array: np.ndarray) -> Value:
        self.module.constants[name] = array
        v = self.new_value(name, TensorType.of(array))
        op = Operation("const", [], {"name": name}, v)
        v.producer = op
        self.module.ops.append(op)
        return v

    def emit(self, opname: str, operands: list, attrs: dict, node=None) -> Value:
        opdef = REGISTRY[opname]
        attrs = {k: v for k, v in attrs.items() if k in opdef.attrs}
        types = [None if o is None else o.type for o in operands]
        rtype = opdef.infer(types, opdef.with_defaults(attrs))
        v = self.new_value(node.name if node is not None else opname.split(".")[1], rtype)
        op = Operation(opname, list(operands), attrs, v)
        v.producer = op
        self.module.ops.append(op)
        if node is not None:
            self.module.meta.setdefault("source", {})[v.name] = where(node)
        return v


def export_program(model: torch.nn.Module, args: tuple, kwargs: dict | None = None,
                   strict: bool = False) -> torch.export.ExportedProgram:
    try:
        with torch.no_grad():
            return torch.export.export(model, tuple(args), kwargs=kwargs or {}, strict=strict)
    except Exception as e:  # torch's own reason, shortened, plus a hint
        reason = str(e).strip().splitlines()[0][:400] if str(e).strip() else type(e).__name__
        raise ExportError(f"torch.export could not capture the model: {type(e).__name__}: {reason}\n"
                          "Hint: make the forward pass free of data-dependent Python control flow, "
                          "or try strict=False/True.") from e


def import_program(ep: torch.export.ExportedProgram, name: str = "model") -> Module:
    """ExportedProgram -> torch dialect module."""
    gm = ep.graph_module
    sig = ep.graph_signature
    module = Module(name)
    b = Builder(module)

    unsupported = [(str(n.target), where(n), "") for n in gm.graph.nodes
                   if n.op == "call_function" and n.target is not operator.getitem
                   and n.target not in _METADATA_ONLY and lookup(n.target) is None]
    if unsupported:
        seen, unique = set(), []
        for u in unsupported:
            if u not in seen:
                seen.add(u)
                unique.append(u)
        raise UnsupportedOpError(unique)

    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    param_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    user_inputs = set(sig.user_inputs)
    env: dict = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if n.name in param_of:
                env[n] = b.constant(param_of[n.name], tensor_to_numpy(state[param_of[n.name]]))
            elif n.name in user_inputs:
                val = n.meta["val"]
                v = b.new_value(n.name, TensorType(tuple(val.shape), dtype_name(_TORCH_TO_NP[val.dtype])))
                module.inputs.append(v)
                env[n] = v
            else:
                raise ExportError(f"unexpected graph input {n.name}")
        elif n.op == "call_function":
            if n.target in _METADATA_ONLY:
                continue
            args = _map(n.args, env)
            kwargs = _map(dict(n.kwargs), env)
            if n.target is operator.getitem:
                env[n] = args[0][args[1]]
                continue
            env[n] = lookup(n.target)(b, n, args, kwargs)
        elif n.op == "output":
            outs = n.args[0]
            module.outputs = [env[o] for o in (outs if isinstance(outs, (list, tuple)) else [outs])]
    return module


def _map(x, env):
    import torch.fx as fx
    if isinstance(x, fx.Node):
        return env[x]
    if isinstance(x, (list, tuple)):
        return type(x)(_map(i, env) for i in x)
    if isinstance(x, dict):
        return {k: _map(v, env) for k, v in x.items()}
    return x


def import_module(model: torch.nn.Module, args: tuple, kwargs: dict | None = None,
                  strict: bool = False) -> Module:
    model = model.eval()
    ep = export_program(model, args, kwargs, strict)
    return import_program(ep, type(model).__name__.lower())
