"""Per-op profiles of a planned program: a table and a Chrome trace (opens in Perfetto)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .dialects.ir import Operation
from .serialize import write_atomically


@dataclass
class OpProfile:
    op: str            # planned op name
    value: str         # its result
    shape: str
    median_ms: float
    share: float       # of the summed medians


@dataclass
class Profile:
    ops: list[OpProfile]
    total_ms: float
    trace_events: list[dict]

    def table(self, top: int | None = None) -> str:
        rows = sorted(self.ops, key=lambda r: -r.median_ms)[:top]
        lines = [f"{'op':<22} {'value':<24} {'shape':<22} {'median ms':>10} {'share':>7}"]
        for r in rows:
            lines.append(f"{r.op:<22} {r.value[:24]:<24} {r.shape[:22]:<22} {r.median_ms:>10.3f} {r.share:>6.1%}")
        lines.append(f"{'total (op by op)':<70} {self.total_ms:>10.3f}")
        return "\n".join(lines)

    def save_trace(self, path: str) -> str:
        with write_atomically(path, "w") as f:
            json.dump({"traceEvents": self.trace_events, "displayTimeUnit": "ms"}, f)
        return path


def build_profile(runs: list[list[tuple[Operation, float, float]]]) -> Profile:
    """runs: per run, (op, start seconds, duration seconds) for each op, in order."""
    per_op = list(zip(*runs))
    medians = [float(np.median([d for _, _, d in samples])) * 1e3 for samples in per_op]
    total = sum(medians)
    ops = [OpProfile(samples[0][0].name.split(".", 1)[1], samples[0][0].result.name,
                     "x".join(map(str, samples[0][0].result.type.shape)), ms, ms / total if total else 0.0)
           for samples, ms in zip(per_op, medians)]
    events = []
    last = runs[-1]
    t_origin = last[0][1] if last else 0.0
    for op, start, dur in last:
        events.append({"name": op.name.split(".", 1)[1], "cat": "op", "ph": "X", "pid": 0, "tid": 0,
                       "ts": (start - t_origin) * 1e6, "dur": dur * 1e6,
                       "args": {"value": op.result.name, "type": str(op.result.type)}})
    return Profile(ops, total, events)
