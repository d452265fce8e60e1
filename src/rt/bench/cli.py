"""Arguments of `rt bench` / `python benchmarks/run.py`."""
from __future__ import annotations

import argparse
import datetime
import os
import sys

from ..errors import SaveError, UsageError, require
from .cases import CASES, DEFAULT_ENGINES, ENGINES, SHARED_CORE_VARIANTS, select


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rt bench", description=(
        "Benchmark rt against torch eager, torch.compile and ONNX Runtime; each engine in its own process, "
        "timed in alternating rounds."))
    p.add_argument("--quick", action="store_true", help="fewer cases, rounds and calls (under 5 minutes)")
    p.add_argument("--cases", nargs="+", metavar="SUBSTR", help="only cases whose name contains one of these")
    p.add_argument("--engines", nargs="+", metavar="NAME", default=list(DEFAULT_ENGINES),
                   help=f"engines to run, from {', '.join(ENGINES)}; each case runs those of them it has "
                        "(model cases: rt, eager, compile, ort, and when named the shared-core variants "
                        f"{', '.join(SHARED_CORE_VARIANTS)}; decode cases: rt, eager, llama.cpp, and at "
                        "context 128 the quantized ones too; sgemm: numpy)")
    p.add_argument("--contend", type=int, default=0, metavar="N",
                   help="keep N busy processes (one spinning Python loop each) competing for the cores while "
                        "engines are timed: rt on shared cores (no quiet wait then)")
    p.add_argument("--threads", type=int, default=cores(), help="threads for every engine (default: cores)")
    p.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 3)")
    p.add_argument("--round-seconds", type=float, help="target timed seconds per engine per round "
                   "(default 1.0, quick 0.25)")
    p.add_argument("--timeout", type=float, help="seconds allowed for one worker step: setup (build, compile, "
                   "warm-up), one round, or finish (default 900, quick 240)")
    p.add_argument("--quiet-wait", type=float, help="before each timed block wait up to this many seconds for "
                   "other processes to leave the CPUs idle (default 5, quick 2; 0 disables)")
    p.add_argument("--json", default=os.path.join("bench-results", "latest.json"), help="where to write results")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--show", metavar="JSON", help="print the table of an earlier run's JSON file and exit")
    return p


def show(path: str) -> int:
    import json

    from .report import legend, table
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read --show {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise UsageError(f"--show {path}: not a results file written by rt bench (no 'results' list)")
    m = doc.get("machine", {})
    print(f"rt bench {doc.get('started', '?')} -> {doc.get('finished', '?')} | {m.get('cpu', '?')}, {m.get('cores')} "
          f"cores, avx512f={m.get('avx512f')} | {doc.get('settings', {}).get('threads')} threads | torch "
          f"{m.get('torch')}, onnxruntime {m.get('onnxruntime')}, numpy {m.get('numpy')}\n")
    print(table(doc["results"]))
    print("\n" + legend(doc["results"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.show:
        return show(args.show)
    if args.list:
        for c in CASES:
            print(f"{c.name:<24} {'quick' if c.quick else '':<6} {c.factory}({c.kwargs})")
        return 0
    bad = [e for e in args.engines if e not in ENGINES]
    if bad:
        raise UsageError(f"unknown engine(s) {', '.join(bad)}; choose from {', '.join(ENGINES)}")
    if args.contend < 0:
        raise UsageError(f"--contend takes a number of busy processes (0 or more), got {args.contend}")
    engines = [e for e in ENGINES if e in args.engines]     # fixed round order
    cases = select(args.cases, args.quick)
    if not cases:
        raise UsageError(f"no case matches {' '.join(args.cases)}; see --list")
    if not all(c.is_sgemm for c in cases):
        require("torch", "rt bench's model cases", load=False)    # the workers import it
    from .report import case_block, legend, table, write_json
    from .runner import Options, run_case
    q = args.quick
    opts = Options(threads=args.threads, rounds=args.rounds or (3 if q else 5),
                   round_s=args.round_seconds or (0.25 if q else 1.0), min_reps=2 if q else 3,
                   max_reps=500 if q else 5000, warmup_s=0.3 if q else 1.0, warmup_min=2 if q else 3,
                   timeout_s=args.timeout or (240 if q else 900), settle_s=0.2 if q else 0.5,
                   log_dir=os.path.join(os.path.dirname(os.path.abspath(args.json)), "logs"),
                   quiet_wait_s=0.0 if args.contend else args.quiet_wait if args.quiet_wait is not None
                   else (2.0 if q else 5.0), contend=args.contend)
    try:
        os.makedirs(opts.log_dir, exist_ok=True)
    except OSError as e:
        raise SaveError(f"cannot create {opts.log_dir}: {e.strerror}") from None
    settings = {**vars(opts), "engines": engines, "cases": [c.name for c in cases], "quick": q}
    started = datetime.datetime.now().astimezone()
    print(f"rt bench: {len(cases)} case(s), engines {', '.join(engines)}, {opts.threads} thread(s), "
          f"{opts.rounds} rounds; worker logs in {opts.log_dir}", file=sys.stderr, flush=True)
    results = []
    for case in cases:
        res = run_case(case, engines, opts)
        results.append(res)
        write_json(args.json, results, settings, started)      # partial results survive an interrupt
        print("\n".join(case_block(res)), file=sys.stderr, flush=True)
    from .report import machine
    m = machine()
    print(f"rt bench {started:%Y-%m-%d %H:%M} | {m.get('cpu', '?')}, {m['cores']} cores, avx512f={m.get('avx512f')} | "
          f"{opts.threads} threads | torch {m['torch']}, onnxruntime {m['onnxruntime']}, numpy {m['numpy']}\n")
    print(table(results))
    print("\n" + legend(results))
    print(f"\nJSON: {args.json}")
    failed = [f"{r['case']}/{e}" for r in results for e, er in r["engines"].items() if er["status"] != "ok"]
    if failed:
        print(f"{len(failed)} engine run(s) did not succeed: {', '.join(failed)}")
    return 0
