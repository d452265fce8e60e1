"""Dynamic dims: the user's spec as torch.export's `dynamic_shapes`, and torch's symbolic sizes as rt's.

Two spellings are taken: torch.export's own (`dynamic_shapes=`, with `torch.export.Dim` and `Dim.AUTO`)
and a short form, `dynamic={"input_ids": {1: (1, 1024)}}` (input name -> {dim: (min, max)}, or
{dim: ("S", min, max)} to name the symbol). Torch names its symbols s0, s70, ...; rt names each after
the Dim that made it (a short-form dim without a name: `<input>_<dim>`), and keeps its range as
torch.export proved it (narrowed where the model's own guards narrow it: reported by `narrowed_ranges`).
"""
from __future__ import annotations

import inspect

import sympy
import torch

from ..dialects.symbolic import Size, Sym
from ..errors import ExportError, UsageError

MAX_UNBOUNDED = 1 << 31     # torch's "no upper bound": rt needs a bound to size the arena


def short_form(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: dict) -> dict:
    """dynamic={"input": {dim: (min, max) | (name, min, max)}} -> torch.export's dynamic_shapes."""
    names = list(inspect.signature(model.forward).parameters)
    given = dict(zip(names, args), **(kwargs or {}))
    unknown = set(dynamic) - set(given)
    if unknown:
        raise UsageError(f"dynamic names input(s) {sorted(unknown)}, the model's inputs are {list(given)}")
    dims: dict[tuple, torch.export.Dim] = {}
    spec = {}
    for name, value in given.items():
        if not isinstance(value, torch.Tensor):
            spec[name] = None
            continue
        per_dim = {}
        for d, rng in (dynamic.get(name) or {}).items():
            if not isinstance(d, int) or not -value.dim() <= d < value.dim():
                raise UsageError(f"dynamic[{name!r}]: dim {d!r} is not a dim of its {value.dim()}-d input")
            rng = tuple(rng)
            label, (lo, hi) = (rng[0], rng[1:]) if len(rng) == 3 else (f"{name}_{d % value.dim()}", rng)
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
                raise UsageError(f"dynamic[{name!r}][{d}]: a range is (min, max) with 1 <= min <= max, got {rng}")
            key = (label, lo, hi)
            if key not in dims:
                dims[key] = torch.export.Dim(label, min=lo, max=hi)
            per_dim[d % value.dim()] = dims[key]
        spec[name] = per_dim or None
    return spec


def _dim_names(ep, dynamic_shapes, asked: dict) -> dict[str, str]:
    """torch's symbol name -> the user's Dim name, from where each Dim sits in the user's inputs;
    `asked` receives each named Dim's own (min, max)."""
    names: dict[str, str] = {}
    sig = ep.graph_signature
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = dynamic_shapes if isinstance(dynamic_shapes, dict) else {}
    spec_list = list(specs.values()) if isinstance(dynamic_shapes, dict) else list(dynamic_shapes or ())
    for i, u in enumerate(sig.user_inputs):
        if not isinstance(u, str) or u not in placeholders:
            continue                    # a non-tensor argument export specialised
        val = placeholders[u].meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        spec = specs.get(u, spec_list[i] if i < len(spec_list) else None)
        for d, s in enumerate(val.shape):
            if not isinstance(s, torch.SymInt) or not isinstance(s.node.expr, sympy.Symbol):
                continue
            dim = spec.get(d) if isinstance(spec, dict) else (spec[d] if isinstance(spec, (list, tuple)) else None)
            label = getattr(dim, "__name__", None) or f"{u}_{d}"
            names.setdefault(str(s.node.expr), label)
            if isinstance(getattr(dim, "max", None), int):
                asked[label] = (max(int(dim.min), 1), int(dim.max))
    return names


def _bound(x, unbounded: int) -> int:
    """A range end of torch's as an int (torch's infinities as `unbounded`)."""
    try:
        return int(x)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return unbounded


class SymbolTable:
    """Torch's symbols as rt's: names, ranges, and the conversion of torch's sympy sizes."""

    def __init__(self, ep, dynamic_shapes):
        asked: dict[str, tuple[int, int]] = {}
        self.names = _dim_names(ep, dynamic_shapes, asked)
        self.ranges: dict[str, tuple[int, int]] = {}
        for sym, vr in ep.range_constraints.items():
            name = self.names.get(str(sym))
            if name is None:
                continue
            lo, hi = _bound(vr.lower, 0), _bound(vr.upper, MAX_UNBOUNDED)
            if hi >= MAX_UNBOUNDED:
                raise ExportError(f"dynamic dim {name} has no upper bound: give it a max, e.g. "
                                  f"torch.export.Dim({name!r}, min=1, max=1024) (rt sizes the activation arena "
                                  "for the largest size)")
            self.ranges[name] = (max(lo, 1), hi)     # a size of 0 is never planned for
        self.narrowed = {k: (asked[k], v) for k, v in self.ranges.items() if k in asked and asked[k] != v}

    def size(self, s) -> Size:
        """A torch size (int or SymInt) as rt's (int or Sym)."""
        if isinstance(s, torch.SymInt):
            expr = s.node.expr
            if isinstance(expr, sympy.Integer) or expr.is_number:
                return int(expr)
            return self._expr(expr)
        return int(s)

    def _expr(self, e) -> Size:
        if isinstance(e, sympy.Integer):
            return int(e)
        if isinstance(e, sympy.Symbol):
            if str(e) not in self.names:
                raise ExportError(f"torch's size symbol {e} is not a dim rt knows (a data-dependent size?)")
            return Sym.symbol(self.names[str(e)])
        if isinstance(e, sympy.Add):
            total = 0
            for a in e.args:
                total = total + self._expr(a)
            return total
        if isinstance(e, sympy.Mul):
            prod = 1
            for a in e.args:
                prod = prod * self._expr(a)
            return prod
        if isinstance(e, sympy.Pow) and isinstance(e.exp, sympy.Integer) and int(e.exp) > 0:
            base, out = self._expr(e.base), 1
            for _ in range(int(e.exp)):
                out = out * base
            return out
        raise ExportError(f"size {e} is not a polynomial of the dynamic dims; rt cannot plan it")



def first_size_mismatch(module, env: dict[str, int]):
    """torch.export traces a dynamic dim as if it were never 1 (a squeeze of it stays, say) while it
    reports the range from 1: re-infer every op's type at these concrete sizes and return the first op
    whose type then differs from its symbolic type at them (None: the graph holds at these sizes)."""
    from ..dialects.instantiate import instantiate
    from ..dialects.registry import REGISTRY
    at = instantiate(module, env)
    for op in at.ops:
        if op.name == "const":
            continue
        opdef = REGISTRY[op.name]
        types = [None if v is None else v.type for v in op.operands]
        try:
            got = opdef.infer(types, opdef.with_defaults(op.attrs))
        except Exception:       # noqa: BLE001 - the op cannot even be built at these sizes
            return op
        if got != op.result.type:
            return op
    return None


def hold_at_range_ends(module) -> None:
    """Check the graph at each symbol's smallest size (1 above all) and largest; a graph that does not
    hold at 1 takes its sizes from 2 (with a warning naming the op), anywhere else: ExportError."""
    import warnings
    ranges = module.meta.get("symbols") or {}
    for name, (lo, hi) in list(ranges.items()):
        for size in sorted({lo, hi}):
            env = {k: (size if k == name else r[1]) for k, r in ranges.items()}
            op = first_size_mismatch(module, env)
            if op is None:
                continue
            where = module.meta.get("source", {}).get(op.result.name, "?")
            if size == 1 and hi >= 2:
                ranges[name] = (2, hi)
                warnings.warn(f"dynamic dim {name}: the captured graph does not hold at size 1 ({op.name} at "
                              f"{where} changes shape there; torch.export traced it as if never 1), so {name} "
                              f"takes 2..{hi}; compile the model at size 1 separately for that size",
                              stacklevel=4)
                break
            raise ExportError(f"dynamic dim {name}: the captured graph does not hold at size {size} ({op.name} "
                              f"at {where}); compile for a narrower range")
