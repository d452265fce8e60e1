"""Every source path README.md and docs/*.md name exists, so the docs cannot drift from the tree.

What counts as a path: a token with a slash under a known root (`src/rt/lowering/plan.py`,
`tests/lowering/*.ir`, `benchmarks/...`) or a short form relative to src/rt (`csrc/matmul.c`,
`lowering/plan*.py`, `dialects/`); a bare source file name (`rewrite.py`), which must exist somewhere
in the tree (or be an output meson.build declares); and the module of every `python -m rt...` command.
Globs must match something.
"""
import glob
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("src", "tests", "benchmarks", "docs", ".ci")                      # relative to the repo root
SHORT = ("csrc", "lowering", "dialects", "kernels", "frontend", "bench", "testing", "devtools")   # src/rt/...
SOURCE_EXT = ("py", "pyx", "pxd", "c", "h", "def", "md", "toml", "ir", "build")

_PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./*-]*)" % "|".join(re.escape(t) for t in TOP + SHORT))
_BARE = re.compile(r"(?<![\w./-])([\w-]+\.(?:%s))(?![\w/(])" % "|".join(SOURCE_EXT))     # not a call: x.ir(...)
_MODULE = re.compile(r"python -m (rt[\w.]*)")


def _exists(rel: str) -> bool:
    rel = rel.rstrip(".,;:)")
    bases = [ROOT] if rel.split("/")[0] in TOP else [ROOT / "src" / "rt", ROOT]
    return any(glob.glob(str(base / rel)) for base in bases)


def _everywhere(name: str) -> bool:
    """In the tree, or an output the build generates (meson.build names it: rt_abi.h)."""
    generated = f"output: '{name}'" in (ROOT / "meson.build").read_text()
    return generated or (ROOT / name).exists() or any(next(ROOT.glob(f"{top}/**/{name}"), None)
                                         for top in ("src", "tests", "benchmarks", "docs"))


def _module(mod: str) -> bool:
    path = ROOT / "src" / Path(*mod.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists() or (path / "__main__.py").exists()


def _references():
    for doc in DOCS:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            line = re.sub(r"https?://\S+", "", line)
            where = f"{doc.relative_to(ROOT)}:{n}"
            for m in _PATH.finditer(line):
                yield where, m.group(1), _exists
            for m in _BARE.finditer(line):
                yield where, m.group(1), _everywhere
            for m in _MODULE.finditer(line):
                yield where, m.group(1), _module


REFS = list(_references())


def test_docs_name_paths_at_all_and_stale_ones_are_caught():
    assert len(REFS) > 20 and any("lowering" in r for _, r, _ in REFS)
    assert not _exists("lowering/fusions.py") and not _exists("src/rt/csrc/rt_ops.def")
    assert not _everywhere("planned_kernels.py") and not _module("rt.lowering.lit")


@pytest.mark.parametrize("where,ref,check", REFS, ids=[f"{w} {r}" for w, r, _ in REFS])
def test_named_path_exists(where, ref, check):
    assert check(ref), f"{where} names {ref!r}, which is not in the tree"
