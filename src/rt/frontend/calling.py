"""A model as its users call it: the non-tensor arguments torch.export fixed into the graph, the structure
of its outputs (from the export's output tree), and the caches an HF model returns that rt leaves out."""
from __future__ import annotations

import contextlib
import sys
import warnings

import torch
from torch.export.graph_signature import ConstantArgument, InputKind

from ..errors import ExportError
from ..signature import DroppedOutputWarning, Node, Signature


def signature_of(ep: torch.export.ExportedProgram, absent: list[bool], dropped: list[str] | None = None) -> Signature:
    """The calling convention of an exported program: its user arguments in order (constants baked) and
    its output structure; absent: which of the graph's outputs are None."""
    params, baked = [], {}
    for spec in ep.graph_signature.input_specs:
        if spec.kind == InputKind.USER_INPUT:
            params.append(spec.arg.name)
            if isinstance(spec.arg, ConstantArgument):
                baked[spec.arg.name] = spec.arg.value
    return Signature(params, baked, describe(ep.call_spec.out_spec, iter(absent)), list(dropped or []))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def describe(spec, absent) -> Node:
    """A torch pytree TreeSpec as an output structure; `absent` yields, for each leaf, whether it is None (a
    container torch knows but rt does not name is a tuple of its children)."""
    if spec is None or spec.is_leaf():
        return Node("none" if next(absent) else "tensor")
    children = [describe(c, absent) for c in spec.children()]
    kind, ctx = spec.type, spec.context
    if kind in (tuple, list):
        return Node(kind.__name__, children)
    if kind is dict:
        return Node("dict", children, list(ctx))
    if isinstance(ctx, type) and hasattr(ctx, "_fields"):                  # a namedtuple (context: its class)
        return Node("namedtuple", children, list(ctx._fields), _qualname(ctx), ctx)
    if isinstance(kind, type) and hasattr(kind, "n_fields"):               # torch.return_types (structseq)
        return Node("namedtuple", children, list(kind.__match_args__), _qualname(kind), kind)
    if isinstance(ctx, list) and all(isinstance(k, str) for k in ctx) and len(ctx) == len(children):
        return Node("record", children, list(ctx), _qualname(kind), kind)  # a ModelOutput: fields by name
    return Node("tuple", children)


def _cache_class():
    cache_utils = sys.modules.get("transformers.cache_utils")
    return getattr(cache_utils, "Cache", None)


def _without_caches(out, cache_cls, dropped: list[str]):
    """`out` (a ModelOutput, tuple or list) without the cache objects among its items."""
    if isinstance(out, dict) and hasattr(out, "to_tuple"):                 # a ModelOutput
        kept = {}
        for k, v in out.items():
            if isinstance(v, cache_cls):
                dropped.append(f"{k} (a {type(v).__name__})")
            else:
                kept[k] = v
        return type(out)(**kept)
    if type(out) in (tuple, list):
        dropped += [f"output {i} (a {type(v).__name__})" for i, v in enumerate(out) if isinstance(v, cache_cls)]
        return type(out)(v for v in out if not isinstance(v, cache_cls))
    return out


@contextlib.contextmanager
def dropping_caches(model: torch.nn.Module, kwargs: dict | None):
    """While capturing `model`, leave the KV cache an HF model returns (a transformers Cache) out of its
    outputs, unless the caller asked for one (use_cache=True or past_key_values): rt keeps no state
    between calls. Yields the list of what was left out (filled by the capture), and says so in one line."""
    cache_cls = _cache_class()
    dropped: list[str] = []
    asked = (kwargs or {}).get("use_cache") is True or "past_key_values" in (kwargs or {})

    def hook(module, args, out):
        kept = _without_caches(out, cache_cls, found := [])
        if found and asked:
            raise ExportError(f"{type(model).__name__} returns a cache ({', '.join(found)}) because it was "
                              "asked for one; rt keeps no state between calls yet: compile without use_cache=True "
                              "or past_key_values")
        dropped[:] = found
        return kept

    handle = model.register_forward_hook(hook) if cache_cls is not None else None
    try:
        yield dropped
    finally:
        if handle is not None:
            handle.remove()
    if dropped:
        warnings.warn(f"rt: {type(model).__name__}'s output {', '.join(dropped)} is left out of the compiled "
                      "model: rt keeps no cache between calls (pass use_cache=False to skip it)",
                      DroppedOutputWarning, stacklevel=4)
