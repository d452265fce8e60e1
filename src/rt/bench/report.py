"""Turning results into the terminal table and the JSON file."""
from __future__ import annotations

import datetime
import json
import os
import platform

from ..serialize import write_atomically
from . import decode_report

MiB = 2 ** 20
HEADER = (f"{'case':<22} {'engine':<12} {'median ms':>10} {'min ms':>9} {'p99 ms':>9} {'max ms':>9} {'rt x med|min':>12} {'GFLOP/s':>8} "
          f"{'RSS MiB built/ready/peak':>25} {'max err':>8} {'other load':>10}")


def _ms(s):
    return f"{s * 1e3:.3f}" if s < 0.1 else f"{s * 1e3:.1f}"


def _mib(b):
    return f"{b / MiB:.0f}" if b and b > 0 else "?"


def _bytes(b) -> str:
    if b >= MiB:
        return f"{b / MiB:.2f} MiB"
    return f"{b / 1024:.1f} KiB"


def _flops(f) -> str:
    return f"{f / 1e9:.3f} GFLOP" if f >= 1e8 else f"{f / 1e6:.3f} MFLOP"


def engine_line(case: str, eng: str, r: dict) -> str:
    if "median_s" not in r:
        return f"{case:<22} {eng:<12} {r['status']}"[:220]
    mem = r.get("mem", {})
    rss = "/".join(_mib(mem.get(k, {}).get(f)) for k, f in (("built", "rss"), ("ready", "rss"), ("end", "maxrss")))
    speed = (f"{r['rt_speedup']:.2f}|{r['rt_speedup_min']:.2f}" if "rt_speedup" in r
             else ("1" if eng == "rt" else ""))
    gf = f"{r['gflops']:.1f}" if "gflops" in r else ""
    err = f"{r['max_rel_err']:.0e}" if r.get("max_rel_err") is not None else ""
    line = (f"{case:<22} {eng:<12} {_ms(r['median_s']):>10} {_ms(r['min_s']):>9} {_ms(r['p99_s']):>9} "
            f"{_ms(r['max_s']):>9} {speed:>12} "
            f"{gf:>8} {rss:>25} {err:>8} {r.get('foreign_cpu_frac', 0):>10.0%}")
    if r["status"] != "ok":
        line += f"  [{r['status'][:80]}]"
    if r.get("max_idle_cpu_frac", 0) > 0.05:
        line += f"  [idle workers used {r['max_idle_cpu_frac']:.0%} CPU]"
    return line


def case_footer(res: dict) -> str:
    parts = []
    if res.get("flops"):
        parts.append(f"{_flops(res['flops'])}/call")
    elif res.get("flops_error"):
        parts.append(f"FLOPs not counted ({res['flops_error'][:60]})")
    plan = res["engines"].get("rt", {}).get("info", {}).get("plan")
    if plan:
        parts.append(f"rt arena {_bytes(plan['arena_bytes'])} (lower bound {_bytes(plan['lower_bound_bytes'])}, "
                     f"no reuse {_bytes(plan['no_reuse_bytes'])})")
    if "torch_peak_activation_bytes" in res:
        parts.append(f"torch eager peak activations {_bytes(res['torch_peak_activation_bytes'])}")
    elif res.get("torch_peak_activation_error"):
        parts.append(f"torch activations {res['torch_peak_activation_error'][:80]}")
    elif "sgemm" not in res["case"]:
        parts.append("torch activations not measured (eager not run)")
    if res.get("loadavg"):
        parts.append(f"load avg {res['loadavg'][0]:.1f}->{res['loadavg'][1]:.1f}")
    ort = res["engines"].get("ort", {}).get("info", {}).get("exporter")
    if ort:
        parts.append(f"onnx exporter: {ort}")
    return f"{'':<22} " + "; ".join(parts) if parts else ""


def model_block(res: dict) -> list[str]:
    lines = [engine_line(res["case"], eng, r) for eng, r in res["engines"].items()]
    foot = case_footer(res)
    return lines + ([foot] if foot else [])


# a case's kind -> (its table's header, its lines); results written before decode cases have no kind
TABLES = {"model": (HEADER, model_block), "sgemm": (HEADER, model_block),
          "decode": (decode_report.HEADER, decode_report.case_block)}


def _kind(res: dict) -> str:
    return res.get("kind", "model")


def case_block(res: dict) -> list[str]:
    return TABLES[_kind(res)][1](res)


def table(results: list[dict]) -> str:
    out = []
    for header in dict.fromkeys(h for h, _ in TABLES.values()):
        rows = [line for res in results if TABLES[_kind(res)][0] == header for line in case_block(res)]
        if rows:
            out += ([""] if out else []) + [header, "-" * len(header)] + rows
    return "\n".join(out)


LEGEND = ("median/min/p99/max: latency of one call over all timed calls of all rounds; rt x: engine / rt, of the "
          "medians | of the minima (>1 means rt is faster); GFLOP/s: counted matmul FLOPs / median; RSS: the worker's resident set after "
          "building the model, after compile+warm-up, and its peak (ru_maxrss) at the end of timing; max err: "
          "max |out - eager| / max |eager|; other load: median share of the machine's CPU used by processes other than the "
          "benchmark's workers while this engine was timed (high = noisy numbers).")


def legend(results: list[dict]) -> str:
    return LEGEND + ("\n" + decode_report.LEGEND if any(_kind(r) == "decode" for r in results) else "")


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        info["avx512f"] = " avx512f" in flags
    except OSError:
        pass
    for mod in ("torch", "onnxruntime", "onnx", "numpy", "transformers"):
        try:
            info[mod] = __import__(mod).__version__ if mod in ("numpy",) else _version(mod)
        except Exception:  # noqa: BLE001
            info[mod] = None
    return info


def _version(dist: str):
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def write_json(path: str, results: list[dict], settings: dict, started: datetime.datetime):
    doc = {"started": started.isoformat(timespec="seconds"),
           "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "machine": machine(), "settings": settings, "legend": legend(results), "results": results,
           "table": table(results)}
    with write_atomically(path, "w") as f:
        json.dump(doc, f, indent=1)
