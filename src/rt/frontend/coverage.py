"""Which of torch's core ATen overloads the frontend takes, from the registries themselves.

`core_overloads()` is every overload tagged `torch.Tag.core`; `inference_opset()` leaves out what an
inference compiler never sees (backward ops, random ops, symbolic-size queries, `.out` variants);
`frontend_status(overload)` says how the frontend takes one: 'op' (a torch dialect op of its own or a
converter onto one), 'decomposed' (torch's decomposition of it, into ops rt takes), or 'unsupported'
with the reason; `fused_status` whether the lowering has a converter for its torch dialect op. With
`--opinfo`, PyTorch's OpInfo samples are run end to end (rt.testing.opinfo) and each overload gets its
C-loop status: the samples whose exported graph holds it, and how many passed through both C
executors. `python -m rt.frontend.coverage [--opinfo] [--markdown PATH]` prints the table (or writes
it as a page: docs/coverage.md).
"""
from __future__ import annotations

import sys

import torch

from .converters import ir_name, lookup, same_call
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


def fused_status(o) -> str:
    """'yes' when the lowering converts o's torch dialect op (or the op o is called as) to fused ops."""
    from ..lowering.legalize import CONVERTERS
    alt = same_call(o)
    names = {ir_name(o)} | ({ir_name(alt)} if alt is not None else set())
    return "yes" if names & set(CONVERTERS) else "no converter"


def table() -> list[tuple[str, str, str]]:
    return [(str(o), *frontend_status(o)) for o in inference_opset()]


PASS = ("supported", "decomposed")


def c_loop_status(results, overload: str) -> tuple[bool, str]:
    """(runs in the C loop and passes its samples, what the samples say) for one overload, from
    rt.testing.opinfo.sweep's results: passes when some sample holding it passed through both C
    executors and none holding it gave a wrong result."""
    mine = [r for r in results if overload in r[4] and r[2] != "export"]
    if not mine:
        return False, "no OpInfo sample"
    passed = [r for r in mine if r[2] in PASS]
    wrong = [r for r in mine if r[2] in ("mismatch", "c-mismatch", "error", "c-error")]
    if passed and not wrong:
        own = sum(r[0].startswith("own:") for r in passed)
        return True, f"{len(passed)}/{len(mine)} samples pass" + (" (rt's own sample)" if own == len(passed) else "")
    bad = (wrong or mine)[0]
    return False, f"{len(passed)}/{len(mine)} pass; {bad[0]}#{bad[1]} {bad[2]}: {bad[3][:160]}"


def full_table(results) -> list[dict]:
    rows = []
    for o in inference_opset():
        front, why = frontend_status(o)
        fused = fused_status(o) if front == "op" else ("via its decomposition" if front == "decomposed" else "-")
        ok, c = c_loop_status(results, str(o))      # aten.<name>.<overload>, as graph nodes print
        rows.append({"op": str(o), "torch": front, "fused": fused, "c_loop": "yes" if ok else "no",
                     "detail": why if front == "unsupported" else c})
    return rows


def markdown(rows, summary_line: str) -> str:
    n = len(rows)
    c = sum(r["c_loop"] == "yes" for r in rows)
    out = ["# Core ATen opset coverage", "",
           "Generated by `python -m rt.frontend.coverage --opinfo --markdown docs/coverage.md` from the registries and",
           "PyTorch's OpInfo samples (rt.testing.opinfo): every overload torch tags `core`, less backward, random,",
           "symbolic-size and `out=` ones. *torch dialect*: a torch dialect op of its own, torch's decomposition, or",
           "unsupported (why); *fused*: the lowering converts it; *C loop*: some OpInfo sample whose exported graph",
           "holds it ran through the compiled C loop and op by op through the C kernels, matching torch, and none",
           "holding it gave a wrong result. Samples are float32 (int64 / bool for ops without float32), each as",
           "exported and decomposed to core ATen; an overload no OpInfo sample reaches has an rt-owned sample",
           "(rt.testing.opinfo.own_samples, marked so).", "",
           f"**{c} of {n} core inference overloads ({100 * c / n:.1f}%) run in the C loop and pass their OpInfo "
           f"samples.** {summary_line}", "",
           "| overload | torch dialect | fused | C loop | samples / reason |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| `{r['op']}` | {r['torch']} | {r['fused']} | {r['c_loop']} | {r['detail'].replace('|', '/')} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--opinfo" not in argv:
        rows = table()
        for r in rows:
            print(*r, sep="\t")
        n = len(rows)
        ops = sum(r[1] == "op" for r in rows)
        dec = sum(r[1] == "decomposed" for r in rows)
        print(f"core ATen inference opset: {n} overloads ({len(core_overloads())} tagged core); torch dialect op: "
              f"{ops}, decomposed: {dec}, unsupported: {n - ops - dec}", file=sys.stderr)
        return 0
    from ..testing.opinfo import summary, sweep
    results = sweep()
    rows = full_table(results)
    text = markdown(rows, summary(results) + ".")
    if "--markdown" in argv:
        with open(argv[argv.index("--markdown") + 1], "w") as f:
            f.write(text)
    else:
        print(text)
    c = sum(r["c_loop"] == "yes" for r in rows)
    print(f"core ATen inference opset: {len(rows)} overloads; in the C loop and passing OpInfo: {c} "
          f"({100 * c / len(rows):.1f}%)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
