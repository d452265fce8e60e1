"""Rules of the code base that a grep can check: records are read and written by field name only, and
the IR and lowering packages import nothing compiled."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# r["ip"][19], rec["fp"][0, 0], op->ip[3], ip[16]: a record field by position
_PY_INDEXED = re.compile(r"""(\[\s*["'](ip|fp)["']\s*\]|\b(ip|fp))\s*\[\s*-?\d""")
_C_INDEXED = re.compile(r"""->\s*(ip|fp)\s*\[|\b(ip|fp)\s*\[\s*\d""")


def _hits(pattern: re.Pattern, paths) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in paths
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]


def test_no_python_indexes_a_record_field_by_number():
    files = [p for d in ("src", "tests", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    files += list((ROOT / "src").rglob("*.pyx"))
    files.remove(Path(__file__))
    assert _hits(_PY_INDEXED, files) == []


def test_no_c_indexes_a_record_field_by_number():
    files = [p for ext in ("*.c", "*.h") for p in (ROOT / "src" / "rt" / "csrc").glob(ext)]
    assert files and _hits(_C_INDEXED, files) == []


def test_the_ir_and_lowering_import_nothing_compiled():
    """With every compiled module of rt blocked, rt.dialects, rt.lowering and rt.target still import
    and lower a module to the planned dialect."""
    code = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("rt.kernels"):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import rt.dialects, rt.lowering, rt.target
from rt.dialects import parse_module
from rt.lowering import to_fused
from rt.lowering.plan import to_planned
m = parse_module('''module @m(%x: tensor<2x4xf32>) -> (tensor<2x4xf32>) {
  %0 = torch.relu %x : tensor<2x4xf32>
  return %0
}''')
planned = to_planned(to_fused(m), rt.Target(threads=2))
assert planned.meta["target"].threads == 2
assert not [n for n in sys.modules if n.startswith("rt.kernels")], sorted(sys.modules)
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
