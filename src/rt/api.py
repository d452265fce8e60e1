"""Public API: compile a module, call the result like the module, inspect each stage."""
from __future__ import annotations

import sys
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .dialects.ir import Module
from .dialects.text import print_module
from .target import Target, TargetChangedWarning
from .errors import InputError, ModelFileError, RtError, UsageError, require
from .signature import Signature
from .kernels._runtime import FastCallable

if TYPE_CHECKING:
    from .serialize import MappedWeights


def _is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")      # never import torch here: a loaded model runs without it
    return torch is not None and isinstance(x, torch.Tensor)


def _tensor_array(name: str, x) -> np.ndarray:
    """A torch tensor's data as numpy, or InputError saying why it has none numpy can hold."""
    if x.is_meta or str(x.layout) != "torch.strided":
        raise InputError(f"input {name!r} is a {'meta' if x.is_meta else str(x.layout).split('.')[-1]} "
                         "tensor; rt takes dense tensors with data (e.g. .to_dense())")
    try:
        return x.detach().cpu().numpy()
    except (TypeError, RuntimeError) as e:
        raise InputError(f"input {name!r}: a {x.dtype} tensor has no numpy form ({e}); convert it to the "
                         "model's dtype first") from None


def summarize_kernels(plan: list[dict]) -> str:
    """A kernel plan's C ops by kernel, matmuls by mode ('MATMUL[packed]×12, ADD×4, ...'), most
    frequent first."""
    counts: dict[str, int] = {}
    for k in plan:
        key = f"{k['kernel']}[{k['mode']}]" if "mode" in k else k["kernel"]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}×{n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class RunsOnTarget:
    """What differs between the target a program was compiled for (self.target) and the one it runs
    on here (self.run_target): shared by compiled models and generators."""
    target: Target | None
    run_target: Target

    def target_changes(self) -> list[str]:
        """What differs between the target the model was compiled for and the one it runs on here."""
        return self.target.changes(self.run_target) if self.target else []

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the weights by the format they are read in (rt.weight_formats.weight_bytes)."""
        from .weight_formats import weight_bytes
        return weight_bytes(self.stages["planned" if "planned" in self.stages else "decode"])

    def target_summary(self) -> str:
        """One line: the target compiled for, and what differs here (what `rt inspect` prints)."""
        compiled = self.target.describe() if self.target else "unrecorded (an older file)"
        changes = self.target_changes()
        return f"compiled for {compiled}" + (f"; here: {', '.join(changes)}" if changes else "")


def bind_inputs(module: Module, signature: Signature, args: tuple, kwargs: dict) -> tuple[list[np.ndarray], bool]:
    """A call's arrays for module's inputs, and whether torch tensors came in: positional arguments
    are the tensor inputs in order, or (when there are more) all the model's arguments in order; an
    argument fixed at compile time is accepted with its compiled value."""
    names, baked = [v.name for v in module.inputs], signature.baked
    params = names if len(args) <= len(names) else signature.params
    if len(args) > len(params):
        raise InputError(f"the model takes {len(names)} inputs ({', '.join(names)}), got {len(args)} "
                         "positional arguments")
    given = {}
    for k, v in [*zip(params, args), *kwargs.items()]:
        if k in baked:
            signature.check_baked(k, v)
        elif k not in names:
            raise InputError(f"unknown input {k!r}; the model's inputs are: {', '.join(names)}")
        elif k in given:
            raise InputError(f"input {k!r} given twice")
        else:
            given[k] = v
    missing = [n for n in names if n not in given]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}; the model takes {', '.join(names)}")
    torch_in = any(_is_torch_tensor(x) for x in given.values())
    arrays = []
    for v in module.inputs:
        x = given[v.name]
        arr = _tensor_array(v.name, x) if _is_torch_tensor(x) else np.asarray(x)
        if arr.dtype != v.type.np_dtype:
            raise InputError(f"input {v.name!r} has dtype {arr.dtype}, expected {v.type.np_dtype} "
                             f"(shape {list(v.type.shape)})")
        if arr.shape != v.type.shape and v.type.is_static:      # dynamic dims: checked by sizes_of
            raise InputError(f"input {v.name!r} has shape {list(arr.shape)}, expected "
                             f"{list(v.type.shape)} ({v.type.np_dtype})")
        aligned = arr.flags.c_contiguous and arr.flags.aligned
        arrays.append(arr if aligned else np.require(arr, requirements=("C_CONTIGUOUS", "ALIGNED")))  # keeps 0-d
    return arrays, torch_in


class CompiledModel(RunsOnTarget, FastCallable):
    """A model compiled by rt. Call it with numpy arrays or torch tensors (outputs come back as the
    same kind); `ir(stage)` shows each stage's IR; `plan_report()` the memory plan. Inputs of exactly
    the declared shapes and dtypes (C-contiguous, on the CPU) take the fastest path; anything else is
    converted, or refused with a message that names the input."""

    def __init__(self, stages: dict[str, Module], timings: dict[str, float] | None = None,
                 weights: MappedWeights | None = None, run_target: Target | None = None):
        """weights: a loaded model's file (rt.serialize.MappedWeights): the pages of each constant the
        runtime holds a packed copy of are given back, and only the constants the program still reads
        are copied if the file is opened for writing. run_target: what the runtime here may use
        (default: this machine); the program's choices that depend on the machine (how each matmul
        reads its weights) are made for it."""
        from .kernels.executor import CompiledProgram
        self.stages = stages
        self.planned = stages["planned"]
        self.compile_times = timings or {}
        self.target: Target | None = self.planned.meta.get("target")    # compiled for
        self.run_target = run_target or Target.host()
        self._weights = weights
        self._program = CompiledProgram(self.planned, self.run_target, weights and weights.drop)
        # a dynamic model binds its sizes per call (_call); a static one runs straight from C
        self._fast_program = None if self._program.dynamic else self._program.program
        if weights is not None and not self._program.dynamic:   # (a new size may prepare from any weight)
            weights.keep(self._program.constants_read_in_place())
        self.signature: Signature = self.planned.meta.get("signature") or Signature.flat(
            self.input_names, len(self.planned.outputs))
        self._pack = self.signature.packer()

    @property
    def weights_state(self) -> str | None:
        """Where a loaded model reads its weights: "leased" (the file's pages, under a read lease),
        "private" (copied at load: the file could not be leased), "detached" (the weights it reads
        copied when the file was opened for writing) or, in a forked child, "inherited" (the parent's
        mapping, whose lease protects the parent only); None for a model compiled here."""
        return self._weights.state if self._weights is not None else None

    def kernel_summary(self) -> str:
        """C ops by kernel, matmuls and convs by mode ('MATMUL[packed]×12, CONV[winograd4x4]×8, ...'),
        most frequent first."""
        return summarize_kernels(self.kernel_plan())

    def kernel_plan(self) -> list[dict]:
        """Per C op as it runs here: planned op, kernel, and for a MATMUL its mode ("blas", "onednn" (B
        read in place), "packed" (B reordered once for oneDNN), "split" (B in 3.5 bytes per float),
        "small" (rt's one-row loops)), B's layout, and whether B is a constant shared with other ops
        or copied into rt's own form; for a CONV its mode ("direct" on oneDNN, or "winograd4x4" /
        "winograd2x2": Winograd's F(4x4, 3x3) / F(2x2, 3x3))."""
        return self._program.kernel_plan()

    # ---- calling ------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.planned.inputs]

    @property
    def output_names(self) -> list[str]:
        """Each output's name in the model's output structure ('logits', 'hidden_states.0', '0', ...)."""
        return self.signature.outputs.paths()

    def _bind(self, args: tuple, kwargs: dict) -> tuple[list[np.ndarray], bool]:
        return bind_inputs(self.planned, self.signature, args, kwargs)

    def _call(self, args: tuple, kwargs: dict):
        arrays, torch_in = self._bind(args, kwargs)
        outs = self._program.run(arrays)
        if torch_in:
            import torch
            outs = [torch.from_numpy(o) for o in outs]
        return self._structured(outs)

    def run_flat(self, *args, **kwargs) -> list[np.ndarray]:
        """The outputs as a flat list of numpy arrays, in the order of `output_names`."""
        arrays, _ = self._bind(args, kwargs)
        return self._program.run(arrays)

    def _structured(self, outs: list):
        """The outputs in the model's own structure (its ModelOutput, named tuple, nesting)."""
        if self._pack is not None:
            return self._pack(outs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_op_by_op(self, *args, kernels: str = "c", timings: list | None = None, **kwargs):
        """The debugging executor: the planned program op by op, through the C kernels (`kernels="c"`)
        or the numpy reference (`kernels="numpy"`). Returns numpy outputs, in the model's structure."""
        arrays, _ = self._bind(args, kwargs)
        if self._weights is not None and kernels in ("numpy", "c"):
            self._weights.keep_all(f"running op by op ({kernels!r} kernels)")
        from .dialects.instantiate import instantiate, sizes_of
        env = sizes_of(self.planned, [a.shape for a in arrays]) if self._program.dynamic else {}
        if kernels == "numpy":
            from .interpreter import run_reference
            outs = run_reference(instantiate(self.planned, env), arrays)
        elif kernels == "c":
            from .kernels.executor import OpByOpProgram
            key = tuple(sorted(env.items()))
            if getattr(self, "_op_by_op_sizes", None) != key:
                self._op_by_op = OpByOpProgram(instantiate(self.planned, env), self.run_target)
                self._op_by_op_sizes = key
            outs = self._op_by_op.run(arrays, timings)
        else:
            raise UsageError(f"kernels must be 'c' or 'numpy', got {kernels!r}")
        return self._structured(list(outs))

    def profile(self, *args, runs: int = 10, trace: str | None = None, **kwargs):
        """Run op by op through the C kernels `runs` times; returns a Profile (per-op table, by-kind
        totals) and writes a Chrome trace JSON to `trace` when given (opens in Perfetto)."""
        from .profile import build_profile
        if type(runs) is not int or runs < 1:
            raise UsageError(f"runs must be at least 1 (a whole number of runs), got {runs!r}")
        samples = []
        for _ in range(runs + 1):           # the first run warms caches and is dropped
            timings: list = []
            self.run_op_by_op(*args, kernels="c", timings=timings, **kwargs)
            samples.append(timings)
        prof = build_profile(samples[1:])
        if trace:
            prof.save_trace(trace)
        return prof

    # ---- inspecting ---------------------------------------------------------------------------
    def _stage(self, stage: str) -> Module:
        if stage not in self.stages:
            raise UsageError(f"unknown stage {stage!r}; stages: {', '.join(self.stages)}")
        return self.stages[stage]

    def ir(self, stage: str = "planned") -> str:
        return print_module(self._stage(stage))

    def plan_picture(self, path: str) -> str:
        """Draw the memory plan to a PNG at `path` (needs matplotlib); returns the path."""
        from .plan_picture import draw_plan
        return draw_plan(self.planned, path)

    def save(self, path: str) -> None:
        """Write the compiled model to `path`; `rt.load(path)` runs it without torch, on any x86-64 CPU.
        The weights' layout was chosen for the compiling CPU (with AVX-512, one-row products keep their
        weights as they arrive, for the split form); loaded on a CPU without it, those run on BLAS at
        up to ~25% lower speed than a model compiled there."""
        from .serialize import save_model
        save_model(path, self.stages)

    def plan_report(self) -> dict:
        plan = dict(self.planned.meta["plan"])
        lb = plan["lower_bound_bytes"]
        plan["ratio"] = plan["arena_bytes"] / lb if lb else 1.0
        return plan

    def plan_summary(self) -> str:
        """The memory plan in one line (what `rt compile`, `rt inspect` and the demo print)."""
        p = self.plan_report()
        mib = lambda n: f"{n / 2**20:.2f} MiB"   # noqa: E731
        return (f"arena {mib(p['arena_bytes'])}, lower bound {mib(p['lower_bound_bytes'])} "
                f"(ratio {p['ratio']:.3f}), no reuse {mib(p['no_reuse_bytes'])}")

    def op_summary(self, stage: str = "planned", top: int | None = None) -> tuple[int, str]:
        """(number of ops, 'name×count, ...' most frequent first) of one stage, constants left out."""
        counts = self._stage(stage).op_counts()
        counts.pop("const", None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return sum(counts.values()), ", ".join(f"{k.split('.', 1)[1]}×{v}" for k, v in ranked)


Progress = Callable[[str, float], None]    # (stage that just finished, its seconds)


class _Stages:
    """Times each compile stage and reports it as soon as it finishes."""

    def __init__(self, progress: Progress | None):
        self.times: dict[str, float] = {}
        self.progress = progress

    def run(self, name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        self.times[name] = time.perf_counter() - t0
        if self.progress is not None:
            self.progress(name, self.times[name])
        return out


def compile(model, args: tuple = (), kwargs: dict | None = None, *, strict: bool = False, verify: bool = False,
            print_ir_after_all: bool = False, progress: Progress | None = None,
            target: Target | None = None, dynamic_shapes=None, dynamic: dict | None = None,
            weights=None, lm_head="auto", calibration=None) -> CompiledModel:
    """Compile `model` (an nn.Module, with example inputs `args`/`kwargs` as torch tensors, or an
    already exported torch.export.ExportedProgram) into a CompiledModel. `args` may be one tensor or a
    tuple of them. strict: capture with torch.export's strict (TorchDynamo) tracer; verify: check every
    stage's IR against its dialect (slower); print_ir_after_all: print the IR after each lowering pass;
    `progress(stage, seconds)` is called as each stage finishes. target: the machine to compile for
    (rt.Target; default this one, `rt.Target.host()`); the returned model runs here with what of it
    this machine has, and a saved file records it.
    dynamic_shapes: torch.export's (torch.export.Dim with min/max, Dim.AUTO); or the short form
    dynamic={"input_ids": {1: (1, 1024)}} (input -> {dim: (min, max) or (name, min, max)}): one
    compile then serves every size in range, with the arena planned for the largest.
    weights: the format of the constant matmul weights (rt/weight_formats.py): None (fp32, the
    default), "bf16", "int8", "int4", "int4nl" (with options: "int8:g32", "int4:g128", "int4:g32:zp",
    ":rot" to rotate before rounding, e.g. "int4nl:rot"; "int4:best" picks per weight the 4-bit
    variant that rounds it with least error), or a dict
    {name pattern: format} for per-layer choices; lm_head: the LM head's format ("auto": the body's,
    int8 under int4). calibration: inputs like the model's real ones (a list of samples, each a dict of
    inputs by name, a tuple, or one tensor) that int formats round their weights for (GPTQ: each
    matmul keeps its products on these inputs close, not just its weights); default round to nearest."""
    require("torch", "rt.compile")
    from .dialects.verifier import verify_module
    from .frontend import import_module, import_program
    from .lowering import to_fused
    from .lowering.plan import to_planned
    from .lowering.weight_packing import check_calibration, input_moments, pack_chosen_weights

    if calibration is not None:
        check_calibration(weights, lm_head)
    stages = _Stages(progress)
    if type(model).__name__ == "ExportedProgram":
        if dynamic is not None or dynamic_shapes is not None:
            raise UsageError("an ExportedProgram keeps the dynamic dims it was exported with; "
                             "dynamic/dynamic_shapes apply to an nn.Module")
        torch_ir = stages.run("import", import_program, model)
    else:
        if dynamic is not None:
            if dynamic_shapes is not None:
                raise UsageError("give dynamic_shapes (torch.export's form) or dynamic (the short form), not both")
            from .frontend.dynamic import short_form
            dynamic_shapes = short_form(model, (args,) if type(args).__name__ == "Tensor" else tuple(args),
                                        kwargs or {}, dynamic)
        torch_ir = stages.run("import", import_module, model, args, kwargs, strict=strict,
                              dynamic_shapes=dynamic_shapes)
    if verify:
        verify_module(torch_ir, "torch")
    target = target or Target.host()
    fused = stages.run("to_fused", to_fused, torch_ir, target=target, verify=verify,
                       print_ir_after_all=print_ir_after_all)
    moments = None
    if calibration is not None:
        moments = stages.run("calibrate", input_moments, fused, calibration_arrays(fused, calibration))
    stages.run("pack_weights", pack_chosen_weights, fused, weights, lm_head, moments)
    planned = stages.run("to_planned", to_planned, fused, target)
    if verify:
        verify_module(planned, "planned")
    return stages.run("build_program", CompiledModel, {"torch": torch_ir, "fused": fused, "planned": planned},
                      stages.times, run_target=target.restricted_to(Target.host()))


def calibration_arrays(module: Module, samples) -> list[list[np.ndarray]]:
    """Each calibration sample (a dict of inputs by name, a tuple, or one tensor) as module's arrays."""
    if not isinstance(samples, (list, tuple)) or not samples:
        raise UsageError("calibration= takes a non-empty list of samples, each a dict of inputs by "
                         "name, a tuple of them, or one tensor")
    signature = module.meta.get("signature") or Signature.flat([v.name for v in module.inputs], len(module.outputs))
    out = []
    for i, s in enumerate(samples):
        args, kwargs = ((), s) if isinstance(s, dict) else (s if isinstance(s, tuple) else (s,), {})
        try:
            out.append(bind_inputs(module, signature, args, kwargs)[0])
        except InputError as e:
            raise InputError(f"calibration sample {i}: {e}") from None
    return out


def load(path: str):
    """Load a model saved by `CompiledModel.save` (a CompiledModel) or `Generator.save` (an
    rt.Generator). Needs neither torch nor the original model."""
    from .serialize import load_model

    stages, weights = load_model(path)
    try:
        if "planned" in stages:
            model = CompiledModel(stages, weights=weights)
        else:                               # a generator's prefill and decode programs
            from .generation import Generator
            model = Generator(stages, weights=weights)
        changes = model.target_changes()
        if changes:       # what depends on the machine was decided again for this one
            warnings.warn(f"{path}: compiled for {model.target.describe()}; decided again for this "
                          f"machine ({', '.join(changes)})", TargetChangedWarning, stacklevel=2)
        return model
    except RtError as e:          # a program that verifies but that the runtime refuses
        raise ModelFileError(f"{path}: the saved program cannot run: {e}") from None
