"""Op counts per stage (torch, fused) for the reference models.

    python -m rt.devtools.stats            # GPT-2 2-layer body, GPT-2 12-layer LM, BERT
    python -m rt.devtools.stats --small    # smaller dims (fast)
"""
from __future__ import annotations

import argparse
import time


def op_counts_per_stage(model, args) -> dict[str, dict[str, int]]:
    """{'torch': {op: n}, 'fused': {op: n}} for a model and its example inputs (consts not counted)."""
    from ..frontend import import_module
    from ..lowering import to_fused
    torch_ir = import_module(model, args)
    fused = to_fused(torch_ir)
    strip = lambda c: {k: v for k, v in sorted(c.items()) if k != "const"}   # noqa: E731
    return {"torch": strip(torch_ir.op_counts()), "fused": strip(fused.op_counts())}


def default_models(small: bool = False):
    from ..testing import models as Z
    dims = dict(n_embd=64, n_head=4, vocab_size=1000) if small else {}
    return {
        "gpt2 body 2-layer S=64": lambda: Z.gpt2_body(n_layer=2, seq=64, **dims),
        "gpt2 LM 12-layer S=128": lambda: Z.gpt2_lm(n_layer=12, seq=128, **dims),
        "bert 2-layer B=2 padded": lambda: Z.bert(),
    }


def format_counts(name: str, counts: dict[str, dict[str, int]]) -> str:
    lines = [f"== {name}"]
    for stage, c in counts.items():
        total = sum(c.values())
        lines.append(f"  {stage:6s} {total:5d} ops: " + ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in c.items()))
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small hidden sizes (fast)")
    ns = ap.parse_args(argv)
    for name, make in default_models(ns.small).items():
        t0 = time.perf_counter()
        model, args = make()
        counts = op_counts_per_stage(model, args)
        print(format_counts(name, counts) + f"\n  ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
