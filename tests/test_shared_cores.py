"""rt on cores shared with other processes: its thread count follows the cores they leave free
(csrc/threads.c), its idle OpenMP threads spin only briefly (rt/openmp_wait.py), and the benchmark
harness can time engines beside busy processes (--contend). No timing is asserted here."""
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import rt
from rt import kernels

CORES = len(os.sched_getaffinity(0))
needs_two_cores = pytest.mark.skipif(CORES < 2, reason="one core: there is no thread count to give up")


@pytest.fixture
def program():
    """A small saved model that runs in ~0.1 ms, called through its C program."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256)).eval()
    compiled = rt.compile(model, (torch.randn(8, 256),))
    x = np.random.default_rng(0).standard_normal((8, 256), dtype=np.float32)
    wanted = kernels.get_num_threads()
    yield lambda: compiled(x)
    kernels.set_num_threads(wanted)


def _threads_after_running(call, seconds: float) -> int:
    """The count runs use after calling for this long (the count is looked at every 100 ms)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        call()
    return kernels.threads_in_use()


@contextlib.contextmanager
def _busy(n: int, nice: int = 0):
    """n processes each keeping a core busy (at this niceness) until the block ends."""
    others = [subprocess.Popen(["nice", "-n", str(nice), sys.executable, "-c", "while True: pass"])
              for _ in range(n)]
    try:
        time.sleep(0.2)
        yield
    finally:
        for p in others:
            p.kill()
            p.wait()


@needs_two_cores
def test_thread_count_follows_the_free_cores(program):
    kernels.set_num_threads(CORES)
    assert _threads_after_running(program, 0.5) == CORES          # the machine is ours
    with _busy(CORES - 1):
        assert _threads_after_running(program, 1.0) == 1           # all but one core taken
        assert kernels.get_num_threads() == CORES                  # what was asked for is kept
    deadline = time.monotonic() + 5
    while kernels.threads_in_use() != CORES and time.monotonic() < deadline:
        _threads_after_running(program, 0.2)
    assert kernels.threads_in_use() == CORES                       # and back once they are gone


@needs_two_cores
def test_a_pinned_thread_count_stays(program):
    kernels.set_num_threads(CORES, adapt=False)
    with _busy(CORES - 1):
        assert _threads_after_running(program, 0.5) == CORES


@needs_two_cores
def test_niced_processes_do_not_take_cores(program):
    """Work below rt's priority gives the cores back when rt runs: rt keeps its threads."""
    kernels.set_num_threads(CORES)
    with _busy(CORES - 1, nice=19):
        assert _threads_after_running(program, 0.6) == CORES


def _env_of_fresh_import(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**clean, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_import_rt_bounds_openmp_spinning_unless_the_user_chose():
    from rt.openmp_wait import GOMP_SPINCOUNT
    show = "import os; import rt.kernels; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _env_of_fresh_import(show) == str(GOMP_SPINCOUNT)
    assert _env_of_fresh_import(show, GOMP_SPINCOUNT="300000") == "300000"
    assert _env_of_fresh_import(show, OMP_WAIT_POLICY="ACTIVE") == "None"
    pytest.importorskip("torch")
    # torch loaded libgomp first: its settings are fixed, rt leaves the environment alone
    assert _env_of_fresh_import("import torch, os, rt; print(os.environ.get('GOMP_SPINCOUNT'))") == "None"


def test_bad_thread_settings_are_usage_errors():
    with pytest.raises(rt.UsageError, match="at least one thread"):
        kernels.set_num_threads(0)
    r = subprocess.run([sys.executable, "-c", "import rt.kernels"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RT_ADAPT_THREADS": "maybe"})
    assert r.returncode != 0 and "RT_ADAPT_THREADS must be 0" in r.stderr


def test_harness_times_engines_beside_busy_processes(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, "-m", "rt.cli", "bench", "--cases", "mlp_512", "--engines", "rt", "rt-1t",
                        "rt-fixed", "--contend", "1", "--rounds", "1", "--round-seconds", "0.3", "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    engines = json.loads(out.read_text())["results"][0]["engines"]
    assert set(engines) == {"rt", "rt-1t", "rt-fixed"} and all(e["status"] == "ok" for e in engines.values())
    assert engines["rt-1t"]["info"]["threads"] == 1 and engines["rt"]["info"]["threads"] == CORES
    assert all(rd["foreign_cpu_frac"] > 0.2 for e in engines.values() for rd in e["rounds"])   # the busy process ran
    bad = subprocess.run([sys.executable, "-m", "rt.cli", "bench", "--contend", "-1"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--contend" in bad.stderr
