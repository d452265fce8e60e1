"""In-place ATen ops (x.copy_(y), x.fill_(v), x.masked_fill_(m, v)) in rt's value semantics.

The importer converts an in-place op as its functional twin; later reads of the tensor it updated see the
new value. When that tensor is a view of another (`shifted[:, 1:] = ids[:, :-1]` writes through a slice
of `shifted`), the update is written back into the view's base, and on up to the root: a slice becomes a
slice_scatter, a selection a select_scatter, a reshape the inverse reshape, a transpose the same
transpose, a permutation its inverse, contiguous() the value itself (or nothing, where it copied a
strided tensor). A write through any other view is refused (its update would be lost).
Views of a base taken before it was updated keep the value they had (a read through such a stale view
after the write is not seen as the update)."""
from __future__ import annotations

import torch
import torch.fx as fx

from ..dialects.ir import Value
from ..errors import UnsupportedOpError

aten = torch.ops.aten


def _args(view: fx.Node) -> dict:
    """The view call's arguments by schema name, defaults filled in."""
    names = [a.name for a in view.target._schema.arguments]
    out = {a.name: a.default_value for a in view.target._schema.arguments}
    out.update(zip(names, view.args))
    out.update(view.kwargs)
    return out


def _slice(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    a = _args(view)
    return b.emit("torch.slice_scatter", [base, new], {k: a[k] for k in ("dim", "start", "end", "step")}, node)


def _select(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    a = _args(view)
    return b.emit("torch.select_scatter", [base, new], {"dim": a["dim"], "index": a["index"]}, node)


def _reshape(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    return b.emit("torch.reshape", [new], {"shape": list(base.type.shape)}, node)


def _transpose(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    a = _args(view)
    return b.emit("torch.transpose.int", [new], {"dim0": a["dim0"], "dim1": a["dim1"]}, node)


def _t(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    return b.emit("torch.t", [new], {}, node)


def _permute(b, view: fx.Node, base: Value, new: Value, node) -> Value:
    dims = [d % len(_args(view)["dims"]) for d in _args(view)["dims"]]
    return b.emit("torch.permute", [new], {"dims": sorted(range(len(dims)), key=dims.__getitem__)}, node)


# view overload -> how an update of the view becomes the update of its base (view node, base, new view value)
WRITE_BACK = {
    aten.slice.Tensor: _slice,
    aten.select.int: _select,
    **dict.fromkeys((aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.unsqueeze.default,
                     aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints,
                     aten.unflatten.int), _reshape),
    aten.transpose.int: _transpose,
    aten.t.default: _t,
    aten.permute.default: _permute,
    aten.contiguous.default: lambda b, view, base, new, node: new,      # returned its input itself
}


def _made_a_copy(view: fx.Node) -> bool:
    """Whether a view-schema op returned a new tensor, not an alias: contiguous() of a strided tensor
    copies it, so a write into its result stays there, as in torch (BEiT's relative position index)."""
    if view.target is not aten.contiguous.default:
        return False
    val = view.args[0].meta.get("val")
    return isinstance(val, torch.Tensor) and not val.is_contiguous()


def _is_view(node: fx.Node) -> bool:
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return False
    returns = node.target._schema.returns
    return bool(returns) and returns[0].alias_info is not None and not returns[0].alias_info.is_write


def write_back(b, node: fx.Node, mutated: fx.Node, new: Value, env: dict, where) -> None:
    """In-place op `node` updated `mutated` to `new`: later reads of it, and of the bases it is a view of,
    see the update."""
    env[mutated] = new
    while _is_view(mutated) and isinstance(mutated.args[0], fx.Node) and not _made_a_copy(mutated):
        fn = WRITE_BACK.get(mutated.target)
        if fn is None:
            raise UnsupportedOpError([(str(node.target), where(node),
                                       f"an in-place write through a {mutated.target} view is not supported; "
                                       "build the result without writing into a view")])
        base = mutated.args[0]
        new = fn(b, mutated, env[base], new, node)
        env[base] = new
        mutated = base
