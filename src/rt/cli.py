"""The `rt` command: compile, run, generate, serve, inspect, bench, demo.

An rt error ends the command with one line, `rt <command>: <message>`, on stderr and the exit code of its
family (EXIT_CODES); any other exception is a bug in rt and shows its traceback."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

from .errors import (ExportError, InputError, KernelError, LoweringError, MissingDependencyError, ModelFileError,
                     RtError, SaveError, UnsupportedOpError, UsageError, require)
from .weight_formats import describe_weight_bytes

# (exit code, the error families that end with it, what it means); README.md's "Command line" has the same table
EXIT_CODES = [
    (0, (), "success"),
    (1, (KernelError, RtError), "a kernel failed at run time (or another rt error); `rt demo`: outputs disagree "
                                "with torch"),
    (2, (UsageError,), "bad command-line usage or argument"),
    (3, (InputError,), "bad model input: wrong number, shape or dtype, or an unreadable `.npy`"),
    (4, (UnsupportedOpError, ExportError, LoweringError), "rt cannot compile this model"),
    (5, (ModelFileError,), "bad or unreadable model file (`.rt`, or `.pt2` for `rt compile`)"),
    (6, (SaveError,), "an output file could not be written (the old file is left as it was)"),
    (7, (MissingDependencyError,), "an optional package is missing (the message says what to `pip install`)"),
    (130, (), "interrupted (Ctrl-C)"),
]


def exit_code(e: RtError) -> int:
    """The exit code of an rt error: that of its most specific family."""
    return next(code for cls in type(e).__mro__ for code, families, _ in EXIT_CODES if cls in families)


def load_exported(path: str):
    """The ExportedProgram in a torch.export.save file, or ModelFileError saying why there is none."""
    torch = require("torch", "rt compile")
    if not os.path.isfile(path):
        raise ModelFileError(f"cannot read {path}: no such file")
    torch_log = logging.getLogger("torch.export")     # it logs a traceback before raising on a bad file
    level = torch_log.level
    torch_log.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(path)
    except Exception as e:  # noqa: BLE001 - any reason the file is not a saved ExportedProgram
        raise ModelFileError(f"cannot read {path} ({type(e).__name__}: {e}); expected a file written by "
                             "torch.export.save") from None
    finally:
        torch_log.setLevel(level)


def _compile(args) -> int:
    if args.generator:
        from .cli_generate import compile_to_file
        return compile_to_file(args)
    if args.max_context is not None or args.max_batch != 1:
        raise UsageError("--max-context and --max-batch are for --generator")
    import rt
    compiled = rt.compile(load_exported(args.model), weights=args.weights, lm_head=args.lm_head)
    compiled.save(args.output)
    print(f"compiled {args.model} -> {args.output}: {compiled.op_summary()[0]} planned ops; "
          f"{compiled.plan_summary()}; weights: {describe_weight_bytes(compiled.weight_bytes())}")
    return 0


def _parse_inputs(specs: list[str], names: list[str]) -> dict[str, np.ndarray]:
    """`--input x.npy` binds positionally; `--input name=x.npy` by input name."""
    bound: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        name, eq, path = spec.partition("=")
        if not eq:
            name, path = "", spec
        if not name:
            if i >= len(names):
                raise InputError(f"more --input files than the model's {len(names)} inputs ({', '.join(names)})")
            name = names[i]
        try:
            bound[name] = np.load(path)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read input {name!r} from {path}: {e}") from None
    return bound


def _load_model(path: str, command: str):
    """A saved model (not a generator, which `rt generate` runs)."""
    import rt
    model = rt.load(path)
    if not isinstance(model, rt.CompiledModel):
        raise UsageError(f"{path} is a generator: `rt generate {path} --prompt-ids ...` runs it"
                         + (", `rt inspect` shows it" if command != "inspect" else ""))
    return model


def _run(args) -> int:
    from .serialize import write_atomically
    model = _load_model(args.model, "run")
    outs = model.run_flat(**_parse_inputs(args.input, model.input_names))
    named = len(outs) > 1 or model.output_names != ["output"]
    for i, (name, y) in enumerate(zip(model.output_names, outs)):
        label = f"output {i} ({name})" if named and name != str(i) else f"output {i}"
        print(f"{label}: {y.dtype}{list(y.shape)}  min {y.min():.6g}  max {y.max():.6g}  mean {y.mean():.6g}")
    if args.output:
        ext = ".npy" if len(outs) == 1 else ".npz"
        path = args.output if args.output.endswith(ext) else args.output + ext
        with write_atomically(path) as f:
            if len(outs) == 1:
                np.save(f, outs[0])
            else:
                np.savez(f, *outs)
        print(f"saved to {path}")
    return 0


def _inspect_generator(gen, args) -> int:
    if args.stage:
        for name in ("prefill", "decode") if args.stage == "planned" else (args.stage,):
            print(gen.ir(name), end="")
    m = gen.stages["decode"]
    print(f"generator: token ids {m.inputs[0].type.np_dtype}, vocabulary {gen.vocab_size}, context {gen.context}")
    print(f"plan: {gen.plan_summary()}")
    print(f"weights: {describe_weight_bytes(gen.weight_bytes())}")
    print(f"target: {gen.target_summary()}")
    for name in ("prefill", "decode"):
        print(f"kernels ({name}): {gen.kernel_summary(name)}")
    return 0


def _inspect(args) -> int:
    import rt
    model = rt.load(args.model)
    if isinstance(model, rt.Generator):
        return _inspect_generator(model, args)
    if args.stage:
        print(model.ir(args.stage), end="")
    for kind, names, values in (("inputs", model.input_names, model.planned.inputs),
                                ("outputs", model.output_names, model.planned.outputs)):
        print(f"{kind}: " + ", ".join(f"{n} {v.type.np_dtype}{list(v.type.shape)}" for n, v in zip(names, values)))
    for line in model.signature.describe():
        print(line)
    sizes = model.planned.meta.get("symbols")
    if sizes:
        print("dynamic sizes: " + ", ".join(f"{k} in {lo}..{hi}" for k, (lo, hi) in sizes.items())
              + " (arena planned for the largest)")
    print(f"plan: {model.plan_summary()}")
    print(f"weights: {describe_weight_bytes(model.weight_bytes())}")
    print(f"planned ops: {model.op_summary()[1]}")
    print(f"target: {model.target_summary()}")
    print(f"kernels: {model.kernel_summary()}")
    if args.picture:
        print(f"plan picture: {model.plan_picture(args.picture)}")
    return 0


def _bench(args) -> int:
    from .bench.cli import main as bench_main
    return bench_main(args.rest)


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.model, args.seq, repeat=args.repeat)


def _parser() -> argparse.ArgumentParser:
    from .cli_generate import add_generate_parser
    from .cli_serve import add_serve_parser
    from .demo import DEFAULT_MODEL, DEMO_MODELS

    codes = "\n".join(f"  {code:>3}  {what}" for code, _, what in EXIT_CODES)
    parser = argparse.ArgumentParser(prog="rt", description="Compile PyTorch models to fast CPU programs.",
                                     epilog=f"exit codes:\n{codes}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a torch.export.save file (.pt2) into an rt model file, or a "
                                       "causal LM into a generator")
    p.add_argument("model", help="a file written by torch.export.save (.pt2); with --generator also a "
                                 "transformers checkpoint directory")
    p.add_argument("-o", "--output", required=True, help="where to write the rt model file (e.g. model.rt)")
    p.add_argument("--generator", action="store_true",
                   help="compile a causal LM for `rt generate` (a KV cache, prefill and decode programs)")
    p.add_argument("--max-context", type=int, help="with --generator: the most tokens a prompt and its "
                                                   "continuation hold")
    p.add_argument("--max-batch", type=int, default=1, help="with --generator: also decode up to this many "
                                                              "prompts together (`rt generate` with several --prompt-ids)")
    p.add_argument("--weights", default=None, help="the matmul weights' format: fp32 (default), bf16, int8, "
                                                   "int4, int4nl, or with options: int8:g32, int4:g128, "
                                                   "int4:g32:zp, int4nl:rot (rotated before rounding), int4:best "
                                                   "(each weight's least-error 4-bit variant)")
    p.add_argument("--lm-head", default="auto", help="the LM head's format (default auto: the weights', "
                                                     "but int8 when they are int4)")
    p.set_defaults(func=_compile)

    p = sub.add_parser("run", help="run a compiled model on .npy inputs (torch not needed)")
    p.add_argument("model", help="an rt model file (from `rt compile` or CompiledModel.save)")
    p.add_argument("--input", action="append", default=[],
                   help="one .npy per model input, repeated in input order, or name=x.npy (`rt inspect` lists "
                        "the inputs)")
    p.add_argument("--output", help="save the output(s) here (.npy, or .npz for several)")
    p.set_defaults(func=_run)

    add_generate_parser(sub)
    add_serve_parser(sub)

    p = sub.add_parser("inspect", help="show a compiled model's inputs, IR, plan report and plan picture")
    p.add_argument("model", help="an rt model file (from `rt compile` or CompiledModel.save)")
    p.add_argument("--stage", choices=["torch", "fused", "planned"], help="print this stage's IR")
    p.add_argument("--picture", help="write the plan picture (PNG) here")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("bench", help="benchmark rt against torch eager, torch.compile and ONNX Runtime",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_bench)

    p = sub.add_parser("demo", help="compile an embedded default model and compare it with torch eager")
    p.add_argument("--model", choices=sorted(DEMO_MODELS), default=DEFAULT_MODEL)
    p.add_argument("--seq", type=int, default=None, help="sequence length (transformers)")
    p.add_argument("--repeat", type=int, default=20, help="timed calls per engine")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:      # the harness parses its own options (argparse's REMAINDER cannot)
        args = argparse.Namespace(command="bench", func=_bench, rest=argv[1:])
    else:
        args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except RtError as e:
        print(f"rt {args.command}: {e}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
