"""A file fuzzer for saved models: mutants of good files (rt.devtools.fuzz_mutants), each loaded and run
in a child process under a memory limit and a timeout, its output compared with the reference
interpreter of the same loaded program and with the original file's.

    python -m rt.devtools.fuzz_files --mutants 5000            # MLP, causal block, small GPT-2
    python -m rt.devtools.fuzz_files --mutants 300 --models mlp --json fuzz.json

Outcomes per mutant: refused (rt.ModelFileError at load), rt-error (another rt.RtError, at load or
run), same (the original's answers), other (different answers, and the reference interpreter's for
the program that loaded: e.g. changed weights with a matching checksum) — and the defects: wrong (the
compiled program disagrees with the reference interpreter of the same loaded program), non-rt (an
exception that is not an rt.RtError), crash (the child died of a signal), hang (past the timeout).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np

DEFECTS = ("wrong", "non-rt", "crash", "hang")
OUTCOMES = ("refused", "rt-error", "same", "other") + DEFECTS


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """rt's tolerance against the reference: 1e-4 of the largest finite magnitude (NaN/inf must match)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind != "f":
        return np.array_equal(a, b)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if not (np.array_equal(fa, fb) and np.array_equal(a[~fa], b[~fb], equal_nan=True)):
        return False
    scale = float(np.abs(b[fb]).max()) if fb.any() else 0.0
    return bool(np.all(np.abs(a[fa].astype(np.float64) - b[fb]) <= 1e-4 * scale + 1e-6))


def _judge(path: str, inputs: list[np.ndarray], want: list[np.ndarray]) -> tuple[str, str]:
    """In the child: load and run one file; (outcome, detail)."""
    import rt
    from rt.interpreter import run_reference
    try:
        model = rt.load(path)
    except rt.ModelFileError as e:
        return "refused", str(e).split(": ", 1)[-1][:160]
    except rt.RtError as e:
        return "rt-error", f"load: {type(e).__name__}: {e}"[:160]
    try:
        got = model(*inputs)
        got = list(got) if isinstance(got, tuple) else [got]
    except rt.RtError as e:
        return "rt-error", f"run: {type(e).__name__}: {e}"[:160]
    try:
        ref = run_reference(model.planned, inputs)
    except rt.RtError as e:
        return "rt-error", f"reference: {type(e).__name__}: {e}"[:160]
    if len(got) != len(ref) or not all(_close(g, r) for g, r in zip(got, ref)):
        return "wrong", "compiled program and reference interpreter disagree"
    same = len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))
    return ("same", "") if same else ("other", "")


def _worker() -> None:
    """Child loop: one JSON request per line ({"path", "inputs", "want"}: npz paths), one JSON answer."""
    import warnings
    warnings.simplefilter("ignore")
    cache: dict[str, list[np.ndarray]] = {}

    def arrays(p: str) -> list[np.ndarray]:
        if p not in cache:
            with np.load(p) as z:
                cache[p] = [z[k] for k in sorted(z.files, key=int)]
        return cache[p]

    for line in sys.stdin:
        req = json.loads(line)
        try:
            outcome, detail = _judge(req["path"], arrays(req["inputs"]), arrays(req["want"]))
        except Exception as e:          # noqa: BLE001 - exactly what the fuzzer looks for
            outcome, detail = "non-rt", f"{type(e).__name__}: {e}"[:160]
        print(json.dumps({"outcome": outcome, "detail": detail}), flush=True)


class Child:
    """A worker process, restarted after a crash or a hang."""

    def __init__(self, memory_bytes: int):
        self.memory = memory_bytes
        self.proc: subprocess.Popen | None = None

    def _limit(self) -> None:
        resource.setrlimit(resource.RLIMIT_AS, (self.memory, self.memory))

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen([sys.executable, "-m", "rt.devtools.fuzz_files", "--worker"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, preexec_fn=self._limit)
        return self.proc

    def ask(self, request: dict, timeout: float) -> tuple[str, str]:
        proc = self._start()
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        if not ready:
            self.stop()
            return "hang", f"no answer in {timeout:.0f} s"
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait()
            self.proc = None
            return "crash", f"child died (exit {rc})"
        answer = json.loads(line)
        return answer["outcome"], answer["detail"]

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Report:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)     # model -> outcome -> n
    by_mutator: dict[str, dict[str, int]] = field(default_factory=dict)
    defects: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, model: str, mutator: str, outcome: str, detail: str, index: int) -> None:
        for table, key in ((self.counts, model), (self.by_mutator, mutator)):
            row = table.setdefault(key, dict.fromkeys(OUTCOMES, 0))
            row[outcome] += 1
        if outcome in DEFECTS:
            self.defects.append(dict(model=model, mutator=mutator, index=index, outcome=outcome, detail=detail))

    def table(self) -> str:
        lines = []
        for title, table in (("model", self.counts), ("mutator", self.by_mutator)):
            head = f"{title:<14}" + "".join(f"{o:>10}" for o in OUTCOMES) + f"{'total':>8}"
            lines += [head, "-" * len(head)]
            for key, row in table.items():
                lines.append(f"{key:<14}" + "".join(f"{row[o]:>10}" for o in OUTCOMES) + f"{sum(row.values()):>8}")
            lines.append("")
        return "\n".join(lines)


def fuzz(models: dict[str, tuple[bytes, list[np.ndarray], list[np.ndarray]]], n: int, seed: int = 0,
         timeout: float = 30.0, memory_bytes: int = 8 << 30, keep: str | None = None) -> Report:
    """n mutants of each model's file ({name: (file bytes, inputs, the original's outputs)}), each run
    in a child. keep: a directory to copy each defect's mutant into."""
    from .fuzz_mutants import mutants
    report = Report()
    child = Child(memory_bytes)
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="rt-fuzz-") as d:
            for name, (data, inputs, want) in models.items():
                ins, outs = os.path.join(d, f"{name}-in.npz"), os.path.join(d, f"{name}-want.npz")
                np.savez(ins, **{str(i): a for i, a in enumerate(inputs)})
                np.savez(outs, **{str(i): a for i, a in enumerate(want)})
                path = os.path.join(d, f"{name}.rt")
                for i, (mutator, blob) in enumerate(mutants(data, n, seed)):
                    with open(path, "wb") as f:
                        f.write(blob)
                    outcome, detail = child.ask({"path": path, "inputs": ins, "want": outs}, timeout)
                    report.add(name, mutator, outcome, detail, i)
                    if outcome in DEFECTS and keep:
                        os.makedirs(keep, exist_ok=True)
                        with open(os.path.join(keep, f"{name}-{i}-{outcome}.rt"), "wb") as f:
                            f.write(blob)
    finally:
        child.stop()
    report.seconds = time.perf_counter() - t0
    return report


def _causal_block_class():
    import torch
    import torch.nn.functional as F

    class CausalBlock(torch.nn.Module):
        """Pre-norm causal self-attention (4 heads) and a GELU MLP, each with its residual."""

        def __init__(self, d: int = 32, heads: int = 4):
            super().__init__()
            self.heads = heads
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.up, self.down = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
            x = x + self.proj(a)
            return x + self.down(F.gelu(self.up(self.ln2(x))))
    return CausalBlock


def reference_models(names: list[str]) -> dict[str, tuple[bytes, list[np.ndarray], list[np.ndarray]]]:
    """The fuzzed models, compiled and saved here: an MLP, a causal self-attention block and a small
    GPT-2 (2 layers, width 64, vocabulary 256)."""
    import torch
    import rt
    from rt.testing import models as hf
    CausalBlock = _causal_block_class()

    def mlp():
        m = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 16),
                                torch.nn.LayerNorm(16)).eval()
        return m, (torch.randn(4, 32),)

    def causal():
        return CausalBlock().eval(), (torch.randn(1, 8, 32),)

    def gpt2():
        model, (ids,) = hf.gpt2_lm(n_layer=2, seq=8, n_embd=64, n_head=4, vocab_size=256, n_positions=32)
        return model, (ids,)

    builders = {"mlp": mlp, "causal": causal, "gpt2": gpt2}
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            torch.manual_seed(0)
            model, args = builders[name]()
            compiled = rt.compile(model, args)
            path = os.path.join(d, f"{name}.rt")
            compiled.save(path)
            inputs = [a.numpy() for a in args]
            want = compiled(*inputs)
            out[name] = (open(path, "rb").read(), inputs, list(want) if isinstance(want, tuple) else [want])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mutants", type=int, default=5000, help="total mutants, shared among the models")
    ap.add_argument("--models", default="mlp,causal,gpt2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per mutant")
    ap.add_argument("--memory-gib", type=float, default=8.0, help="address-space limit of the child")
    ap.add_argument("--keep", help="directory to keep each defect's mutant in")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    names = args.models.split(",")
    models = reference_models(names)
    report = fuzz(models, -(-args.mutants // len(names)), args.seed, args.timeout,
                  int(args.memory_gib * 2 ** 30), args.keep)
    print(report.table())
    print(f"{sum(sum(r.values()) for r in report.counts.values())} mutants in {report.seconds:.0f} s; "
          f"defects: {len(report.defects)}")
    for d in report.defects[:50]:
        print(f"  {d['model']} #{d['index']} {d['mutator']}: {d['outcome']}: {d['detail']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"counts": report.counts, "by_mutator": report.by_mutator, "defects": report.defects,
                       "seconds": report.seconds}, f, indent=1)
    return 1 if report.defects else 0


if __name__ == "__main__":
    sys.exit(main())
