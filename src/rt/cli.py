"""The `rt` command: compile, run, inspect, bench, demo."""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def _compile(args) -> int:
    import torch

    import rt
    if not os.path.isfile(args.model):
        raise SystemExit(f"rt compile: cannot read {args.model}: no such file")
    try:
        ep = torch.export.load(args.model)
    except Exception as e:  # noqa: BLE001 - any reason the file is not a saved ExportedProgram
        raise SystemExit(f"rt compile: cannot read {args.model} ({type(e).__name__}: {e}); expected a file "
                         "written by torch.export.save") from None
    compiled = rt.compile(ep)
    compiled.save(args.output)
    print(f"compiled {args.model} -> {args.output}: {compiled.op_summary()[0]} planned ops; "
          f"{compiled.plan_summary()}")
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
                raise SystemExit(f"rt run: more --input files than the model's {len(names)} inputs")
            name = names[i]
        try:
            bound[name] = np.load(path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"rt run: cannot read input {name!r} from {path}: {e}") from None
    return bound


def _run(args) -> int:
    import rt
    model = rt.load(args.model)
    outs = model(**_parse_inputs(args.input, model.input_names))
    outs = outs if isinstance(outs, tuple) else (outs,)
    for i, y in enumerate(outs):
        print(f"output {i}: {y.dtype}{list(y.shape)}  min {y.min():.6g}  max {y.max():.6g}  mean {y.mean():.6g}")
    if args.output:
        ext = ".npy" if len(outs) == 1 else ".npz"
        path = args.output if args.output.endswith(ext) else args.output + ext    # numpy adds it
        if len(outs) == 1:
            np.save(path, outs[0])
        else:
            np.savez(path, *outs)
        print(f"saved to {path}")
    return 0


def _inspect(args) -> int:
    import rt
    model = rt.load(args.model)
    if args.stage:
        print(model.ir(args.stage), end="")
    for kind, values in (("inputs", model.planned.inputs), ("outputs", model.planned.outputs)):
        print(f"{kind}: " + ", ".join(f"{v.name} {v.type.np_dtype}{list(v.type.shape)}" for v in values))
    print(f"plan: {model.plan_summary()}")
    print(f"planned ops: {model.op_summary()[1]}")
    if args.picture:
        print(f"plan picture: {model.plan_picture(args.picture)}")
    return 0


def _bench(args) -> int:
    from .bench import main as bench_main
    return bench_main(args.rest)


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.model, args.seq, repeat=args.repeat)


def main(argv: list[str] | None = None) -> int:
    from .demo import DEFAULT_MODEL, DEMO_MODELS
    from .errors import RtError

    parser = argparse.ArgumentParser(prog="rt", description="Compile PyTorch models to fast CPU programs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compile", help="compile a torch.export.save file (.pt2) into an rt model file")
    p.add_argument("model", help="a file written by torch.export.save (.pt2)")
    p.add_argument("-o", "--output", required=True, help="where to write the rt model file (e.g. model.rt)")
    p.set_defaults(func=_compile)

    p = sub.add_parser("run", help="run a compiled model on .npy inputs (torch not needed)")
    p.add_argument("model", help="an rt model file (from `rt compile` or CompiledModel.save)")
    p.add_argument("--input", action="append", default=[],
                   help="one .npy per model input, repeated in input order, or name=x.npy (`rt inspect` lists "
                        "the inputs)")
    p.add_argument("--output", help="save the output(s) here (.npy, or .npz for several)")
    p.set_defaults(func=_run)

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

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:      # the harness parses its own options (argparse's REMAINDER cannot)
        return _bench(argparse.Namespace(rest=argv[1:]))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RtError as e:
        print(f"rt {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
