"""Pass manager: named passes, named pipelines, time per pass, verification and IR dumps after each pass.

    pm = PassManager.pipeline("to-fused", verify=True, print_ir_after_all=True)
    fused = pm.run(module)
    pm.timings   # [(pass name, seconds, op count after)]

Verification after every pass: `verify=True` or the environment variable RT_VERIFY=1 (tests always
pass verify=True). IR after every pass, like MLIR's -mlir-print-ir-after-all: `print_ir_after_all=True`
or RT_PRINT_IR_AFTER_ALL=1; it goes to `stream` (default stderr).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from ..dialects.ir import Module
from ..dialects.text import print_module
from ..dialects.verifier import verify_module
from ..dialects.symbolic import size_ranges
from ..errors import LoweringError, VerificationError


@dataclass
class Pass:
    name: str
    run: Callable[[Module], Module | None]     # mutates the module in place or returns a new one
    dialect: str | None = None                 # the dialect the IR is in after this pass (verification)


PASSES: dict[str, Pass] = {}
PIPELINES: dict[str, list[str]] = {}


def register_pass(name: str, dialect: str | None = None):
    """Decorator: register `fn(module) -> Module | None` as a named pass."""
    def deco(fn):
        if name in PASSES:
            raise ValueError(f"pass {name} registered twice")
        PASSES[name] = Pass(name, fn, dialect)
        return fn
    return deco


def register_pipeline(name: str, passes: list[str]) -> None:
    PIPELINES[name] = list(passes)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


@dataclass
class PassManager:
    passes: list[Pass]
    verify: bool | None = None
    print_ir_after_all: bool | None = None
    stream: TextIO | None = None
    timings: list[tuple[str, float, int]] = field(default_factory=list)

    @staticmethod
    def pipeline(name: str, **kw) -> "PassManager":
        if name not in PIPELINES:
            raise LoweringError(f"unknown pipeline {name!r} (known: {', '.join(sorted(PIPELINES))})")
        return PassManager.of(PIPELINES[name], **kw)

    @staticmethod
    def of(names: list[str], **kw) -> "PassManager":
        missing = [n for n in names if n not in PASSES]
        if missing:
            raise LoweringError(f"unknown pass(es) {missing} (known: {', '.join(sorted(PASSES))})")
        return PassManager([PASSES[n] for n in names], **kw)

    def run(self, module: Module) -> Module:
        with size_ranges(module.meta.get("symbols")):
            return self._run(module)

    def _run(self, module: Module) -> Module:
        verify = _env_flag("RT_VERIFY") if self.verify is None else self.verify
        dump = _env_flag("RT_PRINT_IR_AFTER_ALL") if self.print_ir_after_all is None else self.print_ir_after_all
        out = self.stream or sys.stderr
        self.timings = []
        for p in self.passes:
            t0 = time.perf_counter()
            result = p.run(module)
            if result is not None:
                module = result
            dt = time.perf_counter() - t0
            self.timings.append((p.name, dt, len(module.ops)))
            if dump:
                out.write(f"// -----// IR Dump After {p.name} ({dt * 1e3:.2f} ms) //----- //\n")
                out.write(print_module(module))
                out.flush()
            if verify:
                try:
                    verify_module(module, p.dialect)
                except VerificationError as e:
                    raise VerificationError(f"after pass {p.name}: {e}") from e
        return module
