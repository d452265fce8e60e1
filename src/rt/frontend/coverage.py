"""Which of torch's core ATen overloads the frontend takes, from the registries themselves.

`core_overloads()` is every overload tagged `torch.Tag.core`; `inference_opset()` leaves out what an
inference compiler never sees (backward ops, random ops, symbolic-size queries, `.out` variants);
`frontend_status(overload)` says how the frontend takes one: 'op' (a torch dialect op of its own or a
converter onto one), 'decomposed' (torch's decomposition of it, into ops rt takes), or 'unsupported'
with the reason. `python -m rt.frontend.coverage` prints the table.
"""
from __future__ import annotations

import sys

import torch

from .converters import lookup
from .decompose import decomposition_of

RANDOM = ("rand", "randn", "randperm", "native_dropout", "bernoulli", "normal", "uniform", "multinomial")
SYMBOLIC = ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "sym_is_contiguous")
# why rt cannot take these (the rest of the core inference opset has a torch dialect op)
REASONS = {
    "_fft_r2c": "complex results: rt has no complex dtype",
    "_fft_c2r": "complex inputs: rt has no complex dtype",
    "_local_scalar_dense": "reads a tensor value into Python (item()): data-dependent",
    "nonzero": "data-dependent output shape",
    "resize_": "resizes a tensor in place (no functional form)",
}


def core_overloads() -> list:
    out = []
    names = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith("aten::")}
    for name in sorted(names):
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        for over in packet.overloads():
            o = getattr(packet, over)
            if torch.Tag.core in o.tags:
                out.append(o)
    return sorted(out, key=str)


def excluded(o) -> str | None:
    """Why an overload is outside the inference opset (None: it is inside)."""
    name = o._schema.name.split("::")[1]
    if "backward" in name:
        return "backward"
    if name in RANDOM:
        return "random"
    if name in SYMBOLIC:
        return "symbolic-size query"
    if o._overloadname == "out" or o._overloadname.endswith("_out"):
        return "out= variant"
    return None


def inference_opset() -> list:
    return [o for o in core_overloads() if excluded(o) is None]


def frontend_status(o) -> tuple[str, str]:
    if lookup(o) is not None:
        return "op", ""
    if decomposition_of(o) is not None:
        return "decomposed", "torch's decomposition"
    name = o._schema.name.split("::")[1]
    return "unsupported", REASONS.get(name, "no torch dialect op yet")


def table() -> list[tuple[str, str, str]]:
    return [(str(o), *frontend_status(o)) for o in inference_opset()]


def main(argv=None) -> int:
    rows = table()
    for r in rows:
        print(*r, sep="\t")
    n = len(rows)
    ops = sum(r[1] == "op" for r in rows)
    dec = sum(r[1] == "decomposed" for r in rows)
    print(f"core ATen inference opset: {n} overloads ({len(core_overloads())} tagged core); torch dialect op: {ops}, "
          f"decomposed: {dec}, unsupported: {n - ops - dec}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
