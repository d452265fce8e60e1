"""The `rt` command on a small model: compile a .pt2, run it, inspect it; how it ends on errors."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from rt import cli
from rt.errors import ModelFileError


def rt_cmd(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rt.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    x = torch.randn(2, 16)
    torch.export.save(torch.export.export(model, (x,)), str(d / "m.pt2"))
    np.save(d / "x.npy", x.numpy())
    with torch.no_grad():
        np.save(d / "want.npy", model(x).numpy())
    r = rt_cmd("compile", "m.pt2", "-o", "m.rt", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "m.pt2 -> m.rt" in r.stdout and "2 planned ops" in r.stdout
    return d


def test_run_writes_the_output(workdir):
    r = rt_cmd("run", "m.rt", "--input", "x.npy", "--output", "y.npy", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "output 0: float32[2, 8]" in r.stdout
    y, want = np.load(workdir / "y.npy"), np.load(workdir / "want.npy")
    assert np.abs(y - want).max() <= 1e-5 * np.abs(want).max()


def test_run_with_a_wrong_input_names_it(workdir):
    np.save(workdir / "bad.npy", np.zeros((3, 16), np.float32))
    r = rt_cmd("run", "m.rt", "--input", "bad.npy", cwd=workdir)
    assert r.returncode == 3
    assert r.stderr == "rt run: input 'input' has shape [3, 16], expected [2, 16] (float32)\n"


def test_inspect_shows_ir_plan_and_picture(workdir):
    r = rt_cmd("inspect", "m.rt", "--stage", "fused", "--picture", "plan.png", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "fused.matmul" in r.stdout and 'act = "gelu_erf"' in r.stdout
    assert "plan: arena" in r.stdout and "lower bound" in r.stdout
    assert (workdir / "plan.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_file_is_a_clear_error(workdir):
    r = rt_cmd("run", "nope.rt", cwd=workdir)
    assert r.returncode == 5 and r.stderr == "rt run: nope.rt: cannot read: No such file or directory\n"
    r = rt_cmd("compile", "nope.pt2", "-o", "x.rt", cwd=workdir)
    assert r.returncode == 5 and r.stderr == "rt compile: cannot read nope.pt2: no such file\n"


def test_demo_reports_stages_plan_latency_and_error(tmp_path):
    r = rt_cmd("demo", "--model", "mlp", "--repeat", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in ("[stage] import", "torch ", "fused ", "planned ", "arena", "lower bound", "torch eager",
                 "max abs error relative"):
        assert text in r.stdout


def test_exit_codes_are_documented():
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    r = rt_cmd("--help", cwd=".")
    for code, families, what in cli.EXIT_CODES:
        assert f"| {code} | {what} |" in readme
        assert f"{code:>3}  {what}" in r.stdout


def test_exit_code_of_each_family():
    from rt import errors
    assert cli.exit_code(errors.UsageError("x")) == 2
    assert cli.exit_code(errors.IndexOutOfRangeError("x")) == 1
    assert cli.exit_code(errors.ProgramError("x")) == 1
    assert cli.exit_code(errors.UnsupportedOpError([])) == 4
    assert cli.exit_code(errors.ModelFileError("x")) == 5


def test_interrupt_exits_130_quietly(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["run", "m.rt"]) == 130
    assert capsys.readouterr() == ("", "")


def test_an_error_that_is_not_an_rt_error_is_a_bug_and_keeps_its_traceback(monkeypatch):
    def bug(args):
        raise ZeroDivisionError("a bug in rt")
    monkeypatch.setattr(cli, "_inspect", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["inspect", "m.rt"])


def test_an_rt_error_is_one_line_on_stderr(monkeypatch, capsys):
    def refused(args):
        raise ModelFileError("m.rt: corrupt header (checksum mismatch)")
    monkeypatch.setattr(cli, "_inspect", refused)
    assert cli.main(["inspect", "m.rt"]) == 5
    assert capsys.readouterr() == ("", "rt inspect: m.rt: corrupt header (checksum mismatch)\n")


def _ray_servers() -> set[int]:
    """The pids of the Ray clusters' GCS servers running now (one per Ray instance)."""
    pids = set()
    for d in pathlib.Path("/proc").iterdir():
        try:
            if d.name.isdigit() and b"gcs_server" in (d / "cmdline").read_bytes().split(b"\0")[0]:
                pids.add(int(d.name))
        except OSError:
            pass
    return pids


def test_serve_answers_over_http_until_ctrl_c(workdir, tmp_path):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("ray")
    import re
    import select
    import signal
    import socket
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = _ray_servers()
    with open(tmp_path / "stderr", "w+") as err:        # a file: Ray's logs would fill a pipe
        p = subprocess.Popen([sys.executable, "-m", "rt.cli", "serve", "m.rt", "--threads", "1", "--port", str(port)],
                             cwd=workdir, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert select.select([p.stdout], [], [], 180)[0], "rt serve printed nothing in 180 s"
            line = p.stdout.readline()       # the one line it prints once the model is served (or EOF)
            assert line.startswith("serving m.rt at "), (line, (tmp_path / "stderr").read_text()[-3000:])
            url = re.search(r"at (\S+)/predict", line).group(1)
            assert url == f"http://127.0.0.1:{port}" and "1 replica(s) x 1 thread(s), one request per call" in line
            x, want = np.load(workdir / "x.npy"), np.load(workdir / "want.npy")
            r = httpx.post(f"{url}/predict", json={"inputs": {"input": x.tolist()}}, timeout=60)
            got = np.array(r.json()["outputs"]["output"]["data"], np.float32)
            assert r.status_code == 200 and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
            p.send_signal(signal.SIGINT)
            assert p.wait(timeout=60) == 130
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    deadline = time.monotonic() + 30                # its Ray is stopped: no GCS server of its own is left
    while _ray_servers() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_servers() - before


def test_serve_refuses_more_threads_than_cores_before_starting_ray(workdir):
    pytest.importorskip("ray")
    import os
    cores = len(os.sched_getaffinity(0))
    r = rt_cmd("serve", "m.rt", "--replicas", str(cores + 1), "--threads", "1", cwd=workdir)
    assert r.returncode == 2 and r.stderr == (
        f"rt serve: {cores + 1} replica(s) x 1 thread(s) = {cores + 1} CPUs, more than the {cores} free on this "
        "machine: lower the replicas or the threads (each replica runs rt on CPUs of its own)\n")
