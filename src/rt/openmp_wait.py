"""How long rt's idle OpenMP threads spin before they sleep, set before libgomp loads.

libgomp's default is to spin 300,000 rounds (about 3 ms here: a `pause` takes ~10 ns) after every
parallel region. On a machine of its own that costs nothing, but when another process
competes for the cores a spinning worker keeps a core from the thread the next region waits for: GPT-2
2-layer S=64 (7.5 ms idle) took up to 124 ms a call with one busy process beside it. Bounded spinning
(GOMP_SPINCOUNT below, ~0.1 ms) keeps every gap between rt's regions inside the spin, so an idle
machine loses nothing, and a worker that waits longer gives its core back
(benchmarks/README.md, "Session 9").

libgomp reads its environment once, when it is loaded (by rt's extension, or by torch, which ships its
own libgomp.so.1 that rt then shares), so `import rt` sets GOMP_SPINCOUNT if libgomp is not loaded yet
and the user has chosen no policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT: theirs always wins). Child
processes inherit it, as they would the user's own.
"""
from __future__ import annotations

import os

GOMP_SPINCOUNT = 10_000
_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def libgomp_loaded() -> bool:
    """Whether this process has libgomp mapped already (its settings are then fixed)."""
    try:
        with open("/proc/self/maps") as f:
            return "libgomp" in f.read()
    except OSError:
        return False


def bound_spinning() -> bool:
    """Set GOMP_SPINCOUNT for the libgomp this process will load; False where it is too late or the
    user decided."""
    if any(k in os.environ for k in _USER_SETTINGS) or libgomp_loaded():
        return False
    os.environ["GOMP_SPINCOUNT"] = str(GOMP_SPINCOUNT)
    return True
