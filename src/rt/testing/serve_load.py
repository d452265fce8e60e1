"""A bounded load on a model served by rt.serving, over loopback: concurrent httpx clients post
prepared requests and check every answer against the model called in-process; latency percentiles,
throughput, errors and retries; and killing a replica mid-load. Shared by tests/test_serve.py (a few
hundred requests) and benchmarks/serve_load.py (the full form).

A request is retried (at most `retries` times) only when Serve, not rt, failed it: the connection
broke, or a 5xx came without rt's JSON error body. An answer rt gave is never retried: an rt error
counts as an error, a wrong answer as wrong."""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import require
from ..serving.codec import JSON, NPY, NPZ


@dataclass
class Request:
    body: bytes
    content_type: str
    want: list[np.ndarray]          # the outputs, in output order, from the model called in-process


def json_request(names: list[str], arrays: list[np.ndarray], want: list[np.ndarray]) -> Request:
    doc = {"inputs": {n: a.tolist() for n, a in zip(names, arrays)}}
    return Request(json.dumps(doc).encode(), JSON, want)


def binary_request(names: list[str], arrays: list[np.ndarray], want: list[np.ndarray]) -> Request:
    """.npy for one input, .npz keyed by input name for several."""
    buf = io.BytesIO()
    if len(arrays) == 1:
        np.save(buf, arrays[0])
        return Request(buf.getvalue(), NPY, want)
    np.savez(buf, **dict(zip(names, arrays)))
    return Request(buf.getvalue(), NPZ, want)


def answer_arrays(response) -> list[np.ndarray]:
    """A 200 answer's outputs, in output order, whatever its form (JSON, .npy, .npz)."""
    kind = response.headers.get("content-type", "").split(";")[0]
    if kind == JSON:
        return [np.array(o["data"], dtype=o["dtype"]).reshape(o["shape"])
                for o in response.json()["outputs"].values()]
    if kind == NPY:
        return [np.load(io.BytesIO(response.content), allow_pickle=False)]
    with np.load(io.BytesIO(response.content), allow_pickle=False) as z:
        return [z[k] for k in z.files]


def same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    """Bit for bit: the same dtypes, shapes and values."""
    return len(got) == len(want) and all(g.dtype == w.dtype and np.array_equal(g, w) for g, w in zip(got, want))


def _right(response, want: list[np.ndarray]) -> bool:
    """Whether a 200 answer holds exactly `want` (an answer that does not decode is wrong)."""
    try:
        return same(answer_arrays(response), want)
    except (ValueError, KeyError, TypeError, OSError):
        return False


def _is_rt_answer(response) -> bool:
    try:
        doc = response.json()
    except ValueError:
        return False
    return isinstance(doc, dict) and {"error", "message"} <= set(doc)


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    wrong: int = 0
    errors: dict = field(default_factory=dict)        # "HTTP 400", "ConnectError", ... -> count
    retried: dict = field(default_factory=dict)       # what Serve failed a retried attempt with -> count
    unsent: int = 0                                   # left when the time ran out
    seconds: float = 0.0
    latencies_ms: list = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies_ms) if self.latencies_ms else np.array([np.nan])
        return {"sent": self.sent, "ok": self.ok, "wrong": self.wrong, "errors": dict(self.errors),
                "retried": dict(self.retried), "unsent": self.unsent, "seconds": round(self.seconds, 3),
                "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
                "requests_per_s": round(self.ok / self.seconds, 1) if self.seconds else 0.0}


def drive(url: str, requests: list[Request], clients: int = 4, retries: int = 3, timeout_s: float = 30.0,
          deadline_s: float = 120.0, midway: Callable[[], None] | None = None) -> LoadResult:
    """POST each request to {url}/predict from `clients` concurrent clients and check each answer.
    Stops sending at `deadline_s`; `midway`, if given, runs (in its own thread) once half the requests
    are answered, while the clients go on."""
    httpx = require("httpx", "rt.testing.serve_load")
    result, lock = LoadResult(), threading.Lock()
    pending = list(reversed(range(len(requests))))
    start = time.perf_counter()
    halfway = threading.Thread(target=midway) if midway else None       # ident None: not started yet

    def one(client, r: Request) -> tuple[str, list[str]]:
        """'ok', 'wrong' or the error; and what each retried attempt failed with."""
        failed: list[str] = []
        while True:
            try:
                resp = client.post(f"{url}/predict", content=r.body, headers={"content-type": r.content_type})
            except httpx.TransportError as e:
                outcome = why = type(e).__name__
            else:
                if resp.status_code == 200:
                    return ("ok" if _right(resp, r.want) else "wrong"), failed
                outcome = f"HTTP {resp.status_code}"
                if resp.status_code < 500 or _is_rt_answer(resp):
                    return outcome, failed
                why = f"{outcome}: {resp.text[:120]}"
            if len(failed) == retries:
                return outcome, failed
            failed.append(why)

    def client_loop():
        with httpx.Client(timeout=timeout_s) as client:
            while True:
                with lock:
                    if not pending or time.perf_counter() - start > deadline_s:
                        return
                    i = pending.pop()
                    result.sent += 1
                t0 = time.perf_counter()
                outcome, failed = one(client, requests[i])
                with lock:
                    result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    for why in failed:
                        result.retried[why] = result.retried.get(why, 0) + 1
                    if outcome in ("ok", "wrong"):
                        setattr(result, outcome, getattr(result, outcome) + 1)
                    else:
                        result.errors[outcome] = result.errors.get(outcome, 0) + 1
                    if halfway and halfway.ident is None and len(result.latencies_ms) >= len(requests) // 2:
                        halfway.start()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - start
    result.unsent = len(pending)
    if halfway and halfway.ident is not None:
        halfway.join()
    return result


def in_process(path: str, inputs: list[list[np.ndarray]], threads: int,
               count: int | None = None) -> tuple[list[list[np.ndarray]], LoadResult]:
    """The model called in this process on `threads` rt threads (what a replica runs on), `count` calls
    (default: one per input) one after another, cycling over `inputs`: the outputs for each input (what
    the served answers must equal) and the calls' timing."""
    import rt
    from ..kernels import get_num_threads, set_num_threads
    before = get_num_threads()
    set_num_threads(threads)
    try:
        model = rt.load(path)           # after the thread count: the runtime sizes its scratch then
        result, outs = LoadResult(), []
        start = time.perf_counter()
        for i in range(len(inputs) if count is None else count):
            t0 = time.perf_counter()
            out = model.run_flat(*inputs[i % len(inputs)])
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            if i < len(inputs):
                outs.append(out)
        result.seconds = time.perf_counter() - start
        result.sent = result.ok = len(result.latencies_ms)
        return outs, result
    finally:
        set_num_threads(before)


def measure(served, path: str, inputs: list[list[np.ndarray]], count: int, clients: int, binary: bool = True,
            kill: bool = False, deadline_s: float = 120.0) -> dict:
    """One model of the load test, served as `served` (rt.serving.deploy's answer): `count` calls
    in-process cycling over `inputs`, the same `count` requests over HTTP from `clients` clients
    (.npy/.npz bodies, or JSON), and with `kill`, the same again while one replica is SIGKILLed midway
    (what Serve fails is retried, at most 3 times), with the seconds from the kill until Serve runs as
    many replicas as before. Summaries (LoadResult.summary) by run."""
    import rt
    wants, local = in_process(path, inputs, served.threads, count)
    names, form = rt.load(path).input_names, binary_request if binary else json_request
    pool = [form(names, x, w) for x, w in zip(inputs, wants)]
    requests = [pool[i % len(pool)] for i in range(count)]
    out = {"in_process": local.summary(),
           "served": drive(served.url, requests, clients, retries=0, deadline_s=deadline_s).summary()}
    if kill:
        killed = []             # (pid, when)
        result = drive(served.url, requests, clients, retries=3, deadline_s=deadline_s,
                       midway=lambda: killed.append((kill_one_replica(served.name), time.perf_counter())))
        out["kill"] = result.summary()
        if killed:
            wait_for_replicas(served.name, served.replicas, killed[0][0])
            out["kill"].update(killed_pid=killed[0][0], replaced_after_s=round(time.perf_counter() - killed[0][1], 1))
    return out


def replica_pids(app: str) -> list[int]:
    """The process ids of the live Serve replicas of application `app` (Serve names them
    SERVE_REPLICA::<app>#<deployment>#<id>)."""
    ray = require("ray", "rt.testing.serve_load")
    pids = []
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith(f"SERVE_REPLICA::{app}#"):
            try:
                handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                pids.append(ray.get(handle.__ray_call__.remote(lambda _: os.getpid()), timeout=30))
            except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):   # gone since listed
                pass
    return sorted(pids)


def kill_one_replica(app: str) -> int:
    """SIGKILL one replica of `app`, as a crash would: its pid."""
    pid = replica_pids(app)[0]
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_for_replicas(app: str, count: int, killed: int, timeout_s: float = 60.0) -> float:
    """Seconds until `app` runs `count` replicas again, none of them the process `killed`;
    TimeoutError past timeout_s."""
    serve = require("ray.serve", "rt.testing.serve_load")
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        states = [d.replica_states for d in serve.status().applications[app].deployments.values()]
        if all(s == {"RUNNING": count} for s in states):
            pids = replica_pids(app)
            if len(pids) == count and killed not in pids:
                return time.perf_counter() - start
        time.sleep(0.2)
    raise TimeoutError(f"{app}: not {count} running replicas {timeout_s:g} s after the kill: {states}")
