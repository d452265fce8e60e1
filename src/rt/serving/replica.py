"""The Ray Serve replica that serves one saved model over HTTP (the routes: README.md, "Serving").

It runs rt on as many threads as Ray gave it CPUs (rt's own default would be every core of the machine,
whatever the other replicas use), loads the file without torch before Serve sends it any request (Serve
routes to a replica once its constructor returns: that is the readiness wait), and runs one model call
at a time on a thread of its own, so that its event loop keeps answering /health while a call runs.
Models with a dynamic batch dim get their concurrent requests stacked into one call (rt.serving.batcher)."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..errors import RtError, UsageError
from ..kernels import get_num_threads, set_num_threads, threads_in_use
from . import batcher, codec
from .spec import ModelSpec, load_model

_log = logging.getLogger("ray.serve")
_ROUTES = {"/": "POST", "/predict": "POST", "/health": "GET", "/ready": "GET"}


class ModelServer:
    def __init__(self, path: str, max_batch: int | None, batch_wait_ms: float):
        set_num_threads(max(1, math.floor(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self._path, self._wait_ms = path, batch_wait_ms
        self._replica = serve.get_replica_context().replica_id.unique_id
        self._calls = ThreadPoolExecutor(1, thread_name_prefix="rt-model")     # one model call at a time
        self._rows_per_call: Counter = Counter()        # written on the call thread, read by /health
        self._stats = threading.Lock()
        self._requests = 0
        self._limit = 1
        self._failed: RtError | None = None     # why the model did not load: every request answers 503
        try:
            self._model = load_model(path)
            self._spec = ModelSpec.of(self._model)
            self._limit = self._spec.batch_limit(max_batch)
        except RtError as e:
            self._failed = e
            _log.error("rt: cannot serve %s: %s", path, e)
        if self._limit > 1:
            self._batched = serve.batch(self._run_batch, max_batch_size=self._limit,
                                        batch_wait_timeout_s=batch_wait_ms / 1000,
                                        batch_size_fn=lambda requests: sum(map(batcher.rows, requests)))

    async def __call__(self, request: Request) -> Response:
        path = request.url.path[len(request.scope.get("root_path", "")):].rstrip("/") or "/"
        method = _ROUTES.get(path)
        if method is None or request.method != method:
            routes = ", ".join(f"{m} {p}" for p, m in _ROUTES.items())
            return Response(codec.error_body(UsageError(f"no route {request.method} {path}; the routes are {routes}")),
                            404 if method is None else 405, media_type=codec.JSON)
        try:
            if path == "/health":
                return _json(200, self.health())
            if self._failed is not None:
                return Response(codec.error_body(self._failed), 503, media_type=codec.JSON)
            if path == "/ready":
                return _json(200, {"ready": True, "model": self._path})
            return await self._predict(request)
        except Exception as e:  # noqa: BLE001 - every failure answers JSON; a non-rt one is a bug, logged
            if not isinstance(e, RtError):
                _log.exception("rt: request failed")
            return Response(codec.error_body(e), codec.error_status(e), media_type=codec.JSON)

    async def _predict(self, request: Request) -> Response:
        self._requests += 1
        kind = codec.media_type(request.headers.get("content-type"))
        args, kwargs = codec.decode_inputs(await request.body(), kind, self._spec)
        arrays = self._spec.check(self._model, args, kwargs)
        if self._limit > 1 and batcher.rows(arrays) <= self._limit:
            outs = await self._batched(arrays)
            if isinstance(outs, RtError):
                raise outs
        else:
            outs = await asyncio.get_running_loop().run_in_executor(self._calls, self._run, arrays)
        body, media = codec.encode_outputs(self._model.output_names, outs,
                                           codec.answers_json(request.headers.get("accept"), kind))
        return Response(body, 200, media_type=media)

    async def _run_batch(self, requests: list[list]) -> list:
        return await asyncio.get_running_loop().run_in_executor(
            self._calls, batcher.run_batched, self._run, requests, self._limit)

    def _run(self, arrays: list) -> list:
        outs = self._model.run_flat(*arrays)
        with self._stats:
            self._rows_per_call[batcher.rows(arrays) if self._spec.batch_symbol else 1] += 1
        return outs

    def health(self) -> dict:
        """Liveness and what this replica serves: the model's inputs and outputs, rt's threads, how it
        batches, what it ran."""
        out = {"model": os.path.basename(self._path), "path": self._path, "replica": self._replica,
               "pid": os.getpid(), "threads": get_num_threads(),
               "threads_in_use": threads_in_use(), "torch_imported": "torch" in sys.modules,
               "state": "ready" if self._failed is None else "failed"}
        if self._failed is not None:
            return {**out, "error": type(self._failed).__name__, "message": str(self._failed)}
        batching = ({"max_rows": self._limit, "wait_ms": self._wait_ms} if self._limit > 1 else
                    {"max_rows": 1, "why": self._spec.why_unbatched or "max_batch=1: one request per call"})
        with self._stats:
            rows = sorted(self._rows_per_call.items())
        return {**out, **self._spec.describe(), "batching": batching,
                "served": {"requests": self._requests, "calls": sum(n for _, n in rows),
                           "rows_per_call": {str(k): n for k, n in rows}}}


def _json(status: int, doc: dict) -> Response:
    return Response(json.dumps(doc).encode(), status, media_type=codec.JSON)
