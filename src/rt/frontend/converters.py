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
from ..dialects.registry import normalize_dim as _norm

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


def schema_converter(builder, node, args, kwargs, name: str | None = None, extra=None):
    """Tensor args -> operands (a Python scalar in a Tensor slot becomes a 0-d const; a Tensor list is
    the variadic tail), everything else -> attributes, by the ATen schema. extra: attributes to add."""
    bound = bind(node, args, kwargs)
    schema = node.target._schema
    operands, attrs = [], dict(extra or {})
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
    """The converter of an ATen overload: its own (@converter), the schema converter when its torch
    dialect op is declared (a multi-result op: one op per result used), the `.Tensor` form for a
    `.Scalar` overload (the scalar as a 0-d constant), else None."""
    fn = CONVERTERS.get(target)
    if fn is not None:
        return fn
    if not isinstance(target, torch._ops.OpOverload):
        return None
    name = ir_name(target)
    if name in REGISTRY:
        return multi_result_converter if REGISTRY[name].extra.get("results") else schema_converter
    alt = same_call(target)
    if alt is not None and alt is not target:
        fn = lookup(alt)
        if fn is not None:
            return lambda b, node, args, kwargs: fn(b, _As(node, alt), args, kwargs)
    return None


class _As:
    """An FX node seen as a call of another overload with the same arguments (view_copy as view)."""

    def __init__(self, node, target):
        self._node, self.target = node, target

    def __getattr__(self, key):
        return getattr(self._node, key)


SAME_CALL = {aten._embedding_bag_forward_only.default: aten._embedding_bag.default}


def same_call(target):
    """The overload that computes the same from the same arguments, rt's spelling: aten.fmod.Scalar ->
    aten.fmod.Tensor (the scalar a 0-d constant; div.Scalar_mode -> div.Tensor_mode), aten.view_copy ->
    aten.view (rt's values are never aliased, so a copy is its view), SAME_CALL's pairs."""
    if target in SAME_CALL:
        return SAME_CALL[target]
    packet_name, over = target._schema.name.split("::")[1], target._overloadname
    if over in ("Scalar", "Scalar_mode"):
        packet = getattr(torch.ops.aten, packet_name, None)
        return getattr(packet, over.replace("Scalar", "Tensor"), None)
    if packet_name.endswith("_copy"):
        packet = getattr(torch.ops.aten, packet_name[:-len("_copy")], None)
        return getattr(packet, over, None) if packet is not None else None
    if is_inplace(target):
        packet = getattr(torch.ops.aten, packet_name[:-1], None)
        return getattr(packet, over, None) if packet is not None else None
    return None


def is_inplace(target) -> bool:
    """An in-place ATen overload (x.masked_fill_(...)): it returns its first argument, updated."""
    if not isinstance(target, torch._ops.OpOverload):
        return False
    name = target._schema.name.split("::")[1]
    return name.endswith("_") and not name.endswith("__") and bool(target._schema.arguments) and \
        target._schema.arguments[0].alias_info is not None and target._schema.arguments[0].alias_info.is_write


def multi_result_converter(builder, node, args, kwargs, name: str | None = None, whole: dict | None = None):
    """An ATen op with several results: one torch dialect op per result used, with `result` = its index.
    whole: {index: fn(builder, node, bound)} for results that rt builds as a whole op instead
    (native_layer_norm's output is torch.layer_norm)."""
    name = name or ir_name(node.target)

    def make(i, use):
        if whole and i in whole:
            return whole[i](builder, node, bind(node, args, kwargs))
        return schema_converter(builder, node, args, kwargs, name, extra={"result": i})
    return MultiResult(builder, make, REGISTRY[name].extra["results"])


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
    "view_as_real": "rt has no complex tensors; keep complex math outside the model",
    "view_as_complex": "rt has no complex tensors; keep complex math outside the model",
    "local_scalar_dense": "tensor.item() reads a value into Python; compute it outside the model or keep it a tensor",
    "item": "tensor.item() reads a value into Python; compute it outside the model or keep it a tensor",
    "nonzero": "data-dependent shapes are not supported; use masks (torch.where) instead",
    "masked_select": "data-dependent shapes are not supported; use torch.where",
    "unique": "data-dependent shapes are not supported; do it outside the model",
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


# (Scalar overloads of arithmetic, add.Scalar, fmod.Scalar, ...: the .Tensor op with a 0-d constant, in lookup)
@converter(aten.where.Scalar, aten.where.ScalarSelf, aten.where.ScalarOther)
def _where_scalar(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    return builder.emit("torch.where.self", [builder.as_value(b[k]) for k in ("condition", "self", "other")], {},
                        node)


_FULL_REDUCE = {aten.mean.default: "torch.mean.dim", aten.sum.default: "torch.sum.dim_IntList",
                aten.max.default: "torch.amax", aten.min.default: "torch.amin"}


@converter(*_FULL_REDUCE)
def _full_reduce(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    attrs = {"dtype": builder.attr(b["dtype"])} if b.get("dtype") is not None else {}
    return builder.emit(_FULL_REDUCE[node.target], [builder.as_value(b["self"])], attrs, node)


# ---- overloads that are another op of the dialect under another name --------------------------
_SAME_AS = {
    aten.max.other: "torch.maximum", aten.min.other: "torch.minimum",
    aten.clamp_min.Tensor: "torch.clamp.Tensor", aten.clamp_max.Tensor: "torch.clamp.Tensor",
    aten.adaptive_avg_pool2d.default: "torch._adaptive_avg_pool2d",
    aten.adaptive_avg_pool3d.default: "torch._adaptive_avg_pool3d",
    aten.divide.Tensor: "torch.div.Tensor", aten.true_divide.Tensor: "torch.div.Tensor",
    aten.multiply.Tensor: "torch.mul.Tensor", aten.subtract.Tensor: "torch.sub.Tensor",
}


@converter(*_SAME_AS)
def _same_as(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    name = _SAME_AS[node.target]
    operands = [builder.as_value(b["self"])]
    if node.target in (aten.clamp_min.Tensor, aten.clamp_max.Tensor):
        bound = b["min"] if node.target is aten.clamp_min.Tensor else b["max"]
        operands += [builder.as_value(bound), None] if node.target is aten.clamp_min.Tensor else \
            [None, builder.as_value(bound)]
        return builder.emit(name, operands, {}, node)
    attrs = {k: builder.attr(v) for k, v in b.items() if k not in ("self", "other") and v is not None}
    if "other" in b:
        operands.append(builder.as_value(b["other"]))
    return builder.emit(name, operands, attrs, node)


@converter(aten.clamp_min.default, aten.clamp_max.default)
def _clamp_bound(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    key = "min" if node.target is aten.clamp_min.default else "max"
    return builder.emit("torch.clamp", [builder.as_value(b["self"])], {key: b[key]}, node)


@converter(aten.div.Tensor_mode, aten.floor_divide.default)
def _div_mode(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    mode = "floor" if node.target is aten.floor_divide.default else b["rounding_mode"]
    operands = [builder.as_value(b["self"]), builder.as_value(b["other"])]
    if mode is None:
        return builder.emit("torch.div.Tensor", operands, {}, node)
    return builder.emit("torch.div.Tensor_mode", operands, {"rounding_mode": mode}, node)


# ---- symbolic-size queries: static shapes make them Python ints ---------------------------------
@converter(aten.sym_size.int, aten.sym_numel.default, aten.sym_stride.int, aten.sym_storage_offset.default)
def _sym_query(builder, node, args, kwargs):
    from ..dialects.strides import contiguous_strides
    b = bind(node, args, kwargs)
    t = builder.as_value(b["self"]).type
    if node.target is aten.sym_size.int:
        return t.shape[_norm(b["dim"], t.rank)]
    if node.target is aten.sym_stride.int:
        return contiguous_strides(t.shape)[_norm(b["dim"], t.rank)]
    return t.numel if node.target is aten.sym_numel.default else 0


# ---- slicing: clamp bounds so the attributes are plain in-range ints -------------------------
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
@converter(aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.expand.default,
           aten.unflatten.int)
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



# ---- ops with several results -----------------------------------------------------------------
def _emit_bound(name: str, operand_keys, attr_keys, rename=None):
    """A `whole` builder for multi_result_converter: emits `name` from the bound ATen arguments."""
    def build(builder, node, b):
        operands = [None if b.get(k) is None else builder.as_value(b[k]) for k in operand_keys]
        attrs = {(rename or {}).get(k, k): builder.attr(b[k]) for k in attr_keys if b.get(k) is not None}
        return builder.emit(name, operands, attrs, node)
    return build


@converter(aten.native_layer_norm.default)
def _native_layer_norm(builder, node, args, kwargs):
    return multi_result_converter(builder, node, args, kwargs, whole={0: _emit_bound(
        "torch.layer_norm", ("input", "weight", "bias"), ("normalized_shape", "eps"))})


def _batch_norm_whole(training):
    def build(builder, node, b):
        operands = [None if b.get(k) is None else builder.as_value(b[k])
                    for k in ("input", "weight", "bias", "running_mean", "running_var")]
        train = b["training"] if training is None else training
        return builder.emit("torch.batch_norm", operands,
                            {"training": bool(train), "momentum": b["momentum"], "eps": b["eps"]}, node)
    return build


@converter(aten._native_batch_norm_legit_no_training.default, aten._native_batch_norm_legit.default,
           aten._native_batch_norm_legit.no_stats, aten.native_batch_norm.default)
def _native_batch_norm(builder, node, args, kwargs):
    training = False if node.target is aten._native_batch_norm_legit_no_training.default else None
    return multi_result_converter(builder, node, args, kwargs, whole={0: _batch_norm_whole(training)})


@converter(aten.native_group_norm.default)
def _native_group_norm(builder, node, args, kwargs):
    return multi_result_converter(builder, node, args, kwargs, whole={0: _emit_bound(
        "torch.group_norm", ("input", "weight", "bias"), ("group", "eps"), rename={"group": "num_groups"})})


@converter(aten.max_pool1d_with_indices.default, aten.max_pool2d_with_indices.default,
           aten.max_pool3d_with_indices.default)
def _max_pool_with_indices(builder, node, args, kwargs):
    values_only = ir_name(node.target).replace("_with_indices", "")        # torch.max_pool2d
    return multi_result_converter(builder, node, args, kwargs, whole={0: lambda builder_, node_, bound: (
        schema_converter(builder, node, args, kwargs, values_only))})


@converter(aten.max.dim, aten.min.dim)
def _max_dim(builder, node, args, kwargs):
    """(values, indices) = torch.amax / torch.argmax over one dim (min: amin / argmin)."""
    b = bind(node, args, kwargs)
    x = builder.as_value(b["self"])
    stem = "max" if node.target is aten.max.dim else "min"

    def make(i, use):
        if i == 0:
            return builder.emit(f"torch.a{stem}", [x], {"dim": [b["dim"]], "keepdim": b["keepdim"]}, node)
        return builder.emit(f"torch.arg{stem}", [x], {"dim": b["dim"], "keepdim": b["keepdim"]}, node)
    return MultiResult(builder, make, 2)


@converter(aten.native_dropout.default)
def _native_dropout(builder, node, args, kwargs):
    """(output, keep-mask) of dropout: in eval mode, the input and a mask of ones."""
    b = bind(node, args, kwargs)
    if b.get("train") is not False:
        from ..errors import ExportError
        raise ExportError("the model was exported in training mode (dropout active); call model.eval()")
    x = builder.as_value(b["input"])
    return MultiResult(builder, lambda i, use: x if i == 0 else builder.emit(
        "torch.ones_like", [x], {"dtype": "bool"}, node), 2)


# ---- convolutions: every conv*d is torch.convolution -----------------------------------------------
@converter(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
           aten.conv2d.padding, aten.conv3d.padding, aten.conv_transpose1d.default, aten.conv_transpose2d.input,
           aten.conv_transpose3d.input, aten._convolution.default)
def _conv(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    x, w = builder.as_value(b["input"]), builder.as_value(b["weight"])
    bias = None if b.get("bias") is None else builder.as_value(b["bias"])
    nd = w.type.rank - 2

    def full(v, default):
        v = default if v is None else v
        v = [v] if isinstance(v, int) else list(v)
        return v * nd if len(v) == 1 else v
    transposed = "transpose" in str(node.target) or bool(b.get("transposed"))
    stride, dilation = full(b.get("stride"), 1), full(b.get("dilation"), 1)
    padding = b.get("padding")
    if isinstance(padding, str):                     # conv*d.padding: "valid" or "same"
        if padding == "valid":
            padding = [0] * nd
        elif padding == "same":
            total = [d * (k - 1) for d, k in zip(dilation, w.type.shape[2:])]
            padding = [t // 2 for t in total]
            extra = [t - 2 * (t // 2) for t in total]
            if any(extra):                           # an even kernel: the odd pixel goes on the right
                pad = [p for e in reversed(extra) for p in (0, e)]
                x = builder.emit("torch.constant_pad_nd", [x], {"pad": pad}, node)
        else:
            raise ValueError(f"padding {padding!r} is not 'same' or 'valid'")
    attrs = {"stride": stride, "padding": full(padding, 0), "dilation": dilation, "transposed": transposed,
             "output_padding": full(b.get("output_padding"), 0), "groups": b.get("groups") or 1}
    return builder.emit("torch.convolution", [x, w, bias], attrs, node)


# ---- index_put: the variadic indices go last ------------------------------------------------------
@converter(aten.index_put.default)
def _index_put(builder, node, args, kwargs):
    b = bind(node, args, kwargs)
    indices = [None if i is None else builder.as_value(i) for i in b["indices"]]
    return builder.emit("torch.index_put", [builder.as_value(b["self"]), builder.as_value(b["values"])] + indices,
                        {"accumulate": bool(b["accumulate"])}, node)
