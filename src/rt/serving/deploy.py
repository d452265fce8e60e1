"""Deploying a saved model on Ray Serve from Python: `deploy` checks the file here, starts Ray on this
machine (or joins a cluster), checks that the replicas' threads fit the CPUs, deploys and returns the
URL; `shutdown` stops Serve, and Ray if `deploy` started it."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from ..errors import RtError, UsageError, require

# Serve replaces a crashed replica after a health check finds it gone (its default: every 10 s; a SIGKILLed
# replica was replaced 8 s after the kill, 2-4 s at this period); the check itself costs nothing here
_HEALTH_CHECK_PERIOD_S = 2.0

# how long Ray's free-CPU count may lag a replica's removal (a CI run was refused right after a delete)
_RESOURCE_LAG_S = 5.0

_started_ray = False        # whether this process's Ray is deploy's to stop


@dataclass(frozen=True)
class Served:
    """A deployed model: its URL (POST {url}/predict, GET {url}/health, GET {url}/ready), the Serve
    application's name, and how it runs."""
    url: str
    name: str
    replicas: int
    threads: int            # rt threads per replica: the CPUs Ray reserves for each
    max_batch: int          # rows per batched call; 1: one request per call
    handle: Any             # the Serve DeploymentHandle


def application(path: str, *, replicas: int = 1, threads: int = 1, max_batch: int | None = None,
                batch_wait_ms: float = 5.0):
    """The Serve application serving the model file at `path` (for `serve.run`, or Serve's own config):
    `replicas` copies, each on `threads` CPUs and as many rt threads."""
    serve = require("ray.serve", "rt.serving")
    from .replica import ModelServer
    from .spec import DEFAULT_MAX_BATCH
    # requests a replica holds: a full batch waiting while one runs (Serve's default 5 would cap batches)
    ongoing = max(5, 2 * (max_batch or DEFAULT_MAX_BATCH))
    return serve.deployment(ModelServer, name="rt_model").options(
        num_replicas=replicas, ray_actor_options={"num_cpus": threads}, max_ongoing_requests=ongoing,
        health_check_period_s=_HEALTH_CHECK_PERIOD_S).bind(os.path.abspath(path), max_batch, batch_wait_ms)


def deploy(path: str, *, replicas: int = 1, threads: int | None = None, max_batch: int | None = None,
           batch_wait_ms: float = 5.0, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
           route: str = "/", address: str | None = None, ready_timeout_s: float = 300.0) -> Served:
    """Serve the model file at `path` over HTTP on Ray Serve, and return once every replica has loaded it.

    threads: rt threads per replica (default: the free CPUs shared among the replicas); replicas x
    threads must fit the CPUs Ray has free, or UsageError (in a running Ray, after re-reading them for
    up to 5 s: Ray frees a deleted replica's CPUs late). max_batch: the most rows one batched call
    runs (default: the model's batch bound, at most 16), for a model whose dim 0 is dynamic; 1 runs
    one request per call. batch_wait_ms: the longest a request waits for others to share its call.
    address: a Ray cluster to join (`ray start --head` printed it); default: start Ray here. The app
    `name` (default: the file's stem) deployed again replaces the old one. host and port apply when
    this call starts Serve. Replicas not all up after `ready_timeout_s` are removed again, with an
    rt.RtError saying what Serve reported."""
    for what, value, low in (("replicas", replicas, 1), ("threads", threads, 1), ("port", port, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise UsageError(f"{what} must be an integer of at least {low}, got {value!r}")
    if not isinstance(batch_wait_ms, (int, float)) or batch_wait_ms < 0:
        raise UsageError(f"batch_wait_ms must be a number of milliseconds >= 0, got {batch_wait_ms!r}")
    if not route.startswith("/"):
        raise UsageError(f"route must start with '/', got {route!r}")
    limit = _check_file(path, max_batch)
    serve = require("ray.serve", "rt.serving")
    ray = require("ray", "rt.serving")
    local = address is None and not ray.is_initialized()
    if local:                               # refused before anything starts
        cores = len(os.sched_getaffinity(0))
        threads = plan_threads(replicas, threads, cores, [cores], "on this machine")
    _start_ray(ray, address)
    serve.start(http_options={"host": host, "port": port})
    name = name or os.path.splitext(os.path.basename(path))[0]
    if name in serve.status().applications:
        serve.delete(name)                      # its CPUs are free again for the new one
    if not local:
        threads = _plan_in_cluster(ray, replicas, threads)
    app = application(path, replicas=replicas, threads=threads, max_batch=limit, batch_wait_ms=batch_wait_ms)
    handle, = serve.run_many([serve.RunTarget(app, name, route)], wait_for_applications_running=False)
    _wait_until_running(serve, name, ready_timeout_s)
    return Served(f"http://{host}:{port}{route.rstrip('/')}", name, replicas, threads, limit, handle)


def _plan_in_cluster(ray, replicas: int, threads: int | None) -> int:
    """plan_threads against the cluster's free CPUs. Ray reports CPUs freed by a just-deleted replica
    some time after Serve says it is gone, so a refusal is only final once that lag has passed."""
    deadline = time.monotonic() + _RESOURCE_LAG_S
    while True:
        try:
            return plan_threads(replicas, threads, ray.available_resources().get("CPU", 0),
                                [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]])
        except UsageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_until_running(serve, name: str, timeout_s: float) -> None:
    """Until Serve runs every replica of application `name` (each has loaded the file: a replica is up
    once its constructor returns); RtError with Serve's message if it fails, or is not up in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(name)
        if app is not None and app.status == "RUNNING":
            return
        if app is not None and app.status == "DEPLOY_FAILED":
            raise RtError(f"Serve could not deploy {name}: {app.message}")
        if time.monotonic() > deadline:
            serve.delete(name)
            said = f"{app.status}: {app.message}" if app is not None else "not started"
            raise RtError(f"{name}: the replicas were not all up after {timeout_s:g} s (Serve: {said}); removed it")
        time.sleep(0.2)


def _check_file(path: str, max_batch: int | None) -> int:
    """The rows per batched call for this file (rt.serving.spec), or the error the replicas would meet,
    raised here (ModelFileError, UsageError) before anything starts."""
    from .spec import ModelSpec, load_model
    return ModelSpec.of(load_model(path)).batch_limit(max_batch)


def _start_ray(ray, address: str | None) -> None:
    """Ray on this machine's cores, a new instance (address "local": never a cluster found by chance),
    or the cluster at `address`; nothing when this process already runs Ray."""
    global _started_ray
    if ray.is_initialized():
        return
    if address is None:
        ray.init(address="local", num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False)
    else:
        ray.init(address=address)
    _started_ray = True


def plan_threads(replicas: int, threads: int | None, free_cpus: float, machines: list[float],
                 where: str = "in the Ray cluster") -> int:
    """Threads per replica: `threads`, or by default the free CPUs shared among the replicas; UsageError
    when the replicas do not fit the free CPUs, or do not fit the machines (`machines`: each one's CPUs)
    with each replica's CPUs on one machine. (Ray would leave a replica that does not fit waiting for
    CPUs forever; and rt on cores shared with another replica slows down more than on fewer threads.)"""
    free = int(free_cpus)
    if threads is None:
        threads = max(1, min(int(max(machines, default=0)), free // replicas))
    if replicas * threads > free:
        raise UsageError(f"{replicas} replica(s) x {threads} thread(s) = {replicas * threads} CPUs, more than the "
                         f"{free} free {where}: lower the replicas or the threads (each replica runs "
                         "rt on CPUs of its own)")
    if sum(int(n) // threads for n in machines) < replicas:
        raise UsageError(f"{replicas} replica(s) of {threads} CPUs each do not fit the machines of the Ray cluster "
                         f"(CPUs: {', '.join(str(int(n)) for n in machines)}): a replica's CPUs are on one machine")
    return threads


def shutdown() -> None:
    """Stop Serve (every deployed model) and the Ray that `deploy` started; nothing if Ray is not running."""
    global _started_ray
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    require("ray.serve", "rt.serving").shutdown()
    if _started_ray:
        ray.shutdown()
        _started_ray = False
