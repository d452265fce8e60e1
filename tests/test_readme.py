"""The README's examples run as written (the long-running `rt bench` and `rt demo` lines excepted:
they have tests of their own)."""
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
SKIP = ("rt bench", "rt demo")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_python_example_runs(tmp_path):
    for code in blocks("python"):
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)


def test_command_line_example_runs(tmp_path):
    script = "\n".join(line for line in blocks("bash")[-1].replace("\\\n", "").splitlines()
                       if not line.strip().startswith(SKIP))
    script = re.sub(r"^rt ", f"{sys.executable} -m rt.cli ", script, flags=re.M)
    script = re.sub(r"^python ", f"{sys.executable} ", script, flags=re.M)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "compiled mlp.pt2 -> mlp.rt" in r.stdout
    assert "planned.matmul" in r.stdout and "plan: arena" in r.stdout
    assert (tmp_path / "y.npy").exists() and (tmp_path / "plan.png").exists()
