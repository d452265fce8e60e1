"""Capture an nn.Module with torch.export and build its torch dialect module.

- Capture is non-strict by default; the module is put in eval mode and exported under no_grad.
- Parameters, buffers and lifted constants become named constants (numpy arrays sharing the tensors'
  memory where the tensor is a contiguous CPU tensor of a supported dtype).
- Only nodes that reach the output are imported (dead code such as an unused pooler vanishes).
- Every live call is checked against the converter table first. An op rt has no converter for (or whose
  converter refuses one of its uses) is decomposed by torch's core-ATen table, that op only, and the
  check repeats (decompose.py); all overloads still unsupported are reported together in one
  UnsupportedOpError, each with the module path and source line it came from, saying which ops were
  decomposed. `module.meta["decomposed"]` lists the decomposed overloads.
- Module inputs: the user's tensor inputs in export order (positional args, then kwargs), named as the
  forward() arguments.
"""
from __future__ import annotations

import operator
import os
import re
import warnings

import numpy as np
import torch
import torch.fx as fx
from torch.export.graph_signature import ConstantArgument, InputKind

from ..dialects.builder import Builder
from ..dialects.ir import Module, TensorType, Value, dtype_name
from ..dialects.registry import REGISTRY
from ..dialects.symbolic import Sym, size_ranges
from ..dialects.verifier import verify_module
from ..errors import ExportError, RtError, UnsupportedOpError
from .calling import dropping_caches, signature_of
from .converters import MultiResult, hint_for, is_inplace, lookup
from .decompose import MAX_DEPTH, decompose_call
from .dynamic import SymbolTable, hold_at_range_ends
from .inplace import write_back

_TORCH_TO_NP = {torch.float32: np.float32, torch.float64: np.float64, torch.int64: np.int64,
                torch.int32: np.int32, torch.bool: np.bool_}
_METADATA_ONLY = {torch.ops.aten._assert_tensor_metadata.default, torch.ops.aten._assert_scalar.default,
                  torch.ops.aten.sym_constrain_range_for_size.default,
                  torch.ops.aten._assert_async.msg, torch.ops.aten._assert_async.default}

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_RT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in ([^\n]+)\n\s*([^\n]*)')


def tensor_to_numpy(t: torch.Tensor, what: str = "tensor") -> np.ndarray:
    """A numpy array sharing the tensor's memory where possible (contiguous CPU tensors)."""
    t = t.detach()
    if t.dtype not in _TORCH_TO_NP:
        raise ExportError(f"{what} has dtype {t.dtype}, which rt does not support; "
                          f"convert the model with model.float() (supported: float32, float64, int64, int32, bool)")
    if t.device.type != "cpu":
        t = t.cpu()
    return t.contiguous().numpy()


def _frames(node) -> list[tuple[str, str, str, str]]:
    return _FRAME.findall(node.meta.get("stack_trace") or "")


def where(node) -> str:
    """'module.path (Class) at file:line in fn: `code`' of an FX node, from the export's metadata.
    The source line is the innermost frame outside torch and rt: the user's (or the model library's)
    line that called the op."""
    stack = node.meta.get("nn_module_stack") or {}
    path, cls = "", ""
    if stack:
        path, cls = list(stack.values())[-1][:2]
        cls = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    frames = _frames(node)
    user = [f for f in frames if not f[0].startswith(_TORCH_DIR) and not f[0].startswith(_RT_DIR)]
    frame = user[-1] if user else (frames[-1] if frames else None)
    text = path or "<top>"
    if cls:
        text += f" ({cls})"
    if frame:
        f, line, fn, code = frame
        text += f" at {f}:{line} in {fn.strip()}: `{code.strip()}`"
    return text


class TorchBuilder(Builder):
    """The shared Builder (rt.dialects.builder), appending torch dialect ops to the module while the
    FX graph is walked; adds what only the frontend needs: torch values as attributes and operands,
    one constant per distinct Python scalar, and each op's model source line."""

    trim_absent = False     # torch ops keep every ATen schema operand, absent ones as `none`

    def __init__(self, module: Module):
        super().__init__(module, names=set(), into=module.ops)
        self._scalars: dict[tuple, Value] = {}

    def attr(self, v):
        if isinstance(v, torch.dtype):
            if v not in _TORCH_TO_NP:
                raise ExportError(f"dtype {v} is not supported by rt")
            return dtype_name(_TORCH_TO_NP[v])
        if isinstance(v, (torch.device, torch.layout, torch.memory_format)):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [self.attr(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        return v

    def constant(self, name: str, array: np.ndarray) -> Value:
        return self.const(array, name=name)

    def scalar(self, value) -> Value:
        """A 0-d constant for a Python scalar in a Tensor slot (float -> f32, int -> i64, bool -> bool)."""
        dt = np.bool_ if isinstance(value, bool) else np.int64 if isinstance(value, int) else np.float32
        key = (np.dtype(dt).str, repr(value))
        v = self._scalars.get(key)
        if v is None:
            name = f"scalar.{len(self._scalars)}"
            v = self.constant(name, np.array(value, dtype=dt))
            self._scalars[key] = v
        return v

    def as_value(self, x) -> Value:
        if isinstance(x, Value):
            return x
        if isinstance(x, (bool, int, float, np.generic)):
            return self.scalar(x.item() if isinstance(x, np.generic) else x)
        if isinstance(x, torch.Tensor):
            arr = tensor_to_numpy(x)
            return self.constant(self.module.add_constant(arr, "tensor"), arr)
        raise TypeError(f"expected a tensor, got {type(x).__name__}: {x!r}")

    def emit(self, opname: str, operands: list, attrs: dict, node=None) -> Value:
        """Build `opname` from a converter's operands and ATen arguments (those the op does not declare
        are dropped), named after the FX node, which is recorded as its source."""
        attrs = {k: v for k, v in attrs.items() if k in REGISTRY[opname].attrs}
        v = self.op(opname, operands, attrs, hint=node.name if node is not None else opname.split(".")[1])
        if node is not None:
            self.module.meta.setdefault("source", {})[v.name] = where(node)
        return v

    def drop_last(self) -> None:
        """Undo the last emit (a converter found the op to be the identity)."""
        op = self.module.ops.pop()
        self.names.discard(op.result.name)
        self.module.meta.get("source", {}).pop(op.result.name, None)


# ---- capture ------------------------------------------------------------------------------
def _export_hint(e: Exception, text: str) -> str:
    low = text.lower()
    if "constraints violated" in low:
        return ("the model's own checks allow only part of the dynamic range asked (torch's guard above); "
                "compile for the range it suggests")
    if "data-dependent" in low or "data dependent" in low or "guardondatadependent" in type(e).__name__.lower():
        return ("the forward pass branches or sizes on tensor values; replace Python `if`/loops over tensor "
                "values with torch.where or masks, or compute those values outside the model")
    if "unsupported" in low and "strict" not in low:
        return ("rewrite that construct (see torch.export's docs on supported Python features), or try "
                "rt.compile(model, args, strict=True)")
    return ("make the forward pass a pure function of its tensor inputs (no data-dependent Python control "
            "flow, no side effects); if capture keeps failing, try rt.compile(model, args, strict=True)")


def shorten(text: str, limit: int = 600) -> str:
    """The first meaningful lines of torch's message (no blank lines, no long tracebacks)."""
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    out = []
    for ln in lines:
        if ln.lstrip().startswith(("For more information", "from user code", "File \"", "The following call")):
            break
        out.append(ln)
        if sum(len(x) for x in out) > limit or len(out) >= 4:
            break
    short = "\n".join(out)[:limit]
    return short


def export_program(model: torch.nn.Module, args: tuple | torch.Tensor, kwargs: dict | None = None,
                   strict: bool = False, dynamic_shapes=None) -> torch.export.ExportedProgram:
    """args: the example inputs, a tuple or one tensor; dynamic_shapes: torch.export's."""
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    try:
        with torch.no_grad():
            return torch.export.export(model, args, kwargs=kwargs or {}, strict=strict,
                                       dynamic_shapes=dynamic_shapes)
    except RtError:
        raise
    except Exception as e:  # torch's own reason, shortened, plus a hint
        text = str(e) or type(e).__name__
        raise ExportError(f"torch.export could not capture the model ({type(e).__name__}): {shorten(text)}\n"
                          f"Hint: {_export_hint(e, text)}.") from e


# ---- import -------------------------------------------------------------------------------
def _live_nodes(graph) -> set:
    """The nodes the output needs, and the in-place updates (which reach it through the tensor they write)."""
    out = [n for n in graph.nodes if n.op == "output" or n.op == "call_function" and is_inplace(n.target)]
    live, stack = set(out), list(out)
    while stack:
        n = stack.pop()
        for a in n.all_input_nodes:
            if a not in live:
                live.add(a)
                stack.append(a)
    return live


def _has_dynamic_size(n) -> bool:
    vals = [a.meta.get("val") for a in n.all_input_nodes]
    return any(isinstance(v, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in v.shape) for v in vals)


def _unsupported_error(items, decomposed: dict[str, int]) -> UnsupportedOpError:
    err = UnsupportedOpError(items)
    err.decomposed = dict(decomposed)
    if decomposed:
        err.args = (f"{err.args[0]}\nrt decomposed these ops with torch's core-ATen decompositions first: "
                    f"{', '.join(decomposed)}",)
    return err


class _Support:
    """Which calls rt converts, which it decomposes, which it cannot: the check that runs before
    conversion (so that every unsupported op is reported at once, with its model line), and the count
    of the decompositions conversion made."""

    def __init__(self):
        self.found: dict[str, list[str]] = {}       # unsupported overload -> places in the model
        self.dynamic: set[str] = set()              # ... of which a call has a dynamic size
        self.tried: dict[str, None] = {}            # overloads the check decomposed (ordered set)
        self.decomposed: dict[str, int] = {}        # decomposed overload -> calls (counted at conversion)

    def check(self, nodes, depth: int = 0) -> None:
        for n in nodes:
            if n.op != "call_function" or n.target is operator.getitem or n.target in _METADATA_ONLY:
                continue
            if isinstance(n.meta.get("val"), torch.SymInt):
                continue
            if lookup(n.target) is not None:
                continue
            dec = decompose_call(n) if depth < MAX_DEPTH else None
            if dec is None:
                if _has_dynamic_size(n):
                    self.dynamic.add(str(n.target))
                locs = self.found.setdefault(str(n.target), [])
                if where(n) not in locs:
                    locs.append(where(n))
                continue
            self.tried[str(n.target)] = None
            self.check(_live_in(dec.graph.graph), depth + 1)

    def count(self, n) -> None:
        self.decomposed[str(n.target)] = self.decomposed.get(str(n.target), 0) + 1

    def error(self, items) -> UnsupportedOpError:
        return _unsupported_error(items, {**dict.fromkeys(self.tried, 0), **self.decomposed})

    def raise_if_any(self) -> None:
        if self.found:
            items = []
            for key, locs in self.found.items():
                shown = "; ".join(locs[:3]) + (f"; and {len(locs) - 3} more place(s)" if len(locs) > 3 else "")
                hint = ("its decomposition is traced at fixed sizes only, and this call has a dynamic one"
                        if key in self.dynamic else hint_for(key))
                items.append((key, shown, hint))
            raise self.error(items)


def import_program(ep: torch.export.ExportedProgram, name: str = "model", dropped: list[str] | None = None,
                   dynamic_shapes=None) -> Module:
    """ExportedProgram -> torch dialect module. A call rt has no converter for is replaced by torch's
    decomposition of it (decompose.py); `module.meta["decomposed"]` counts them per overload.
    `module.meta["signature"]`: the arguments fixed at capture and the output structure (calling.py);
    dropped: the outputs the capture left out. Dynamic dims become size symbols (named after the
    user's Dims in `dynamic_shapes`), their ranges `module.meta["symbols"]`."""
    gm = ep.graph_module
    sig = ep.graph_signature
    module = Module(name)
    b = TorchBuilder(module)
    b.symbols = SymbolTable(ep, dynamic_shapes)
    if b.symbols.ranges:
        module.meta["symbols"] = dict(b.symbols.ranges)
    for k, (asked, proven) in b.symbols.narrowed.items():
        warnings.warn(f"dynamic dim {k}: the model takes {proven[0]}..{proven[1]} of the {asked[0]}..{asked[1]} "
                      "asked (torch.export narrowed it from the model's own checks); other sizes are refused",
                      stacklevel=3)
    live = _live_nodes(gm.graph)
    nodes = [n for n in gm.graph.nodes if n in live]
    support = _Support()
    support.check(nodes)
    support.raise_if_any()

    state = dict(ep.state_dict)
    state.update(getattr(ep, "constants", {}) or {})
    param_of = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    user_inputs = [s.arg.name for s in sig.input_specs
                   if s.kind == InputKind.USER_INPUT and not isinstance(s.arg, ConstantArgument)]
    for u in user_inputs:                  # input names are the forward() argument names
        b.names.add(u)
    env: dict = {}
    placeholders = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    for u in user_inputs:
        n = placeholders[u]
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue                       # a non-tensor input export specialised into the graph
        if val.dtype not in _TORCH_TO_NP:
            raise ExportError(f"input {u} has dtype {val.dtype}, which rt does not support")
        v = Value(u, TensorType(tuple(b.symbols.size(s) for s in val.shape), dtype_name(_TORCH_TO_NP[val.dtype])))
        module.inputs.append(v)
        env[n] = v
    for n in nodes:
        if n.op == "placeholder" and n not in env:
            if n.name not in param_of:
                raise ExportError(f"unexpected graph input {n.name}")
            target = param_of[n.name]
            env[n] = b.constant(target, tensor_to_numpy(state[target], f"weight {target}"))
    with size_ranges(b.symbols.ranges):
        outs = _convert(b, gm, [n for n in nodes if n.op != "placeholder"], env, support, 0)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    module.outputs = [b.as_value(o) for o in outs if o is not None]
    module.meta["signature"] = signature_of(ep, [o is None for o in outs], dropped)
    module.meta["decomposed"] = support.decomposed
    _drop_dead(module)
    if b.symbols.ranges:
        _check_dynamic_inputs(module)
        with size_ranges(module.meta["symbols"]):
            hold_at_range_ends(module)
    return module


def _check_dynamic_inputs(module: Module) -> None:
    """Every dynamic size is an input's dim (so a call can bind it): a symbol no input carries was pinned
    to the example's size somewhere in the capture; a dim like 2*S cannot be bound from a shape."""
    seen = set()
    for v in module.inputs:
        for d in v.type.shape:
            if isinstance(d, Sym):
                if len(d.terms) != 1 or d.terms[0][1] != 1 or len(d.terms[0][0]) != 1:
                    raise ExportError(f"input {v.name} has dim {d}: rt binds dynamic sizes from input dims "
                                      "that are one size each")
                seen |= d.symbols
    lost = sorted(set(module.meta["symbols"]) - seen)
    if lost:
        raise ExportError(f"dynamic dim(s) {', '.join(lost)} became fixed during capture (no input keeps them)")


def _drop_dead(module: Module) -> None:
    """Remove ops whose result reaches no output (results of a decomposition the model does not use)."""
    live, keep = set(module.outputs), []
    for op in reversed(module.ops):
        if op.result in live:
            keep.append(op)
            live.update(op.present_operands())
    if len(keep) < len(module.ops):
        used = {op.attrs["name"] for op in keep if op.name == "const"}
        for op in module.ops:
            if op.name == "const" and op.attrs["name"] not in used:
                module.constants.pop(op.attrs["name"], None)
        module.ops = keep[::-1]


def _convert(b: TorchBuilder, gm, nodes, env: dict, support: _Support, depth: int):
    """Convert FX nodes (of the program or of a decomposition) into b; returns what the output node
    returns, mapped."""
    result = None
    for n in nodes:
        if n.op == "call_function":
            if n.target in _METADATA_ONLY:
                continue
            if isinstance(n.meta.get("val"), torch.SymInt):    # size arithmetic: a size, not an op
                env[n] = b.symbols.size(n.meta["val"])
                continue
            args = _map(n.args, env)
            kwargs = _map(dict(n.kwargs), env)
            if n.target is operator.getitem:
                base, idx = args
                env[n] = base.get(idx, n) if isinstance(base, MultiResult) else base[idx]
                continue
            env[n] = _call(b, n, args, kwargs, support, depth)
            if is_inplace(n.target) and isinstance(n.args[0], fx.Node):
                write_back(b, n, n.args[0], env[n], env, where)   # later reads (also of its bases) see the update
        elif n.op == "get_attr":
            arr = tensor_to_numpy(getattr(gm, n.target), n.target)
            env[n] = b.constant(n.target if depth == 0 else b.module.add_constant(arr, "decomposition"), arr)
        elif n.op == "output":
            result = _map(n.args[0], env)
    return result


def _call(b: TorchBuilder, n, args, kwargs, support: _Support, depth: int):
    """One ATen call: its converter, else (or when the converter refuses this use) its decomposition."""
    fn = lookup(n.target)
    if fn is not None:
        mark, names = len(b.module.ops), set(b.names)
        try:
            return fn(b, n, args, kwargs)
        except UnsupportedOpError:
            raise
        except ExportError as e:       # e.g. a dtype rt lacks: say where the model asked for it
            raise ExportError(f"{e}; needed by {n.target} at {where(n)}") from e
        except Exception as e:
            if decompose_call(n) is None or depth >= MAX_DEPTH:
                raise support.error([(str(n.target), where(n), f"this use cannot be converted: {e}")]) from e
            source = b.module.meta.get("source", {})
            for op in b.module.ops[mark:]:  # what the refusing converter emitted before it gave up
                source.pop(op.result.name, None)
            del b.module.ops[mark:]
            b.names.intersection_update(names)
    dec = decompose_call(n) if depth < MAX_DEPTH else None
    if dec is None:
        raise support.error([(str(n.target), where(n), hint_for(n.target))])
    support.count(n)
    sub_env = dict(zip((p for p in dec.graph.graph.nodes if p.op == "placeholder"), dec.inputs(args, kwargs)))
    inner = [m for m in _live_in(dec.graph.graph) if m.op != "placeholder"]
    return _convert(b, dec.graph, inner, sub_env, support, depth + 1)


def _live_in(graph) -> list:
    live = _live_nodes(graph)
    return [n for n in graph.nodes if n in live]


def _map(x, env):
    if isinstance(x, fx.Node):
        return env[x]
    if isinstance(x, (list, tuple)):
        return type(x)(_map(i, env) for i in x)
    if isinstance(x, dict):
        return {k: _map(v, env) for k, v in x.items()}
    return x


def import_module(model: torch.nn.Module, args: tuple, kwargs: dict | None = None,
                  strict: bool = False, dynamic_shapes=None) -> Module:
    """nn.Module + example inputs (a tuple or one tensor) -> verified torch dialect module."""
    model = model.eval()
    with dropping_caches(model, kwargs) as dropped:
        ep = export_program(model, args, kwargs, strict, dynamic_shapes)
    module = import_program(ep, re.sub(r"[^A-Za-z0-9_]", "_", type(model).__name__.lower()), dropped,
                            dynamic_shapes)
    verify_module(module, "torch")
    return module
