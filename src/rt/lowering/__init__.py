"""torch dialect -> fused dialect (and, in plan*.py, fused -> planned).

    fused = to_fused(torch_module, verify=True, print_ir_after_all=False)

The pipeline "to-fused" (see PIPELINES) runs, in order: constant folding (every mask-building op
disappears), legalisation of torch ops into fused ops, canonicalisation, absorption of transposes
and scalars into matmul attributes, DAG fusions (GELU, layer norm, softmax), attention fusion, causal
mask absorption, matmul epilogue fusions (bias, activation, residual), attention output views, lowering
of leftover composites, dead-code elimination. Each pass is registered by name (passmanager.PASSES).
"""
from __future__ import annotations

from ..dialects.ir import Module
from ..target import Target
from . import fold, legalize, merge_projections, patterns, weights  # noqa: F401  (pass registration)
from .passmanager import PASSES, PIPELINES, Pass, PassManager, register_pass, register_pipeline
from .rewrite import ANY, Approx, Const, N, Pattern, Scalar, apply_patterns

TO_FUSED = [
    "fold-constants",
    "check-folded",
    "legalize-torch-to-fused",
    "fold-constants",
    "cse",
    "canonicalize",
    "absorb-matmul-operands",
    "fuse-dag",
    "canonicalize",
    "absorb-matmul-operands",
    "fuse-attention",
    "absorb-causal-mask",
    "merge-projections",
    "fuse-conv",
    "channels-last",
    "fuse-matmul-epilogues",
    "fuse-attention-views",
    "lower-composites",
    "layout-weights",
    "fold-constants",
    "cse",
    "dce",
]
register_pipeline("to-fused", TO_FUSED)


def to_fused(module: Module, *, target: Target | None = None, verify: bool = False,
             print_ir_after_all: bool | None = None, pipeline: str = "to-fused",
             timings: list | None = None) -> Module:
    """Lower a torch dialect module to the fused dialect (a new module; the input is left unchanged)
    for `target` (recorded in meta["target"]; passes that depend on the machine read it there).

    verify: run the verifier after every pass (also RT_VERIFY=1). print_ir_after_all: dump the IR
    after every pass to stderr (also RT_PRINT_IR_AFTER_ALL=1). timings: a list that receives
    (pass, seconds, op count) per pass."""
    pm = PassManager.pipeline(pipeline, verify=verify or None, print_ir_after_all=print_ir_after_all)
    start = module.clone()
    if target is not None:
        start.meta["target"] = target
    out = pm.run(start)
    if verify:
        from ..dialects.verifier import verify_module
        verify_module(out, "fused")
    if timings is not None:
        timings.extend(pm.timings)
    return out


__all__ = ["to_fused", "PassManager", "Pass", "PASSES", "PIPELINES", "register_pass", "register_pipeline",
           "Pattern", "N", "Scalar", "Const", "Approx", "ANY", "apply_patterns"]
