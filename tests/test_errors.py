"""One error family: every error that leaves rt's API or the `rt` command is an rt.RtError that says what
to do, and the command ends with one line and its family's exit code (README, "Command line")."""
import json
import os
import random
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

import rt
from model_files import PREFIX, align64, pack_file, split_file
from rt.dialects import parse_module


# Imported in every process started with `env(block=...)`: the listed modules then fail to import, as if
# they were not installed.
SITECUSTOMIZE = """
import os, sys
_blocked = set(os.environ.get("RT_TEST_BLOCK", "").split(","))
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _Blocked())
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)

    def make(block: str = "") -> dict:
        path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "RT_TEST_BLOCK": block}
    return make


def rt_cmd(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "rt.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_one_line_error(r, code: int, command: str, *texts: str):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"rt {command}: "), r.stderr
    for text in texts:
        assert text in r.stderr, r.stderr


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    x = torch.randn(2, 16)
    compiled = rt.compile(model, x)
    compiled.save(str(d / "m.rt"))
    torch.export.save(torch.export.export(model, (x,)), str(d / "m.pt2"))
    np.save(d / "x.npy", x.numpy())
    return d, compiled, x.numpy()


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 4)

    def forward(self, input_ids):
        return self.table(input_ids) * 2.0


@pytest.fixture(scope="module")
def embed(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    compiled = rt.compile(Embed().eval(), torch.tensor([[1, 2, 3]]))
    compiled.save(str(d / "e.rt"))
    np.save(d / "bad_ids.npy", np.array([[1, 12, 3]], np.int64))
    return d, compiled


def test_every_error_is_an_rt_error_with_a_one_line_docstring():
    errors = [getattr(rt, n) for n in rt.__all__ if isinstance(getattr(rt, n), type)
              and issubclass(getattr(rt, n), BaseException)]
    assert len(errors) >= 13
    for cls in errors:
        assert issubclass(cls, rt.RtError)
        assert cls.__doc__ and "\n" not in cls.__doc__.strip(), cls


# ---- kernel errors at run time ------------------------------------------------------------------
def test_token_id_out_of_range_names_the_input_and_the_id(embed):
    _, compiled = embed
    with pytest.raises(rt.IndexOutOfRangeError, match=r"input_ids.*\b12\b") as e:
        compiled(np.array([[1, 12, 3]], np.int64))
    assert isinstance(e.value, rt.KernelError) and isinstance(e.value, IndexError)
    with pytest.raises(rt.IndexOutOfRangeError, match=r"input_ids.*-1\b"):
        compiled.run_op_by_op(np.array([[1, -1, 3]], np.int64))


def test_cli_kernel_error_exits_1(embed):
    d, _ = embed
    r = rt_cmd("run", "e.rt", "--input", "bad_ids.npy", cwd=d)
    assert_one_line_error(r, 1, "run", "input_ids", "12")


PLANNED = """module @m(%x: tensor<2x16xf32> @ input[0]) -> (tensor<2x8xf32>) {
  %w1 = const "w1" : tensor<32x16xf32> @ const
  %w2 = const "w2" : tensor<8x32xf32> @ const
  %h = planned.matmul %x, %w1 {transpose_b = true} : tensor<2x32xf32> @ arena[0, 256]
  %y = planned.matmul %h, %w2 {transpose_b = true} : tensor<2x8xf32> @ output[0]
  return %y
}
"""


def test_program_the_runtime_refuses():
    rng = np.random.default_rng(0)
    planned = parse_module(PLANNED, {"w1": rng.standard_normal((32, 16), np.float32),
                                     "w2": rng.standard_normal((8, 32), np.float32)})
    planned.meta["plan"] = {"arena_bytes": 64, "lower_bound_bytes": 64, "no_reuse_bytes": 64}   # %h needs 256
    with pytest.raises(rt.ProgramError, match="256 bytes"):
        rt.CompiledModel({"planned": planned})


# ---- malformed model files, at any depth ------------------------------------------------------------
def _paths(obj, at=()):
    yield at
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield from _paths(v, at + (k,))


def _with(header, at, value, delete=False):
    header = json.loads(json.dumps(header))
    if not at:
        return value
    parent = header
    for k in at[:-1]:
        parent = parent[k]
    if delete:
        del parent[at[-1]]
    else:
        parent[at[-1]] = value
    return header


def _mutants(data: bytes, rng: random.Random):
    """Files that differ from a good one: every header field deleted or given a wrong value (with valid
    checksums, so the loader's own checks meet them), IR text edited at random, bytes flipped, truncations."""
    prefix, header, weights = split_file(data)
    for at in _paths(header):
        if at and isinstance(at[-1], str):
            yield pack_file(prefix, _with(header, at, None, delete=True), weights)
        for value in (None, "x", -1, 1.5, [], {}, True, 3, 10 ** 12):
            yield pack_file(prefix, _with(header, at, value), weights)
    for stage, text in header["ir"].items():
        for _ in range(40):
            i = rng.randrange(len(text))
            j = i + rng.randrange(1, 8)
            edit = rng.choice([text[:i] + text[j:], text[:i] + text[i:j][::-1] + text[j:],
                               text[:i] + rng.choice("0123456789%@[],x:{}\"") + text[i:]])
            yield pack_file(prefix, _with(header, ("ir", stage), edit), weights)
    yield pack_file(prefix, header, weights[:-4])
    for _ in range(60):
        b = bytearray(data)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        yield bytes(b)
        yield data[:rng.randrange(len(data))]


@pytest.mark.filterwarnings("ignore::rt.target.TargetChangedWarning")     # a mutated target is decided again
def test_fuzzed_files_raise_only_model_file_error(embed, tmp_path):
    d, _ = embed
    data = (d / "e.rt").read_bytes()
    bad = tmp_path / "bad.rt"
    refused = 0
    for mutant in _mutants(data, random.Random(0)):
        bad.write_bytes(mutant)
        try:
            m = rt.load(str(bad))
        except rt.ModelFileError as e:
            assert str(bad) in str(e)
            refused += 1
            continue
        try:      # a harmless change (or one the loader cannot tell): the model still runs or names a fault
            m(np.array([[1, 2, 3]], np.int64))
            m.plan_summary(), m.op_summary(), [m.ir(s) for s in m.stages]
        except rt.RtError:
            pass
    assert refused > 300


@pytest.mark.parametrize("change, message", [
    (lambda h: h.pop("constants"), "'constants' is missing"),
    (lambda h: h["constants"][0].update(shape=[3, 3]), "is 36 bytes, the header says 160"),
    (lambda h: h["constants"][0].update(offset=8), "offset 8, not a multiple of 64"),
    (lambda h: h["constants"][0].update(dtype="f16"), "unknown dtype 'f16'"),
    (lambda h: h["constants"][0].update(name="other"), "reads constant 'table.weight', which the file lacks"),
    (lambda h: h["plan"].pop("arena_bytes"), "plan 'arena_bytes' is missing"),
    (lambda h: h["plan"].update(arena_bytes=2 ** 40), "an arena of 1099511627776 bytes"),
    (lambda h: h["ir"].update(planned=h["ir"]["planned"].replace("tensor<10x4xf32>", "tensor<4x10xf32>")),
     "does not verify"),
    (lambda h: h["ir"].update(planned=h["ir"]["planned"][:-20]), "corrupt IR"),
])
def test_bad_header_names_the_first_wrong_thing(embed, tmp_path, change, message):
    d, _ = embed
    prefix, header, weights = split_file((d / "e.rt").read_bytes())
    change(header)
    bad = tmp_path / "bad.rt"
    bad.write_bytes(pack_file(prefix, header, weights))
    with pytest.raises(rt.ModelFileError, match=message):
        rt.load(str(bad))


def test_unreadable_model_file(tmp_path):
    with pytest.raises(rt.ModelFileError, match="cannot read: No such file"):
        rt.load(str(tmp_path / "nope.rt"))
    with pytest.raises(rt.ModelFileError, match="cannot read: Is a directory"):
        rt.load(str(tmp_path))


@pytest.mark.parametrize("args, texts", [
    (["run", "garbage.rt"], ["garbage.rt: not an rt model file"]),
    (["inspect", "half.rt"], ["half.rt: truncated"]),
    (["run", "nope.rt"], ["nope.rt: cannot read: No such file"]),
    (["compile", "nope.pt2", "-o", "x.rt"], ["cannot read nope.pt2: no such file"]),
    (["compile", "garbage.rt", "-o", "x.rt"], ["cannot read garbage.rt", "torch.export.save"]),
])
def test_cli_bad_model_file_exits_5(mlp, args, texts):
    d, _, _ = mlp
    (d / "garbage.rt").write_bytes(b"hello, world" * 10)
    data = (d / "m.rt").read_bytes()
    (d / "half.rt").write_bytes(data[:len(data) // 2])
    assert_one_line_error(rt_cmd(*args, cwd=d), 5, args[0], *texts)


# ---- saving ------------------------------------------------------------------------------------------
def _listing(d):
    return sorted(os.listdir(d))


def test_save_errors_name_the_path_and_leave_nothing_behind(mlp, tmp_path):
    _, compiled, x = mlp
    target = tmp_path / "dir.rt"
    target.mkdir()
    before = _listing(tmp_path)
    with pytest.raises(rt.SaveError, match=f"cannot write {target}: Is a directory") as e:
        compiled.save(str(target))
    assert isinstance(e.value, OSError)
    with pytest.raises(rt.SaveError, match="No such file or directory"):
        compiled.save(str(tmp_path / "missing" / "m.rt"))
    with pytest.raises(rt.SaveError, match=f"cannot write {target}"):
        compiled.profile(x, runs=1, trace=str(target))
    with pytest.raises(rt.SaveError, match=f"cannot write {target}"):
        compiled.plan_picture(str(target))
    assert _listing(tmp_path) == before


def test_a_failed_write_leaves_the_old_file(mlp, tmp_path):
    """The disk fills up half-way (a file size limit stands in for it): SaveError, the old file intact."""
    d, _, _ = mlp
    old = tmp_path / "m.rt"
    old.write_bytes(b"the old model")
    script = f"""
import resource, signal, rt
m = rt.load({str(d / 'm.rt')!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    m.save({str(old)!r})
except rt.SaveError as e:
    print(e)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert f"cannot write {old}: File too large" in r.stdout
    assert old.read_bytes() == b"the old model"
    assert _listing(tmp_path) == ["m.rt"]


@pytest.mark.parametrize("args, command", [
    (["compile", "m.pt2", "-o", "outdir"], "compile"),
    (["run", "m.rt", "--input", "x.npy", "--output", "nodir/y.npy"], "run"),
    (["inspect", "m.rt", "--picture", "nodir/p.png"], "inspect"),
])
def test_cli_save_error_exits_6(mlp, args, command):
    d, _, _ = mlp
    (d / "outdir").mkdir(exist_ok=True)
    path = next(a for a in args if a in ("outdir", "nodir/y.npy", "nodir/p.png"))
    assert_one_line_error(rt_cmd(*args, cwd=d), 6, command, f"cannot write {path}")


# ---- missing optional packages -----------------------------------------------------------------------
def test_compile_without_torch(env, tmp_path):
    script = "import rt\ntry:\n    rt.compile(object())\nexcept rt.MissingDependencyError as e:\n    print(e)\n"
    r = subprocess.run([sys.executable, "-c", script], env=env("torch"), capture_output=True, text=True, check=True)
    assert "rt.compile needs torch" in r.stdout and "pip install torch==2.13.0" in r.stdout


@pytest.mark.parametrize("args, block, text", [
    (["compile", "m.pt2", "-o", "y.rt"], "torch", "pip install torch==2.13.0"),
    (["demo", "--model", "mlp"], "torch", "pip install torch==2.13.0"),
    (["inspect", "m.rt", "--picture", "p.png"], "matplotlib", "pip install matplotlib"),
    (["serve", "m.rt"], "ray", "pip install 'ray[serve]==2.60.0'"),
])
def test_cli_missing_package_exits_7(mlp, env, args, block, text):
    d, _, _ = mlp
    assert_one_line_error(rt_cmd(*args, cwd=d, env=env(block)), 7, args[0], f"needs {block}", text)


def test_plan_picture_without_matplotlib(mlp, env, tmp_path):
    d, _, _ = mlp
    script = (f"import rt\ntry:\n    rt.load({str(d / 'm.rt')!r}).plan_picture({str(tmp_path / 'p.png')!r})\n"
              "except rt.MissingDependencyError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", script], env=env("matplotlib"), capture_output=True, text=True,
                       check=True)
    assert "the plan picture needs matplotlib" in r.stdout and "pip install matplotlib" in r.stdout


def test_bench_without_onnxruntime_reports_na(env, tmp_path):
    r = rt_cmd("bench", "--cases", "mlp_tiny", "--engines", "ort", "--rounds", "1", "--quiet-wait", "0",
               "--json", tmp_path / "b.json", cwd=tmp_path, env=env("onnxruntime"))
    assert r.returncode == 0, r.stderr[-2000:]
    status = json.loads((tmp_path / "b.json").read_text())["results"][0]["engines"]["ort"]["status"]
    assert status.startswith("n/a: the ort engine needs onnxruntime") and "pip install onnxruntime" in status


# ---- bad arguments and inputs ---------------------------------------------------------------------
def test_bad_arguments_raise_usage_error(mlp):
    _, compiled, x = mlp
    for call, message in [(lambda: compiled.profile(x, runs=0), "runs must be at least 1"),
                          (lambda: compiled.profile(x, runs=2.5), "runs must be at least 1"),
                          (lambda: compiled.ir("nope"), "unknown stage 'nope'; stages: torch, fused, planned"),
                          (lambda: compiled.op_summary("nope"), "unknown stage 'nope'"),
                          (lambda: compiled.run_op_by_op(x, kernels="x"), "kernels must be 'c' or 'numpy'")]:
        with pytest.raises(rt.UsageError, match=message) as e:
            call()
        assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("args, text", [
    (["bench", "--engines", "nope"], "unknown engine(s) nope; choose from rt, eager, compile, ort"),
    (["bench", "--cases", "nope"], "no case matches nope"),
    (["bench", "--show", "nope.json"], "cannot read --show nope.json: No such file"),
])
def test_cli_usage_error_exits_2(tmp_path, args, text):
    assert_one_line_error(rt_cmd(*args, cwd=tmp_path), 2, "bench", text)


@pytest.mark.parametrize("args, text", [
    (["run", "m.rt", "--input", "wrong.npy"], "input 'input' has shape [3, 16], expected [2, 16]"),
    (["run", "m.rt", "--input", "x.npy", "--input", "x.npy"], "more --input files than the model's 1 inputs"),
    (["run", "m.rt", "--input", "text.npy"], "cannot read input 'input' from text.npy"),
    (["run", "m.rt"], "missing input(s) input"),
])
def test_cli_bad_input_exits_3(mlp, args, text):
    d, _, _ = mlp
    np.save(d / "wrong.npy", np.zeros((3, 16), np.float32))
    (d / "text.npy").write_text("not numpy")
    assert_one_line_error(rt_cmd(*args, cwd=d), 3, "run", text)


@pytest.mark.parametrize("make, text", [
    (lambda: torch.randn(2, 16, dtype=torch.bfloat16), "torch.bfloat16 tensor has no numpy form"),
    (lambda: torch.randn(2, 16).to_sparse(), "is a sparse_coo tensor"),
    (lambda: torch.randn(2, 16, device="meta"), "is a meta tensor"),
])
def test_tensors_numpy_cannot_hold_raise_input_error(mlp, make, text):
    _, compiled, _ = mlp
    with pytest.raises(rt.InputError, match=f"input 'input'.*{text}"):
        compiled(make())


def test_an_unaligned_input_is_copied(mlp):
    _, compiled, x = mlp
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:]
    unaligned = raw.view(np.float32).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    assert np.array_equal(compiled(unaligned), compiled(x))


def test_reference_executor_names_an_index_out_of_range(embed):
    _, compiled = embed
    for bad in (12, -1):        # numpy would wrap -1 silently
        with pytest.raises(rt.IndexOutOfRangeError, match=f"index {bad} outside \\[0, 10\\)"):
            compiled.run_op_by_op(np.array([[1, bad, 3]], np.int64), kernels="numpy")


def test_deeply_nested_header_is_a_model_file_error(embed, tmp_path):
    d, _ = embed
    data = (d / "e.rt").read_bytes()
    (magic, version), _, weights = split_file(data)
    blob = b"[" * 100000 + b"]" * 100000
    head = PREFIX.pack(magic, version, len(blob)) + blob + struct.pack("<I", zlib.crc32(blob))
    bad = tmp_path / "nested.rt"
    bad.write_bytes(head + b"\0" * (align64(len(head)) - len(head)) + weights)
    with pytest.raises(rt.ModelFileError, match="corrupt header"):
        rt.load(str(bad))


# ---- models rt cannot compile -----------------------------------------------------------------------
class Spectrum(nn.Module):
    def forward(self, x):
        return torch.fft.rfft(x).abs()


def test_unsupported_op_lists_the_op_and_the_model_line(tmp_path):
    with pytest.raises(rt.UnsupportedOpError, match=r"aten\.\w*fft\w*.* at .*test_errors.py:\d+") as e:
        rt.compile(Spectrum(), torch.randn(2, 8))
    assert "fft" in e.value.unsupported[0][0]


def test_cli_unsupported_model_exits_4(tmp_path):
    torch.export.save(torch.export.export(Spectrum(), (torch.randn(2, 8),)), str(tmp_path / "s.pt2"))
    r = rt_cmd("compile", "s.pt2", "-o", "s.rt", cwd=tmp_path)
    assert_one_line_error(r, 4, "compile", "1 unsupported ATen op(s)", "fft")
    assert not (tmp_path / "s.rt").exists()
