"""The terminal table of the decode cases: time per generated token beside its bandwidth floor, and prefill."""
from __future__ import annotations

from .cases import rt_peer

MiB = 2 ** 20
ENG = 14       # width of the engine column: "llama.cpp-q4_0"
HEADER = (f"{'case':<22} {'engine':<{ENG}} {'ms/token':>9} {'min':>7} {'max':>7} {'tok/s':>7} {'floor ms':>8} "
          f"{'of floor':>8} {'rt x':>5} {'prefill ms':>10} {'RSS MiB ready/peak':>18} {'max err':>8} "
          f"{'l2 err':>8} {'argmax':>7} {'greedy':>6} {'other load':>10}")
LEGEND = ("decode cases: ms/token: median time of one greedy decode step after the prompt's prefill (rt: "
          "its program run and token choice, from Generator.last_timings), min/max over steps; floor ms: "
          "bytes one step reads (the weights, LM head included and a tied embedding once, in fp32 or, for a "
          "quantized engine, as it stores them, + K/V cache at the prompt's length) / the read bandwidth "
          "measured with the same threads (numpy sums over 1 GiB); of floor: floor / median (100% = "
          "bandwidth-bound); rt x: engine / rt of the medians (a quantized llama.cpp or ORT GenAI row: / rt of "
          "the same width, q8_0 -> rt-int8, q4_0 and int4 -> rt-int4); prefill ms: median time to prefill the "
          "prompt (logits of its last row only). Errors against HF's fp32 logits (model(ids, use_cache=False)) "
          "after each of 128 positions of a fixed prompt (rt: Generator.position_logits, through its decode "
          "path; llama.cpp: one batch, every row's logits; eager: step by step through its DynamicCache): max "
          "err = max |logits - HF| / max |HF|, l2 err = mean over positions of ||logits - HF||_2 / ||HF||_2, "
          "argmax = positions whose argmax is HF's; greedy = the case's greedy tokens equal to HF's, from the first.")


def floor_s(res: dict, r: dict | None = None) -> float | None:
    """The bandwidth floor of one step: the case's fp32 weights, or the engine's own weight bytes when it
    reports them (a quantized engine), plus the K/V cache."""
    bw = res.get("read_bandwidth", {}).get("bytes_per_s")
    if not bw or "weight_bytes" not in res:
        return None
    weights = (r or {}).get("info", {}).get("weight_bytes", res["weight_bytes"])
    return (weights + res["kv_bytes"]) / bw


def _errors(r: dict) -> str:
    info = r.get("info", {})
    err = r.get("max_rel_err", info.get("max_rel_err"))
    cols = [f"{err:.0e}" if err is not None else "",
            f"{info['mean_rel_l2_err']:.0e}" if "mean_rel_l2_err" in info else "",
            f"{info['argmax_match']}/{info['error_positions']}" if "argmax_match" in info else "",
            f"{info['greedy_tokens_matching_hf']}/{info['greedy_tokens']}" if "greedy_tokens" in info else ""]
    return " ".join(f"{c:>{w}}" for c, w in zip(cols, (8, 8, 7, 6)))


def engine_line(res: dict, eng: str, r: dict) -> str:
    case = res["case"]
    if "median_s" not in r:
        return f"{case:<22} {eng:<{ENG}} {r['status']}"[:220]
    mem = r.get("mem", {})
    rss = "/".join(f"{mem.get(k, {}).get(f, 0) / MiB:.0f}" for k, f in (("ready", "rss"), ("end", "maxrss")))
    floor = floor_s(res, r)
    speed = f"{r['rt_speedup']:.2f}" if "rt_speedup" in r else ("1" if eng == rt_peer(eng) else "")
    line = (f"{case:<22} {eng:<{ENG}} {r['median_s'] * 1e3:>9.2f} {r['min_s'] * 1e3:>7.2f} {r['max_s'] * 1e3:>7.2f} "
            f"{1 / r['median_s']:>7.1f} {(floor or 0) * 1e3:>8.2f} {(floor or 0) / r['median_s']:>8.0%} {speed:>5} "
            f"{r['prefill_median_s'] * 1e3:>10.1f} {rss:>18} {_errors(r)} {r.get('foreign_cpu_frac', 0):>10.0%}")
    if r["status"] != "ok":
        line += f"  [{r['status'][:80]}]"
    return line


def footer(res: dict) -> str:
    parts = []
    if "weight_bytes" in res:
        parts.append(f"a step reads {res['weight_bytes'] / MiB:.0f} MiB of fp32 weights + {res['kv_bytes'] / MiB:.1f} "
                     f"MiB of K/V at context {res['context']}")
    stored = [f"{eng} {r['info']['weight_bytes'] / MiB:.0f}" for eng, r in res["engines"].items()
              if "weight_bytes" in r.get("info", {})]
    if stored:
        parts.append("weights as stored (MiB): " + ", ".join(stored))
    for eng, r in res["engines"].items():     # what llama.cpp's quantizer made of the embedding / LM head
        types = r.get("info", {}).get("tensor_types", {})
        head = {k: types[k] for k in ("token_embd.weight", "output.weight") if k in types}
        if head:
            parts.append(f"{eng}: " + ", ".join(f"{k.split('.')[0]} {v}" for k, v in head.items()))
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
