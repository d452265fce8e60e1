"""The terminal table of the decode cases: time per generated token beside its bandwidth floor, and prefill."""
from __future__ import annotations

MiB = 2 ** 20
HEADER = (f"{'case':<22} {'engine':<9} {'ms/token':>9} {'min':>7} {'max':>7} {'tok/s':>7} {'floor ms':>8} "
          f"{'of floor':>8} {'rt x':>5} {'prefill ms':>10} {'RSS MiB ready/peak':>18} {'max err':>8} "
          f"{'other load':>10}")
LEGEND = ("decode cases: ms/token: median time of one greedy decode step after the prompt's prefill (rt: "
          "its program run and token choice, from Generator.last_timings), min/max over steps; floor ms: "
          "bytes one step reads (fp32 weights, LM head included and a tied embedding once, + K/V cache at the "
          "prompt's length) / the read bandwidth measured with the same threads (numpy sums over 1 GiB); "
          "of floor: floor / median (100% = bandwidth-bound); rt x: engine / rt of the medians; prefill ms: "
          "median time to prefill the prompt (logits of its last row only); max err: max |logits - HF| / max "
          "|HF| (llama.cpp: a short prompt plus a few cached steps) or, for rt, greedy tokens equal to HF's.")


def floor_s(res: dict) -> float | None:
    bw = res.get("read_bandwidth", {}).get("bytes_per_s")
    if not bw or "weight_bytes" not in res:
        return None
    return (res["weight_bytes"] + res["kv_bytes"]) / bw


def _check(r: dict) -> str:
    info = r.get("info", {})
    if "greedy_tokens_matching_hf" in info:
        return f"{info['greedy_tokens_matching_hf']}/{info['greedy_tokens']}tok"
    return f"{r['max_rel_err']:.0e}" if r.get("max_rel_err") is not None else ""


def engine_line(res: dict, eng: str, r: dict) -> str:
    case = res["case"]
    if "median_s" not in r:
        return f"{case:<22} {eng:<9} {r['status']}"[:220]
    mem = r.get("mem", {})
    rss = "/".join(f"{mem.get(k, {}).get(f, 0) / MiB:.0f}" for k, f in (("ready", "rss"), ("end", "maxrss")))
    floor = floor_s(res)
    speed = f"{r['rt_speedup']:.2f}" if "rt_speedup" in r else ("1" if eng == "rt" else "")
    line = (f"{case:<22} {eng:<9} {r['median_s'] * 1e3:>9.2f} {r['min_s'] * 1e3:>7.2f} {r['max_s'] * 1e3:>7.2f} "
            f"{1 / r['median_s']:>7.1f} {(floor or 0) * 1e3:>8.2f} {(floor or 0) / r['median_s']:>8.0%} {speed:>5} "
            f"{r['prefill_median_s'] * 1e3:>10.1f} {rss:>18} {_check(r):>8} {r.get('foreign_cpu_frac', 0):>10.0%}")
    if r["status"] != "ok":
        line += f"  [{r['status'][:80]}]"
    return line


def footer(res: dict) -> str:
    parts = []
    if "weight_bytes" in res:
        parts.append(f"a step reads {res['weight_bytes'] / MiB:.0f} MiB of weights + {res['kv_bytes'] / MiB:.1f} MiB "
                     f"of K/V at context {res['context']}")
    bw = res.get("read_bandwidth")
    if bw:
        parts.append(f"read bandwidth {bw['bytes_per_s'] / 1e9:.1f} GB/s with {bw['threads']} threads")
    if res.get("loadavg"):
        parts.append(f"load avg {res['loadavg'][0]:.1f}->{res['loadavg'][1]:.1f}")
    return f"{'':<22} " + "; ".join(parts) if parts else ""


def case_block(res: dict) -> list[str]:
    lines = [engine_line(res, eng, r) for eng, r in res["engines"].items()]
    foot = footer(res)
    return lines + ([foot] if foot else [])
