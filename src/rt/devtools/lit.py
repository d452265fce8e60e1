"""IR-text tests for passes, like MLIR's lit tests: IR in, passes, IR out, compared exactly.

A fixture file (`tests/lowering/*.ir`) holds cases separated by `// -----`; each case names the
passes it runs, so one runner (`tests/test_lowering_lit.py`) runs every fixture:

    // CASE: gelu in GPT-2's tanh form becomes one op
    // PASSES: fuse-dag, dce
    // const "half" = 0.5
    // const "mask" = np.where(np.tril(np.ones((4, 4), bool)), 0, -np.inf)
    module @m(%x: tensor<4xf32>) -> (tensor<4xf32>) {
      ...
    }
    // EXPECT:
    module @m(...) -> (...) {
      ...
    }

`// const "name" = <python expression>` gives the data behind a `const "name"` op (numpy as `np`; the
array is cast to the op's dtype and broadcast to its shape). The module is verified before and after
the passes.

    python -m rt.devtools.lit [FILE...] [--update]

runs the given fixtures (default: every tests/lowering/*.ir under the current directory); --update
rewrites their EXPECT blocks with the current output (review the diff before committing it).
"""
from __future__ import annotations

import glob
import re
import sys
from dataclasses import dataclass

import numpy as np

from ..dialects.ir import TensorType
from ..dialects.text import parse_module, parse_type, print_module
from ..dialects.verifier import verify_module
from ..lowering import PassManager      # the package, so that every pass is registered

SEP = "// -----"
DEFAULT_GLOB = "tests/lowering/*.ir"


@dataclass
class Case:
    name: str
    passes: list[str]
    consts: dict[str, str]
    source: str
    expect: str | None

    def run(self) -> str:
        types = {m.group(1): parse_type(m.group(2))
                 for m in re.finditer(r'const "([^"]+)" : (tensor<[^>]*>)', self.source)}
        arrays = {}
        for name, expr in self.consts.items():
            t: TensorType = types[name]
            arr = np.asarray(eval(expr, {"np": np, "inf": np.inf}))  # noqa: S307 (test fixtures)
            arrays[name] = np.array(np.broadcast_to(arr.astype(t.np_dtype), t.shape))
        module = parse_module(self.source, arrays)
        verify_module(module)
        out = PassManager.of(self.passes, verify=True).run(module)
        return print_module(out)

    def format(self, expect: str | None = None) -> str:
        """The case's fixture text, with `expect` (default: its own) as the EXPECT block."""
        expect = self.expect if expect is None else expect
        head = [f"// CASE: {self.name}", f"// PASSES: {', '.join(self.passes)}"]
        head += [f'// const "{k}" = {v}' for k, v in self.consts.items()]
        return ("\n".join(head) + "\n" + self.source.strip("\n") + "\n// EXPECT:\n"
                + (expect or "").strip("\n") + "\n")


def parse_cases(text: str) -> list[Case]:
    cases = []
    for chunk in text.split(SEP):
        if not chunk.strip():
            continue
        name, passes, consts = "", [], {}
        body_lines, expect_lines, in_expect = [], [], False
        for line in chunk.strip("\n").splitlines():
            s = line.strip()
            if s.startswith("// CASE:"):
                name = s[len("// CASE:"):].strip()
            elif s.startswith("// PASSES:"):
                passes = [p.strip() for p in s[len("// PASSES:"):].split(",") if p.strip()]
            elif s.startswith("// const "):
                m = re.match(r'// const "([^"]+)"\s*=\s*(.+)$', s)
                consts[m.group(1)] = m.group(2)
            elif s == "// EXPECT:":
                in_expect = True
            elif in_expect:
                expect_lines.append(line)
            elif not s.startswith("//"):
                body_lines.append(line)
        cases.append(Case(name, passes, consts, "\n".join(body_lines) + "\n",
                          ("\n".join(expect_lines).strip("\n") + "\n") if expect_lines else None))
    return cases


def format_cases(cases: list[Case], expects: list[str] | None = None) -> str:
    """A fixture file's text (the inverse of parse_cases)."""
    expects = expects or [None] * len(cases)
    return ("\n" + SEP + "\n\n").join(c.format(e) for c, e in zip(cases, expects))


def run_file(path: str, update: bool = False) -> list[tuple[Case, str]]:
    cases = parse_cases(open(path).read())
    results = [(c, c.run()) for c in cases]
    if update:
        with open(path, "w") as f:
            f.write(format_cases(cases, [got for _, got in results]))
    return results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    update = "--update" in argv
    paths = [a for a in argv if not a.startswith("--")] or sorted(glob.glob(DEFAULT_GLOB))
    bad = 0
    for path in paths:
        for c, got in run_file(path, update):
            ok = update or got == c.expect
            bad += not ok
            print(f"{'PASS' if ok else 'FAIL'}  {path}: {c.name}")
            if not ok:
                print(got)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
