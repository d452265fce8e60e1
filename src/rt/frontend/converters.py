"""One converter per ATen overload, registered in one table.

A converter gets the FX node's arguments with tensors already mapped to IR values and emits torch
dialect ops through the builder. By default an overload maps to `torch.<op>[.<overload>]` with its
Tensor arguments as operands and the rest as attributes named as in the ATen schema (the default
schema converter applies to every overload whose torch-dialect op is declared); overloads that need
more (vanishing, splitting, normalising) register their own function with @converter.
"""
from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..dialects.registry import REGISTRY

if TYPE_CHECKING:
    from .importer import Builder

Converter = Callable[["Builder", Any, list, dict], Any]   # (builder, node, args, kwargs) -> value(s)
CONVERTERS: dict[Any, Converter] = {}

aten = torch.ops.aten

# Arguments that only say where/how torch stores a tensor: rt decides these itself.
PLACEMENT_ARGS = ("layout", "device", "pin_memory", "memory_format", "non_blocking", "copy")


def ir_name(overload) -> str:
    """aten.add.Tensor -> torch.add.Tensor ; aten.linear.default -> torch.linear"""
    packet, over = overload._schema.name.split("::")[1], overload._overloadname
    return f"torch.{packet}" if over == "default" else f"torch.{packet}.{over}"


def converter(*overloads):
    def deco(fn: Converter) -> Converter:
        for o in overloads:
            CONVERTERS[o] = fn
        return fn
    return deco


def _is_tensor_type(t) -> bool:
    if isinstance(t, torch._C.OptionalType):
        t = t.getElementType()
    return t.isSubtypeOf(torch._C.TensorType.get())


def _is_tensor_list_type(t) -> bool:
    return isinstance(t, torch._C.ListType) and _is_tensor_type(t.getElementType())


def bind(node, args, kwargs) -> dict:
    """Schema argument name -> value (defaults filled in)."""
    schema = node.target._schema
    bound = {a.name: a.default_value if a.has_default_value() else None for a in schema.arguments}
    for a, v in zip(schema.arguments, args):
        bound[a.name] = v
    bound.update(kwargs)
    return bound


def schema_converter(builder, node, args, kwargs, name: str | None = None):
    """Tensor args -> operands (a Python scalar in a Tensor slot becomes a 0-d const; a Tensor list is
    the variadic tail), everything else -> attributes, by the ATen schema."""
    schema = node.target._schema
    bound = bind(node, args, kwargs)
    operands, attrs = [], {}
    for a in schema.arguments:
        v = bound[a.name]
        if _is_tensor_list_type(a.type):
            operands.extend(builder.as_value(x) if x is not None else None for x in v)
        elif _is_tensor_type(a.type):
            operands.append(None if v is None else builder.as_value(v))
        elif a.name in PLACEMENT_ARGS:
            continue
        else:
            attrs[a.name] = builder.attr(v)
    return builder.emit(name or ir_name(node.target), operands, attrs, node)


def lookup(target) -> Converter | None:
    fn = CONVERTERS.get(target)
    if fn is not None:
        return fn
    if isinstance(target, torch._ops.OpOverload) and ir_name(target) in REGISTRY:
        return schema_converter
    return None


def supported_overloads() -> list[str]:
    """Every ATen overload rt converts, as 'aten.<op>.<overload>'."""
    names = set()
    for o in CONVERTERS:
        names.add(str(o))
    for d in REGISTRY.dialect_ops("torch"):
        parts = d.name.split(".")
        names.add("aten." + ".".join(parts[1:]) + (".default" if len(parts) == 2 else ""))
    return sorted(names)


# ---- hints for unsupported ops ----------------------------------------------------------------
HINTS = {
    "cummax": "no running max in rt; compute it outside the model or use a fixed-window amax",
    "cummin": "no running min in rt; compute it outside the model",
    "fft": "rt has no FFT; precompute a DFT matrix as a constant and use torch.matmul",
    "rfft": "rt has no FFT; precompute a DFT matrix as a constant and use torch.matmul",
    "real": "rt has no complex tensors; keep complex math outside the model",
    "conv": "rt has no convolution yet; a 1x1 convolution is an nn.Linear over the channel dim",
    "batch_norm": "fold eval-mode BatchNorm into the preceding Linear (scale the weight, shift the bias)",
    "group_norm": "rt has no GroupNorm; nn.LayerNorm over the last dim is supported",
    "rms_norm": "write RMSNorm as x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight",
    "einsum": "write the contraction with torch.matmul/bmm and permute",
    "max": "use torch.amax (values only)",
    "min": "use torch.minimum or -amax(-x)",
    "var": "write it as ((x - x.mean(d, keepdim=True)) ** 2).mean(d)",
    "std": "write it as torch.sqrt of the variance written with mean",
    "sort": "rt has no sorting; do it outside the model",
    "topk": "rt has no top-k; do it outside the model",
    "argmax": "rt returns values only; take argmax of rt's output outside the model",
    "nonzero": "data-dependent shapes are not supported; use masks (torch.where) instead",
    "masked_select": "data-dependent shapes are not supported; use torch.where",
    "scatter": "rt has no scatter; use torch.where with a mask",
    "index_put": "rt has no in-place indexing; use torch.where with a mask",
    "copy_": "avoid in-place writes into tensors; build the result with torch.cat or torch.where",
}


def hint_for(target) -> str:
    """What the user can do about an unsupported ATen overload."""
    name = str(target)
    base = name.split(".")[1] if name.startswith("aten.") else name
    stem = base.strip("_")
    for key, hint in HINTS.items():
        if stem == key or stem.startswith(key + "_") or stem.startswith("fft_") and key == "fft":
            return hint
    supported = supported_overloads()
    same_op = [s for s in supported if s.split(".")[1] == base]
    if same_op:
        return "supported overloads of this op: " + ", ".join(same_op)
    close = difflib.get_close_matches(f"aten.{base}", [s.rsplit(".", 1)[0] for s in supported], n=2, cutoff=0.75)
    if close:
        return "nearest supported: " + ", ".join(dict.fromkeys(close))
    return "rewrite this part with supported ops (see rt.frontend.supported_overloads())"


# ---- ops that vanish -----------------------------------------------------------------------
@converter(aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default,
           aten.alias.default, aten.clone.default, aten.contiguous.default, aten.detach.default,
           aten.lift_fresh_copy.default, aten.lift_fresh.default, aten.detach_.default)
def _identity(builder, node, args, kwargs):
    if node.target in (aten.dropout.default, aten.feature_dropout.default, aten.alpha_dropout.default):
        train = bind(node, args, kwargs).get("train")
        if train:
            from ..errors import ExportError
            raise ExportError("the model was exported in training mode (dropout active); call model.eval()")
    return builder.as_value(args[0])


# ---- casts: a cast to the same dtype is the identity ------------------------------------------
@converter(aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten._to_copy.default)
def _cast(builder, node, args, kwargs):
    x = builder.as_value(args[0])
    dtype = bind(node, args, kwargs).get("dtype")
    if dtype is None or builder.attr(dtype) == x.type.dtype:
        return x
    return schema_converter(builder, node, args, kwargs)


@converter(aten.type_as.default, aten.to.other)
def _type_as(builder, node, args, kwargs):
    x, other = builder.as_value(args[0]), builder.as_value(args[1])
    if x.type.dtype == other.type.dtype:
        return x
    return builder.emit("torch.to.other", [x, other], {}, node)


# ---- Scalar overloads of arithmetic: the .Tensor op with a 0-d constant -------------------------
@converter(aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar)
def _arith_scalar(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    name = ir_name(node.target).rsplit(".", 1)[0] + ".Tensor"
    attrs = {"alpha": b["alpha"]} if "alpha" in b and b["alpha"] not in (None, 1) else {}
    return builder.emit(name, [builder.as_value(b["self"]), builder.as_value(b["other"])], attrs, node)


@converter(aten.where.Scalar, aten.where.ScalarSelf, aten.where.ScalarOther)
def _where_scalar(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    return builder.emit("torch.where.self", [builder.as_value(b[k]) for k in ("condition", "self", "other")], {},
                        node)


@converter(aten.mean.default, aten.sum.default)
def _full_reduce(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    name = "torch.mean.dim" if node.target is aten.mean.default else "torch.sum.dim_IntList"
    attrs = {"dtype": builder.attr(b["dtype"])} if b.get("dtype") is not None else {}
    return builder.emit(name, [builder.as_value(b["self"])], attrs, node)


# ---- slicing: clamp bounds so the attributes are plain in-range ints -------------------------
def _norm(d, rank):
    return d % max(rank, 1)


@converter(aten.slice.Tensor)
def _slice(builder, node, args, kwargs):
    from ..dialects.torch_ops import slice_bounds
    b = bind(node, args, kwargs)
    x = builder.as_value(b["self"])
    dim = _norm(b["dim"], x.type.rank)
    start, n, step = slice_bounds(x.type.shape[dim], b["start"], b["end"], b["step"])
    if start == 0 and step == 1 and n == x.type.shape[dim]:
        return x                                    # full slice: the tensor itself
    return builder.emit("torch.slice.Tensor", [x], {"dim": dim, "start": start, "end": start + n * step,
                                                     "step": step}, node)


# ---- reshapes and expands that keep the shape are the identity -------------------------------
@converter(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default)
def _same_shape(builder, node, args, kwargs):
    v = schema_converter(builder, node, args, kwargs)
    x = builder.as_value(args[0])
    if v.type == x.type:
        builder.drop_last()
        return x
    return v


# ---- split-like ops: one slice per use -----------------------------------------------------
class MultiResult:
    """The tuple a split-like ATen op returns; each getitem use emits its own op."""

    def __init__(self, builder, make: Callable[[int, Any], Any], count: int):
        self.builder, self.make, self.count = builder, make, count

    def get(self, index: int, node):
        if not -self.count <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} results")
        return self.make(index % self.count, node)

    def __getitem__(self, index):
        return self.get(index, None)

    def __len__(self):
        return self.count

    def __iter__(self):
        return (self.get(i, None) for i in range(self.count))


def _slices(builder, x, dim: int, bounds: list[tuple[int, int]]) -> MultiResult:
    def make(i, node):
        start, end = bounds[i]
        if start == 0 and end == x.type.shape[dim]:
            return x
        return builder.emit("torch.slice.Tensor", [x], {"dim": dim, "start": start, "end": end, "step": 1},
                            node)
    return MultiResult(builder, make, len(bounds))


def _split_bounds(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, at = [], 0
    for s in sizes:
        out.append((at, at + s))
        at += s
    return out


@converter(aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default, aten.tensor_split.sections,
           aten.unsafe_split.Tensor)
def _split(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    x = builder.as_value(b["self"])
    dim = _norm(b.get("dim", 0) or 0, x.type.rank)
    n = x.type.shape[dim]
    t = node.target
    if t in (aten.split.Tensor, aten.unsafe_split.Tensor):
        size = b["split_size"]
        sizes = [min(size, n - i) for i in range(0, n, size)] or [0]
    elif t is aten.split_with_sizes.default:
        sizes = list(b["split_sizes"])
    elif t is aten.chunk.default:
        size = math.ceil(n / b["chunks"])
        sizes = [min(size, n - i) for i in range(0, n, size)] if size else [0]
    else:   # tensor_split.sections
        k = b["sections"]
        sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    return _slices(builder, x, dim, _split_bounds(n, sizes))


@converter(aten.unbind.int)
def _unbind(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    x = builder.as_value(b["self"])
    dim = _norm(b["dim"], x.type.rank)

    def make(i, n):
        return builder.emit("torch.select.int", [x], {"dim": dim, "index": i}, n)
    return MultiResult(builder, make, x.type.shape[dim])


# ---- scaled_dot_product_attention: dropout_p is a training-time fact (ignored, like eval mode) --
@converter(aten.scaled_dot_product_attention.default)
def _sdpa(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    operands = [builder.as_value(b[k]) if b[k] is not None else None for k in ("query", "key", "value", "attn_mask")]
    attrs = {"is_causal": bool(b["is_causal"])}
    if b.get("scale") is not None:
        attrs["scale"] = float(b["scale"])
    if b.get("enable_gqa"):
        attrs["enable_gqa"] = True
    return builder.emit("torch.scaled_dot_product_attention", operands, attrs, node)
