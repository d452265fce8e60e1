"""The parent side: one worker process per engine, set up one at a time, then timed in alternating rounds
(round 1: rt, eager, compile, ort; round 2: ...), only one engine running at any moment.

Before each block it also waits (up to quiet_wait_s) for other processes on the machine to go quiet, and
records the CPU share they used during the block (`foreign_cpu_frac`, /proc/stat minus our workers): on a
shared 2-core box that, not the engine, is usually what makes the max and the median drift.

Idle workers block on their stdin; before each timing block the parent waits `settle_s` so the previous
engine's spinning thread pools (OpenMP, OpenBLAS, ORT) go to sleep, and it records how much CPU the idle
workers burned during the block (`idle_cpu_s`, from /proc/<pid>/stat) as evidence that none stole cores.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from .cases import Case, rt_peer, shared_core_variant
from .worker import bootstrap_code

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Options:
    threads: int
    rounds: int
    round_s: float          # target seconds of timed calls per engine per round
    min_reps: int
    max_reps: int
    warmup_s: float
    warmup_min: int
    timeout_s: float        # per worker request (setup, one round, finish)
    settle_s: float
    log_dir: str
    quiet_frac: float = 0.15   # wait (up to quiet_wait_s) until other processes use less than this share of the CPUs
    quiet_wait_s: float = 5.0
    contend: int = 0           # busy processes competing for the cores while engines are timed (no quiet wait then)


class WorkerError(RuntimeError):
    pass


def worker_env(threads: int) -> dict:
    env = dict(os.environ)
    n = str(threads)
    env.update({"RT_NUM_THREADS": n, "OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n,
                "TORCHINDUCTOR_COMPILE_THREADS": "1", "PYTHONUNBUFFERED": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"})
    return env


class WorkerProc:
    def __init__(self, case: str, engine: str, opts: Options):
        self.log_path = os.path.join(opts.log_dir, f"{case}.{engine}.log")
        self._log = open(self.log_path, "w")
        variant = shared_core_variant(engine)
        self.threads = variant.threads or opts.threads
        self.proc = subprocess.Popen([sys.executable, "-c", bootstrap_code()], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log,
                                     env={**worker_env(self.threads), **variant.env}, start_new_session=True)
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, req: dict, timeout: float) -> dict:
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerError(f"worker died before {req['cmd']}: {self.stderr_tail()}") from None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise WorkerError(f"timeout: {req['cmd']} took over {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait(timeout=5)
                    raise WorkerError(f"worker died (exit {self.proc.returncode}) during {req['cmd']}: "
                                      f"{self.stderr_tail()}")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        reply = json.loads(line)
        if not reply.get("ok"):
            raise WorkerError(reply.get("error", "unknown error"))
        return reply

    def stderr_tail(self, n: int = 300) -> str:
        try:
            self._log.flush()
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
            return " | ".join(lines[-3:])[-n:]
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _TICK
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the worker's own session (start_new_session)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self, wait_s: float = 20.0):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        self._log.close()


_NOT_APPLICABLE = ("MissingDependencyError: ", "Unavailable: ")    # error types that mean "cannot run here"


def _status_of(err: str) -> str:
    for prefix in _NOT_APPLICABLE:
        if err.startswith(prefix):
            return "n/a: " + err[len(prefix):]
    return err if err.startswith("timeout") else f"failed: {err}"


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:9]]
        total = sum(vals)
        return total - vals[3] - vals[4], total
    except (OSError, ValueError):
        return 0, 0


class ForeignLoad:
    """CPU share used by processes other than our workers between `start()` and `stop()`."""

    def __init__(self, workers: dict):
        self.workers = workers

    def _mine(self) -> float:
        return sum(w.cpu_seconds() for w in self.workers.values()) * _TICK

    def start(self):
        self.busy0, self.total0 = machine_jiffies()
        self.mine0 = self._mine()

    def stop(self) -> float:
        busy, total = machine_jiffies()
        if total <= self.total0:
            return 0.0
        return max(0.0, (busy - self.busy0) - (self._mine() - self.mine0)) / (total - self.total0)


def wait_quiet(workers: dict, opts) -> tuple[float, float]:
    """Wait up to quiet_wait_s for the other processes on the machine to go quiet; (waited s, their CPU share)."""
    t0 = time.monotonic()
    probe = ForeignLoad(workers)
    while True:
        probe.start()
        time.sleep(0.2)
        frac = probe.stop()
        waited = time.monotonic() - t0
        if frac <= opts.quiet_frac or waited >= opts.quiet_wait_s:
            return waited, frac
        time.sleep(0.3)


def loadavg() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


@contextlib.contextmanager
def busy_processes(n: int):
    """n processes that each keep a core busy (a Python spin loop) until the block ends: --contend."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
             for _ in range(n)]
    try:
        time.sleep(0.5 if procs else 0)       # running before the first timed call
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def run_case(case: Case, engines: list[str], opts: Options) -> dict:
    engines = list(case.engines) if case.is_sgemm else [e for e in case.engines if e in engines]
    res = {"case": case.name, "kind": case.kind, "factory": case.factory, "kwargs": case.kwargs, "note": case.note,
           "engines": {}}
    load0 = loadavg()
    workers: dict[str, WorkerProc] = {}
    reps: dict[str, int] = {}
    for eng in engines:
        r = res["engines"][eng] = {"status": "ok"}
        t0 = time.perf_counter()
        w = WorkerProc(case.name, eng, opts)
        try:
            setup = w.request({"cmd": "setup", "case": case.name, "engine": eng, "threads": w.threads,
                               "warmup_s": opts.warmup_s, "warmup_min": opts.warmup_min}, opts.timeout_s)
        except WorkerError as e:
            r["status"] = _status_of(str(e))
            r["log"] = w.log_path
            w.close(wait_s=2)
            _log(f"  {case.name:<22} {eng:<12} {r['status'][:150]}")
            continue
        setup.pop("ok")
        res.update(setup.pop("facts"))
        r.update(setup)
        r["setup_wall_s"] = time.perf_counter() - t0
        workers[eng] = w
        reps[eng] = max(opts.min_reps, min(opts.max_reps, int(opts.round_s / max(setup["est_s"], 1e-9))))
        _log(f"  {case.name:<22} {eng:<12} ready in {r['setup_wall_s']:.1f} s, ~{setup['est_s'] * 1e3:.3f} ms/call, "
             f"{reps[eng]} calls/round")
    with busy_processes(opts.contend):
        _time_rounds(res, engines, workers, reps, opts)
    flops_engine = "eager" if "eager" in workers else next(iter(workers), None)
    for eng, w in list(workers.items()):
        r = res["engines"][eng]
        try:
            fin = w.request({"cmd": "finish", "flops": eng == flops_engine, "activations": eng == "eager",
                             "bandwidth": case.decode is not None and eng == flops_engine,
                             "threads": opts.threads}, opts.timeout_s)
            for key in ("flops", "flops_error", "torch_peak_activation_bytes", "torch_peak_activation_error",
                        "read_bandwidth"):
                if key in fin:
                    res[key] = fin[key]
            r["mem"] = fin["mem"]
        except WorkerError as e:
            r["finish_error"] = str(e)
        w.close()
    res["loadavg"] = [load0, loadavg()]
    if case.is_sgemm:
        n = case.kwargs["n"]
        res["flops"] = 2 * n ** 3
    _summarise(res)
    return res


def _time_rounds(res: dict, engines: list[str], workers: dict, reps: dict, opts: Options):
    """The alternating timed rounds: one engine at a time, each after the machine settles."""
    for rnd in range(opts.rounds):
        for eng in engines:
            w = workers.get(eng)
            if w is None:
                continue
            r = res["engines"][eng]
            time.sleep(opts.settle_s)
            waited, before = wait_quiet(workers, opts)
            others = {e: o.cpu_seconds() for e, o in workers.items() if e != eng}
            foreign = ForeignLoad(workers)
            foreign.start()
            t0 = time.perf_counter()
            try:
                out = w.request({"cmd": "time", "reps": reps[eng]}, opts.timeout_s)
            except WorkerError as e:
                r["status"] = _status_of(f"round {rnd + 1}: {e}")
                w.close(wait_s=2)
                del workers[eng]
                continue
            wall = time.perf_counter() - t0
            other_load = foreign.stop()
            idle = sum(workers[e].cpu_seconds() - c for e, c in others.items() if e in workers)
            r.setdefault("rounds", []).append({"times_s": out["times"], "wall_s": wall, "idle_cpu_s": idle,
                                               "foreign_cpu_frac": other_load, "quiet_wait_s": waited,
                                               "foreign_cpu_frac_before": before,
                                               **({"phases": out["phases"]} if "phases" in out else {})})


def _per_token_times(rd: dict) -> list[float]:
    """A decode round's per-token times: each step's own where the engine timed steps singly, else each
    generation's mean (rt reports only that)."""
    return [t for ph in rd["phases"] for t in (ph.get("step_s") or [ph["decode_s_per_token"]])]


def _summarise_decode(r: dict):
    rounds = r["rounds"]
    r["prefill_median_s"] = statistics.median(ph["prefill_s"] for rd in rounds for ph in rd["phases"])
    # the median over generations of each one's mean time per token
    r["mean_s_per_token"] = statistics.median(ph["decode_s_per_token"] for rd in rounds for ph in rd["phases"])
    for rd in rounds:                      # the per-token times are what median/min/max (and rt x) describe
        rd["generation_s"], rd["times_s"] = rd["times_s"], _per_token_times(rd)


def _summarise(res: dict):
    for eng, r in res["engines"].items():
        if res["kind"] == "decode" and r.get("rounds"):
            _summarise_decode(r)
        times = [t for rd in r.get("rounds", []) for t in rd["times_s"]]
        if not times:
            if r["status"] == "ok":
                r["status"] = "failed: no timed calls"
            continue
        r["median_s"] = statistics.median(times)
        r["min_s"], r["max_s"], r["n_calls"] = min(times), max(times), len(times)
        r["mean_s"], r["p99_s"] = statistics.fmean(times), sorted(times)[min(len(times) - 1, int(0.99 * len(times)))]
        r["round_medians_s"] = [statistics.median(rd["times_s"]) for rd in r["rounds"]]
        r["foreign_cpu_frac"] = statistics.median(rd["foreign_cpu_frac"] for rd in r["rounds"])
        r["max_idle_cpu_frac"] = max(rd["idle_cpu_s"] / rd["wall_s"] for rd in r["rounds"] if rd["wall_s"] > 0)
        if res.get("flops"):
            r["gflops"] = res["flops"] / r["median_s"] / 1e9
    for eng, r in res["engines"].items():
        peer = res["engines"].get(rt_peer(eng), {})     # rt, or rt of the same weight width (cases.RT_PEER)
        if rt_peer(eng) != eng and peer.get("median_s") and r.get("median_s"):
            r["rt_speedup"] = r["median_s"] / peer["median_s"]     # >1: rt is faster than this engine
            r["rt_speedup_min"] = r["min_s"] / peer["min_s"]
            r["rt_peer"] = rt_peer(eng)
