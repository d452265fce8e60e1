"""The `rt` command."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(args.model, args.seq, repeat=args.repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rt", description="Compile PyTorch models to fast CPU programs.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compile an embedded default model and compare it with torch eager")
    from .demo import DEMO_MODELS, DEFAULT_MODEL
    demo.add_argument("--model", choices=sorted(DEMO_MODELS), default=DEFAULT_MODEL)
    demo.add_argument("--seq", type=int, default=None, help="sequence length (transformers)")
    demo.add_argument("--repeat", type=int, default=20, help="timed calls per engine")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
