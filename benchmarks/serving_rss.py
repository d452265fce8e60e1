"""Resident memory of GPT-2 small served from its file (rt.load, 3 calls, without torch): leased (the
file's pages, read as needed), after a `cp` over the file (the weights still read in place copied into
rt's memory), and without a lease (the file open for writing at load: every weight copied).

    python benchmarks/serving_rss.py --seq 128
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

SERVE = """
import subprocess, sys
import numpy as np, rt

def rss():
    d = {l.split(":")[0]: int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith(("VmHWM", "VmRSS"))}
    return f"{d['VmRSS']} MiB (peak {d['VmHWM']} MiB)"

path, ids, want, how = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3]), sys.argv[4]
def serve(m):
    for _ in range(3):
        same = np.array_equal(m(ids)[0, :, ::101], want)
    return same
if how == "private":
    with open(path, "r+b"):
        m = rt.load(path)
else:
    m = rt.load(path)
same = serve(m)
print(f"{how:>8}: {m.weights_state:>8}, RSS {rss()}, answers unchanged: {same}", flush=True)
if how == "leased":
    subprocess.run(["cp", path + ".orig", path], check=True)
    same = serve(m)
    print(f" cp over: {m.weights_state:>8}, RSS {rss()}, answers unchanged: {same}", flush=True)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    import numpy as np
    import rt
    from rt.testing import models
    model, (ids,) = models.gpt2_lm(n_layer=12, seq=args.seq)
    compiled = rt.compile(model, (ids,))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gpt2.rt")
        compiled.save(path)
        shutil.copyfile(path, path + ".orig")
        np.save(os.path.join(d, "ids.npy"), ids.numpy())
        np.save(os.path.join(d, "want.npy"), compiled(ids.numpy())[0, :, ::101])
        del compiled, model
        print(f"GPT-2 small, S={args.seq}: file {os.path.getsize(path) / 2**20:.0f} MiB")
        for how in ("leased", "private"):
            shutil.copyfile(path + ".orig", path)
            subprocess.run([sys.executable, "-c", SERVE, path, os.path.join(d, "ids.npy"),
                            os.path.join(d, "want.npy"), how], check=True)


if __name__ == "__main__":
    main()
