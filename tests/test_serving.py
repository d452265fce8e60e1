"""A served model keeps the answers of the file it loaded while the file is copied over, truncated or
rewritten in place (by `cp` in another process, or by another thread), and holds only the weights'
pages it reads (serialize.MappedWeights, csrc/mapped_file.c)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn

import rt


def _mlp(seed: int, rows: int) -> tuple[rt.CompiledModel, np.ndarray]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64), nn.LayerNorm(64)).eval()
    x = torch.randn(rows, 64)
    return rt.compile(model, (x,)), x.numpy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two models of one signature: one row (weights read in place) and four rows (weights packed)."""
    d = tmp_path_factory.mktemp("serving")
    out = {}
    for rows in (1, 4):
        a, x = _mlp(0, rows)
        b, _ = _mlp(1, rows)
        a.save(str(d / f"a{rows}.rt"))
        b.save(str(d / f"b{rows}.rt"))
        np.save(d / f"x{rows}.npy", x)
        out[rows] = d / f"a{rows}.rt", d / f"b{rows}.rt", d / f"x{rows}.npy"
    return d, out


# Serves model after model from `served` in one thread, while the main thread changes the file under
# the one being served: `cp` of another model or of the same one over it, truncation (by `truncate`
# or by this process), rewriting bytes in place; then restores the file and loads it again.
SERVE = """
import os, random, shutil, subprocess, sys, threading
import numpy as np, rt
served, other, x, rounds = sys.argv[1], sys.argv[2], np.load(sys.argv[3]), int(sys.argv[4])
original = open(served, "rb").read()
want = rt.load(served)(x)
rng = random.Random(0)

def change(i):
    kind = ("cp other", "cp same", "truncate", "truncate here", "rewrite")[i % 5]
    if kind == "cp other":
        subprocess.run(["cp", other, served], check=True)
    elif kind == "cp same":
        subprocess.run(["cp", served + ".orig", served], check=True)
    elif kind == "truncate":      # opens without waiting (O_NONBLOCK): fails until the lease is given up
        size = str(rng.randrange(len(original)))
        for _ in range(1000):
            if subprocess.run(["truncate", "-s", size, served], stderr=subprocess.DEVNULL).returncode == 0:
                break
        else:
            raise SystemExit("truncate never got the file")
    elif kind == "truncate here":
        os.truncate(served, rng.randrange(len(original)))
    else:
        with open(served, "r+b") as f:
            f.seek(rng.randrange(len(original)))
            f.write(os.urandom(4096))

shutil.copyfile(served, served + ".orig")
wrong, calls, states = [], [0], set()
for i in range(rounds):
    model = rt.load(served)
    stop = threading.Event()
    def serve():
        while not stop.is_set():
            if not np.array_equal(model(x), want):
                wrong.append(i)
            calls[0] += 1
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        change(i)
        for _ in range(3):
            if not np.array_equal(model(x), want):
                wrong.append(i)
    finally:
        stop.set()
        t.join()
    states.add(model.weights_state)
    del model
    shutil.copyfile(served + ".orig", served)
print(rounds, calls[0], sorted(states), wrong)
"""


@pytest.mark.parametrize("rows", [1, 4])
def test_served_model_survives_its_file_changing(files, rows):
    d, paths = files
    served, other, x = paths[rows]
    work = d / f"served{rows}.rt"
    work.write_bytes(served.read_bytes())
    r = subprocess.run([sys.executable, "-c", SERVE, str(work), str(other), str(x), "200"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    rounds, calls, rest = r.stdout.strip().splitlines()[-1].split(" ", 2)
    assert rounds == "200" and int(calls) > 200 and rest == "['detached'] []", r.stdout


def test_a_loaded_model_holds_a_lease_and_copies_only_what_it_reads(files):
    _, paths = files
    served, _, x = paths[4]
    model = rt.load(str(served))
    assert model.weights_state == "leased"
    kept = model._program.constants_read_in_place()
    packed = [k for k in model.kernel_plan() if k.get("b_copy")]
    assert packed and len(kept) == len(model._program.layout.constants) - len(packed)


def _served_copy(files, tmp_path):
    """(model loaded from a copy of the packed-weights file, its input, the copy's path, another file)."""
    _, paths = files
    served, other, xpath = paths[4]
    path = tmp_path / "m.rt"
    path.write_bytes(served.read_bytes())
    return rt.load(str(path)), np.load(xpath), path, other


def test_op_by_op_after_the_file_changed(files, tmp_path):
    """The packed weights' file pages are gone once the file changed: the op-by-op executors, which
    read every weight, say so; the compiled program keeps its answers."""
    model, x, path, other = _served_copy(files, tmp_path)
    want = model(x)
    path.write_bytes(other.read_bytes())          # opened for writing here: the lease breaks first
    assert model.weights_state == "detached"
    assert np.array_equal(model(x), want)
    with pytest.raises(rt.ModelFileError, match="opened for writing after it was loaded.*load it again"):
        model.run_op_by_op(x)


def test_op_by_op_before_the_file_changes_keeps_every_weight(files, tmp_path):
    model, x, path, other = _served_copy(files, tmp_path)
    want = model.run_op_by_op(x, kernels="numpy")
    path.write_bytes(other.read_bytes())
    assert np.array_equal(model.run_op_by_op(x, kernels="numpy"), want)
    assert np.array_equal(model(x), model.run_op_by_op(x))


def test_without_a_lease_the_weights_are_copied_at_load(files, tmp_path):
    """A file already open for writing cannot be leased: rt.load copies it, and its changes do not matter."""
    _, paths = files
    served, other, xpath = paths[1]
    x = np.load(xpath)
    path = tmp_path / "m.rt"
    path.write_bytes(served.read_bytes())
    with open(path, "r+b") as writer:
        model = rt.load(str(path))
        assert model.weights_state == "private"
        want = model(x)
        writer.truncate(0)
        assert np.array_equal(model(x), want)
        writer.write(other.read_bytes())
    assert np.array_equal(model(x), want) and np.array_equal(model.run_op_by_op(x), want)


FORKED = """
import gc, os, sys
import numpy as np, rt
path, x = sys.argv[1], np.load(sys.argv[2])
a = rt.load(path)
want = a(x)
pid = os.fork()
if pid == 0:       # the child (rt cannot run in it: libgomp's threads do not survive a fork) drops
    code = 1       # its copy of the model: the lease it shares with the parent is the parent's
    try:
        code = 0 if a.weights_state == "inherited" else 2
        del a
        gc.collect()
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
with open(path, "r+b") as f:
    f.truncate(0)
assert a.weights_state == "detached" and np.array_equal(a(x), want), a.weights_state
print("ok")
"""


def test_a_forked_child_leaves_the_parents_lease(files, tmp_path):
    _, paths = files
    a, _, x = paths[4]
    (tmp_path / "a.rt").write_bytes(a.read_bytes())
    r = subprocess.run([sys.executable, "-c", FORKED, str(tmp_path / "a.rt"), str(x)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
