"""The decomposition fallback: an ATen call rt has no converter for (or whose converter refuses that use)
is rewritten by torch's own core-ATen decomposition table (the one `ExportedProgram.run_decompositions`
uses), for that call only, so every op rt knows stays whole (linear, scaled_dot_product_attention,
layer_norm, convolution, ...).

`decompose_call` traces the table's function (or, for an op outside the table that torch implements by
other ops, that composite kernel, as run_decompositions does) for one FX node on stand-ins of the node's
own inputs (their recorded shapes and dtypes), then functionalised, into a small graph of ATen ops, which the
importer converts in the node's place; an op of that graph rt lacks is decomposed in turn (up to MAX_DEPTH levels). The graph
is traced once per node (`node.meta`) and carries the node's source location.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.fx as fx
from torch.utils import _pytree as pytree

MAX_DEPTH = 8           # decompositions of decompositions; torch's table reaches core ATen in 2-3
_META_KEY = "rt_decomposition"
_SOURCE_META = ("stack_trace", "nn_module_stack")


@functools.lru_cache(maxsize=1)
def decomposition_table() -> dict:
    """torch's core-ATen decomposition table, {OpOverload: function} (built once: ~2 s)."""
    return dict(torch.export.default_decompositions().items())


def _composite(target) -> bool:
    """An op torch implements by other ops (CompositeImplicitAutograd), like run_decompositions does."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(target.name(), "CompositeImplicitAutograd")


def decomposition_of(target):
    """torch's decomposition function of an ATen overload: the table's, else its composite kernel."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    fn = decomposition_table().get(target)
    if fn is None and _composite(target):
        fn = target.decompose
    return fn


def has_decomposition(target) -> bool:
    return decomposition_of(target) is not None


class Decomposition:
    """A traced decomposition of one call: `graph` (an fx.GraphModule of ATen ops) whose placeholders
    take, in order, the leaves at `tensor_leaves` of the flattened (args, kwargs) of the call."""

    def __init__(self, graph: fx.GraphModule, tensor_leaves: list[int]):
        self.graph, self.tensor_leaves = graph, tensor_leaves

    def inputs(self, args, kwargs) -> list:
        """The call's (mapped) arguments at the placeholders' positions."""
        leaves = pytree.tree_flatten((args, kwargs))[0]
        return [leaves[i] for i in self.tensor_leaves]


def _stand_in(x):
    """A real (uninitialised) tensor of a node's recorded shape and dtype, or its static value."""
    if isinstance(x, fx.Node):
        val = x.meta.get("val")
        if isinstance(val, torch.Tensor):
            if any(isinstance(s, torch.SymInt) and not s.node.expr.is_number for s in val.shape):
                # int() of a dynamic size would pin it to the example's (in the user's program too)
                raise ValueError("decompositions are traced at fixed sizes; this call has a dynamic one")
            return torch.empty(tuple(int(s) for s in val.shape), dtype=val.dtype)
        if isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool)):
            raise ValueError("a symbolic value")
        return val
    return x


def _mutable(x):
    """FX's immutable argument lists and dicts as plain ones (decompositions may edit their arguments)."""
    if isinstance(x, (list, tuple)):
        return (list if isinstance(x, list) else tuple)(_mutable(v) for v in x)
    if isinstance(x, dict):
        return {k: _mutable(v) for k, v in x.items()}
    return x


def decompose_call(node: fx.Node) -> Decomposition | None:
    """torch's decomposition of one call, traced (None when the table has none or it cannot be traced:
    e.g. a data-dependent decomposition)."""
    if _META_KEY in node.meta:
        return node.meta[_META_KEY]
    result = None
    fn = decomposition_of(node.target)
    if fn is not None:
        leaves, spec = pytree.tree_flatten((_mutable(node.args), _mutable(node.kwargs)))
        positions = [i for i, x in enumerate(leaves)
                     if isinstance(x, fx.Node) and isinstance(x.meta.get("val"), torch.Tensor)]
        try:
            concrete = [_stand_in(x) for x in leaves]

            def call(*tensors):
                filled = list(concrete)
                for i, t in zip(positions, tensors):
                    filled[i] = t
                args, kwargs = pytree.tree_unflatten(filled, spec)
                out = fn(*args, **kwargs)
                return tuple(out) if isinstance(out, tuple) else out     # not a torch.return_types class
            from torch.fx.experimental.proxy_tensor import make_fx
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                inputs = [concrete[i] for i in positions]
                gm = _functional(make_fx(call, tracing_mode="fake")(*inputs), inputs)
        except Exception:
            gm = None
        if gm is not None:
            for sub in gm.graph.nodes:
                for key in _SOURCE_META:
                    if key in node.meta:
                        sub.meta[key] = node.meta[key]
            result = Decomposition(gm, positions)
    node.meta[_META_KEY] = result
    return result


def _mutates(gm: fx.GraphModule) -> bool:
    return any(n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable
               for n in gm.graph.nodes)


def _functional(gm: fx.GraphModule, inputs) -> fx.GraphModule:
    """The traced decomposition without in-place writes: retraced under functionalisation when it has
    any (a composite kernel that fills slices of a new tensor becomes slice_scatter)."""
    if not _mutates(gm):
        return gm
    from torch.fx.experimental.proxy_tensor import make_fx
    return make_fx(torch.func.functionalize(gm, remove="mutations"), tracing_mode="fake")(*inputs)
