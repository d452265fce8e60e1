"""The README's examples run as written (the install lines and the long-running `rt bench` and `rt demo`
excepted: they have tests of their own)."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SKIP = ("rt bench", "rt demo", "pip install")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_python_example_runs(tmp_path):
    codes = blocks("python")
    assert codes, "the README has no python example"
    outs = []
    for code in codes:       # each example asserts its own results (served == compiled, rt == torch)
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert "fused.matmul" in outs[0] and "arena_bytes" in outs[0]
    assert (tmp_path / "mlp.rt").exists()


def _runnable(block: str) -> str:
    lines = [line for line in block.replace("\\\n", "").splitlines() if not line.strip().startswith(SKIP)]
    script = re.sub(r"^rt ", f"{sys.executable} -m rt.cli ", "\n".join(lines), flags=re.M)
    return re.sub(r"^python ", f"{sys.executable} ", script, flags=re.M)


def test_command_line_examples_run(tmp_path):
    script = "\n".join(_runnable(b) for b in blocks("bash"))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "compiled mlp.pt2 -> mlp.rt" in r.stdout and "compiled gpt2.pt2 -> gpt2.rt" in r.stdout
    assert "planned.matmul" in r.stdout and "fused.attention" in r.stdout and "plan: arena" in r.stdout
    assert "output 0: float32[1, 128, 50257]" in r.stdout
    assert "compiled gpt2-ckpt -> gpt2-gen.rt: generator" in r.stdout and "decode" in r.stderr
    assert "generator: token ids int64, vocabulary 50257, context 512" in r.stdout
    for f in ("y.npy", "plan.png", "logits.npy", "gpt2-plan.png"):
        assert (tmp_path / f).exists(), f
