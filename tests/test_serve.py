"""rt models behind Ray Serve (rt.serving): answers over HTTP equal the model called in-process bit for
bit, in JSON and in .npy/.npz; bad requests get 400 with rt's message; health and readiness; concurrent
requests to a model with a dynamic batch dim share calls; a short load; a replica killed mid-load is
replaced with no request lost or answered wrongly. One Ray instance (2 CPUs, loopback) for the module;
each class deploys its own model and deletes it after, so that the next one has the CPUs."""
import io
import json
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import rt
from rt.serving import application, codec, deploy
from rt.serving.batcher import run_batched
from rt.serving.deploy import plan_threads
from rt.serving.spec import ModelSpec
from rt.testing import models
from rt.testing.serve_load import (answer_arrays, binary_request, drive, in_process, json_request, measure,
                                   replica_pids, same)

READY_S = 120       # the longest a deployment may take to come up on a loaded 2-core machine


class Pair(nn.Module):
    """Two inputs (features, token ids) and two outputs, all with the batch dim first."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(100, 64)
        self.mlp = models.mlp(64, 64, 64, 2, batch=1)[0]

    def forward(self, x, ids):
        h = self.mlp(x + self.emb(ids).mean(1))
        return h, h.sum(-1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    model, (x,) = models.mlp(d_in=64, d_hidden=64, d_out=64, n_layers=2, batch=1)
    rt.compile(model, (x,)).save(str(d / "mlp.rt"))
    x, ids = torch.randn(2, 64), torch.randint(0, 100, (2, 4))
    rt.compile(Pair().eval(), (x, ids), dynamic={"x": {0: ("B", 1, 8)}, "ids": {0: ("B", 1, 8)}}).save(str(d / "pair.rt"))
    (d / "cut.rt").write_bytes((d / "mlp.rt").read_bytes()[:-100])
    return d


@pytest.fixture(scope="module")
def port():
    ray = pytest.importorskip("ray")
    pytest.importorskip("httpx")
    from ray import serve
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": free})
        yield free
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="class")
def served(request, files, port):
    """The class's model deployed (its `deployment` attribute: file and deploy's options)."""
    from ray import serve
    path, options = request.cls.deployment
    s = deploy(str(files / path), port=port, name=request.cls.__name__, route=f"/{request.cls.__name__}", **options)
    yield s
    serve.delete(s.name)


def rng_rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)


# ---- without Ray ----------------------------------------------------------------------------------
def test_rt_and_rt_serving_import_nothing_of_ray():
    code = ("import sys, rt, rt.cli, rt.serving\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'starlette', 'httpx'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stderr


def test_threads_times_replicas_must_fit_the_cpus():
    assert plan_threads(1, None, 2, [2]) == 2 and plan_threads(2, None, 2, [2]) == 1
    assert plan_threads(2, 2, 8, [4, 4]) == 2 and plan_threads(2, None, 8, [4, 4]) == 4
    with pytest.raises(rt.UsageError, match=r"3 replica\(s\) x 1 thread\(s\) = 3 CPUs, more than the 2 free"):
        plan_threads(3, 1, 2, [2])
    with pytest.raises(rt.UsageError, match=r"2 replica\(s\) of 3 CPUs each do not fit the machines of the Ray "
                                            r"cluster \(CPUs: 4, 2\)"):
        plan_threads(2, 3, 6, [4, 2])


def test_bodies_decode_to_the_inputs_dtypes_or_say_what_is_wrong(files):
    spec = ModelSpec.of(rt.load(str(files / "pair.rt")))
    x = rng_rows(2, 0).tolist()
    args, kwargs = codec.decode_inputs(json.dumps({"inputs": [x, [[1, 2, 3, 4]] * 2]}).encode(), codec.JSON, spec)
    assert kwargs == {} and [(a.dtype, a.shape) for a in args] == [(np.float32, (2, 64)), (np.int64, (2, 4))]
    for ids, message in (([[1.5, 2, 3, 4]] * 2, "input 'ids' takes int64 values; the JSON holds floats"),
                         ([[2 ** 70, 2, 3, 4]] * 2, "input 'ids' takes int64 values; the JSON holds mixed values"),
                         ([[True, False, True, True]] * 2, "input 'ids' takes int64 values; the JSON holds booleans")):
        with pytest.raises(rt.InputError, match=re.escape(message)):
            codec.decode_inputs(json.dumps({"inputs": {"x": x, "ids": ids}}).encode(), codec.JSON, spec)
    with pytest.raises(rt.InputError, match=re.escape("the model's 2 input(s): x, ids")):
        codec.decode_inputs(json.dumps({"inputs": [x, x, x]}).encode(), codec.JSON, spec)
    with pytest.raises(rt.InputError, match="this model takes 2 inputs \\(x, ids\\): send an application/x-npz"):
        codec.decode_inputs(binary_request(["x"], [np.zeros((1, 64), np.float32)], []).body, codec.NPY, spec)
    for arrays, message in (({"y": np.zeros((1, 64), np.float32)}, "the .npz member 'y' is not one of the model's"),
                            ({"x": np.zeros((40, 64), np.float32)}, "or is larger than that input can be")):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        with pytest.raises(rt.InputError, match=re.escape(message)):
            codec.decode_inputs(buf.getvalue(), codec.NPZ, spec)


def test_errors_answer_their_status_with_rts_message_and_no_traceback():
    for e, status in ((rt.InputError("x"), 400), (rt.IndexOutOfRangeError("x"), 400), (rt.UsageError("x"), 400),
                      (rt.ModelFileError("x"), 503), (rt.KernelError("x"), 500), (rt.ProgramError("x"), 500),
                      (ZeroDivisionError("x"), 500)):
        assert codec.error_status(e) == status
    assert json.loads(codec.error_body(rt.KernelError("op failed"))) == {"error": "KernelError", "message": "op failed"}
    assert json.loads(codec.error_body(ZeroDivisionError("bug"))) == {"error": "InternalError",
                                                                      "message": "ZeroDivisionError: bug"}


def test_deploy_refuses_before_starting_anything(files):
    with pytest.raises(rt.ModelFileError) as e:
        deploy(str(files / "cut.rt"))
    with pytest.raises(rt.ModelFileError) as want:
        rt.load(str(files / "cut.rt"))
    assert str(e.value) == str(want.value)
    with pytest.raises(rt.UsageError, match="this model cannot batch requests"):
        deploy(str(files / "mlp.rt"), max_batch=4)
    with pytest.raises(rt.UsageError, match="max_batch=9 is more rows than the model takes: its batch size B is in 1..8"):
        deploy(str(files / "pair.rt"), max_batch=9)
    with pytest.raises(rt.UsageError, match="replicas must be an integer of at least 1"):
        deploy(str(files / "mlp.rt"), replicas=0)


def test_batching_stacks_rows_and_a_failed_call_runs_its_requests_alone():
    calls = []

    def run(arrays):            # a model that refuses a row holding -1
        calls.append([a.shape for a in arrays])
        if (arrays[0] == -1).any():
            raise rt.InputError("a row holds -1")
        return [arrays[0] * 2, arrays[1][:, 0]]

    requests = [[np.full((n, 3), i, np.float32), np.full((n, w), i, np.int64)]
                for i, (n, w) in enumerate([(2, 4), (1, 4), (3, 5), (2, 4), (4, 4)])]
    out = run_batched(run, requests, limit=5)
    # the same dims past dim 0 and at most 5 rows per call: (0, 1, 3), (2), (4)
    assert calls == [[(5, 3), (5, 4)], [(3, 3), (3, 5)], [(4, 3), (4, 4)]]
    assert all(same(o, run(r)) for o, r in zip(out, requests))
    calls.clear()
    requests[1][0][0, 0] = -1
    out = run_batched(run, requests, limit=5)
    assert calls[:4] == [[(5, 3), (5, 4)], [(2, 3), (2, 4)], [(1, 3), (1, 4)], [(2, 3), (2, 4)]]   # then alone
    assert isinstance(out[1], rt.InputError) and same(out[0], run(requests[0]))


# ---- one request per call -------------------------------------------------------------------------
class TestStaticModel:
    deployment = ("mlp.rt", {})        # default threads: both CPUs of the module's Ray

    def test_health_and_readiness(self, served, files):
        import httpx
        h = httpx.get(f"{served.url}/health", timeout=READY_S).json()
        assert served.threads == 2 and h["threads"] == 2     # what Ray gave the replica, not OMP_NUM_THREADS=1
        assert h["state"] == "ready" and h["model"] == "mlp.rt"
        assert h["torch_imported"] is False
        assert h["inputs"] == [{"name": "input", "dtype": "float32", "shape": [1, 64]}]
        assert h["outputs"] == [{"name": "output", "dtype": "float32", "shape": [1, 64]}]
        assert h["batching"] == {"max_rows": 1, "why": "dim 0 is not one dynamic size shared by every input and output"}
        r = httpx.get(f"{served.url}/ready")
        assert r.status_code == 200 and r.json()["ready"] is True

    def test_json_and_npy_answers_equal_the_model_in_process(self, served, files):
        import httpx
        xs = [[rng_rows(1, seed)] for seed in range(4)]
        wants, _ = in_process(str(files / "mlp.rt"), xs, threads=served.threads)
        for x, want in zip(xs, wants):
            for req, accept, kind in ((json_request(["input"], x, want), None, "application/json"),
                                      (binary_request(["input"], x, want), None, "application/x-npy"),
                                      (binary_request(["input"], x, want), "application/json", "application/json")):
                headers = {"content-type": req.content_type, **({"accept": accept} if accept else {})}
                r = httpx.post(f"{served.url}/predict", content=req.body, headers=headers)
                assert r.status_code == 200 and r.headers["content-type"] == kind, r.text
                assert same(answer_arrays(r), want)
        r = httpx.post(f"{served.url}/", json={"inputs": [xs[0][0].tolist()]})      # positional, on POST /
        assert r.status_code == 200 and same(answer_arrays(r), wants[0])
        assert r.json()["outputs"]["output"]["shape"] == [1, 64]

    @pytest.mark.parametrize("body, content_type, message", [
        (json.dumps({"inputs": {"input": [[0.5] * 63]}}), "application/json",
         "input 'input' has shape [1, 63], expected [1, 64] (float32)"),
        (json.dumps({"inputs": {"x": [[0.5] * 64]}}), "application/json",
         "unknown input 'x'; the model's inputs are: input"),
        (json.dumps({"inputs": {"input": [["a"] * 64]}}), "application/json",
         "input 'input' takes float32 values; the JSON holds strings"),
        (json.dumps({"inputs": {"input": [[0.5] * 64, [0.5]]}}), "application/json",
         "input 'input' is not a rectangular nested list of numbers"),
        (json.dumps({"input": [[0.5] * 64]}), "application/json", 'a JSON request is {"inputs": '),
        ("{not json", "application/json", "the request body is not JSON"),
        ("garbage", "application/x-npy", "the request body is not a .npy file"),
        ("garbage", "application/x-npz", "the request body is not an .npz file"),
        ("garbage", "text/plain", "cannot read a request body of type 'text/plain'"),
        ("npy:float64", "application/x-npy", "input 'input' has dtype float64, expected float32 (shape [1, 64])"),
    ])
    def test_bad_requests_get_400_with_rts_message(self, served, body, content_type, message):
        import httpx
        if body == "npy:float64":
            body = binary_request(["input"], [rng_rows(1, 0).astype(np.float64)], []).body
        r = httpx.post(f"{served.url}/predict", content=body, headers={"content-type": content_type})
        assert r.status_code == 400 and r.headers["content-type"] == "application/json"
        doc = r.json()
        assert set(doc) == {"error", "message"} and doc["error"] == "InputError"
        assert doc["message"].startswith(message), doc["message"]
        assert "Traceback" not in r.text

    def test_the_message_is_the_one_rt_raises_in_process(self, served, files):
        import httpx
        x = np.zeros((2, 64), np.float32)
        with pytest.raises(rt.InputError) as want:
            rt.load(str(files / "mlp.rt"))(x)
        r = httpx.post(f"{served.url}/predict", json={"inputs": {"input": x.tolist()}})
        assert r.status_code == 400 and r.json()["message"] == str(want.value)

    def test_unknown_routes_and_methods(self, served):
        import httpx
        r = httpx.get(f"{served.url}/nope")
        assert r.status_code == 404 and r.json()["message"].startswith("no route GET /nope; the routes are POST /")
        r = httpx.get(f"{served.url}/predict")
        assert r.status_code == 405 and r.json()["error"] == "UsageError"

    def test_the_load_client_counts_wrong_answers_and_rts_errors_without_retrying(self, served, files):
        x = [rng_rows(1, 0)]
        (want,), _ = in_process(str(files / "mlp.rt"), [x], threads=served.threads)
        off = [np.nextafter(want[0], np.inf)]                      # one ulp away: wrong
        bad = [np.zeros((2, 64), np.float32)]                      # rt refuses it: 400, not retried
        result = drive(served.url, [json_request(["input"], x, want), json_request(["input"], x, off),
                                    json_request(["input"], bad, [])], clients=1, retries=3)
        assert (result.ok, result.wrong, result.errors, result.retried) == (1, 1, {"HTTP 400": 1}, {})

    def test_a_short_load_has_no_errors_and_every_answer_right(self, served, files):
        out = measure(served, str(files / "mlp.rt"), [[rng_rows(1, seed)] for seed in range(100)], count=300,
                      clients=4, binary=False, deadline_s=90)
        assert out["in_process"]["ok"] == 300
        assert {k: out["served"][k] for k in ("ok", "wrong", "errors", "unsent")} == \
            {"ok": 300, "wrong": 0, "errors": {}, "unsent": 0}, out


# ---- dynamic batching -----------------------------------------------------------------------------
WAIT_MS = 300


class TestBatching:
    deployment = ("pair.rt", {"threads": 1, "max_batch": 8, "batch_wait_ms": WAIT_MS})

    @staticmethod
    def request(rows: int, seed: int) -> list[np.ndarray]:
        return [rng_rows(rows, seed), np.random.default_rng(seed).integers(0, 100, (rows, 4))]

    def test_health_says_how_it_batches(self, served):
        import httpx
        h = httpx.get(f"{served.url}/health").json()
        assert h["batching"] == {"max_rows": 8, "wait_ms": WAIT_MS} and h["dynamic_sizes"] == {"B": [1, 8]}
        assert [i["shape"] for i in h["inputs"]] == [["B", 64], ["B", 4]]
        assert [(o["name"], o["shape"]) for o in h["outputs"]] == [("0", ["B", 64]), ("1", ["B"])]

    def test_concurrent_requests_share_calls_and_each_gets_its_own_answer(self, served, files):
        import httpx
        before = httpx.get(f"{served.url}/health").json()["served"]
        inputs = [self.request(1 + i % 3, i) for i in range(24)]
        wants, _ = in_process(str(files / "pair.rt"), inputs, threads=served.threads)     # each request alone
        result = drive(served.url, [binary_request(["x", "ids"], a, w) for a, w in zip(inputs, wants)],
                       clients=8, retries=0)
        assert result.ok == 24 and result.errors == {}, result.summary()
        after = httpx.get(f"{served.url}/health").json()["served"]
        rows = {int(k): v - before["rows_per_call"].get(k, 0) for k, v in after["rows_per_call"].items()}
        assert sum(r * n for r, n in rows.items()) == sum(a[0].shape[0] for a in inputs)
        assert max(r for r, n in rows.items() if n) > 3 and max(rows) <= 8, rows     # calls of several requests
        assert after["calls"] - before["calls"] < 24

    def test_a_lone_request_waits_at_most_the_batch_wait(self, served, files):
        import httpx
        inputs = [self.request(2, 99)]
        (want,), _ = in_process(str(files / "pair.rt"), inputs, threads=served.threads)
        t0 = time.perf_counter()
        r = httpx.post(f"{served.url}/predict", content=json_request(["x", "ids"], inputs[0], want).body,
                       headers={"content-type": "application/json"})
        took = time.perf_counter() - t0
        assert r.status_code == 200 and same(answer_arrays(r), want)
        assert WAIT_MS / 1000 <= took < WAIT_MS / 1000 + 5, took

    def test_a_bad_request_in_a_batch_fails_alone(self, served, files):
        import httpx
        inputs = [self.request(2, i) for i in range(6)]
        inputs[3][1][1, 2] = 100                             # a token id past the embedding's 100 rows
        wants, _ = in_process(str(files / "pair.rt"), inputs[:3] + inputs[4:], threads=served.threads)
        result = drive(served.url, [binary_request(["x", "ids"], a, w)
                                    for a, w in zip(inputs, wants[:3] + [[]] + wants[3:])], clients=6, retries=0)
        assert result.ok == 5 and result.errors == {"HTTP 400": 1}, result.summary()
        r = httpx.post(f"{served.url}/predict", content=binary_request(["x", "ids"], inputs[3], []).body,
                       headers={"content-type": "application/x-npz"})
        assert r.json() == {"error": "IndexOutOfRangeError", "message": "input 'ids' holds index 100, outside "
                            "[0, 100) for the embedding table of 100 rows read by planned.embedding (%embedding)"}

    def test_npz_in_npz_out_and_a_size_out_of_range(self, served):
        import httpx
        req = binary_request(["x", "ids"], self.request(9, 0), [])
        r = httpx.post(f"{served.url}/predict", content=req.body, headers={"content-type": req.content_type})
        assert r.status_code == 400 and r.json()["message"] == "input 'x' dim 0 is 9; its dynamic size B takes 1..8"
        req = binary_request(["x", "ids"], self.request(3, 0), [])
        r = httpx.post(f"{served.url}/predict", content=req.body, headers={"content-type": req.content_type})
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-npz"
        assert [a.shape for a in answer_arrays(r)] == [(3, 64), (3,)]


# ---- a file the replicas cannot load --------------------------------------------------------------
def test_a_file_that_does_not_load_answers_503_with_rts_message(files, port):
    import httpx
    from ray import serve
    with pytest.raises(rt.ModelFileError) as want:
        rt.load(str(files / "cut.rt"))
    serve.run(application(str(files / "cut.rt")), name="cut", route_prefix="/cut")   # deploy() would refuse it
    try:
        url = f"http://127.0.0.1:{port}/cut"
        h = httpx.get(f"{url}/health").json()
        assert h["state"] == "failed" and h["error"] == "ModelFileError" and h["message"] == str(want.value)
        for r in (httpx.get(f"{url}/ready"), httpx.post(f"{url}/predict", json={"inputs": [[0.0] * 64]})):
            assert r.status_code == 503 and r.json() == {"error": "ModelFileError", "message": str(want.value)}
    finally:
        serve.delete("cut")


def test_deploy_is_bounded_in_time(files, port):
    from ray import serve
    with pytest.raises(rt.RtError, match="late: the replicas were not all up after 0 s") as e:
        deploy(str(files / "mlp.rt"), threads=1, port=port, name="late", route="/late", ready_timeout_s=0)
    assert type(e.value) is rt.RtError and "late" not in serve.status().applications


# ---- a replica killed mid-load --------------------------------------------------------------------
class TestReplicaKill:
    deployment = ("mlp.rt", {"threads": 1, "replicas": 2})

    def test_the_killed_replica_is_replaced_and_no_request_is_lost_or_wrong(self, served, files):
        before = replica_pids(served.name)
        out = measure(served, str(files / "mlp.rt"), [[rng_rows(1, seed)] for seed in range(100)], count=300,
                      clients=4, kill=True, deadline_s=90)
        print("replica kill:", out["kill"])      # what Serve failed (retried) is in out["kill"]["retried"]
        assert len(before) == 2 and out["served"]["ok"] == 300 and out["served"]["errors"] == {}
        kill = out["kill"]
        assert kill["killed_pid"] in before and "replaced_after_s" in kill, kill
        assert {k: kill[k] for k in ("ok", "wrong", "errors", "unsent")} == \
            {"ok": 300, "wrong": 0, "errors": {}, "unsent": 0}, kill
        after = replica_pids(served.name)
        assert kill["killed_pid"] not in after and len(after) == 2
