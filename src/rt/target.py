"""The machine a model is compiled for, as a value: lowering, planning and the records step take it
as an argument instead of asking the running process, so the same IR and target give the same program
anywhere. A saved file records its target; loaded on another machine, what depends on it is decided
again for that machine (`Target.changes` says what differs)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .abi import CPU_FEATURES, MATVEC_SMALL_ELEMS, SPLIT_CHUNK
from .errors import UsageError

class TargetChangedWarning(UserWarning):
    """A loaded model was compiled for another machine; what depends on the machine was decided again."""


# x86-64 ISA levels by the features rt's kernels care about (the levels its C code is cloned for).
_LEVELS = (("x86-64-v4", {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"}),
           ("x86-64-v3", {"avx2", "fma", "f16c", "avx"}),
           ("x86-64-v2", {"sse4.2"}))


@dataclass(frozen=True)
class Target:
    features: frozenset[str] = field(default_factory=frozenset)   # of rt.abi.CPU_FEATURES
    onednn: bool = False      # matmuls with constant weights may run on oneDNN
    threads: int = 1          # kernel scratch is planned for this many threads

    def __post_init__(self):
        object.__setattr__(self, "features", frozenset(self.features))
        unknown = self.features - set(CPU_FEATURES)
        if unknown:
            raise UsageError(f"unknown CPU feature(s) {sorted(unknown)}; known: {', '.join(CPU_FEATURES)}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise UsageError(f"a target needs at least one thread, got {self.threads!r}")

    @staticmethod
    def host() -> "Target":
        """The running machine, as rt's runtime sees it (its CPU, its build, its thread count)."""
        from .kernels import _runtime
        return Target(frozenset(_runtime.cpu_features()), _runtime.HAVE_ONEDNN, _runtime.get_num_threads())

    def with_(self, **changes) -> "Target":
        return replace(self, **changes)

    def restricted_to(self, host: "Target") -> "Target":
        """What of this target `host` can run: the features and libraries both have, host's threads."""
        return Target(self.features & host.features, self.onednn and host.onednn, host.threads)

    @property
    def isa(self) -> str:
        return next((name for name, need in _LEVELS if need <= self.features), "x86-64")

    @property
    def split_form(self) -> bool:
        """rt's decoder for weights stored in 3.5 bytes per float (csrc/matvec_split.c) runs fast."""
        return {"avx512f", "avx2"} <= self.features

    def split_worthy(self, n: int, k: int) -> bool:
        """Whether a one-row product on a constant [K, N] weight reads it in the split form: this target
        decodes it fast, the weight is too big for matvec.c's small loops and a row holds at least one
        encoded chunk (the rest of a row stays plain floats)."""
        return self.split_form and k >= SPLIT_CHUNK and n * k > MATVEC_SMALL_ELEMS

    def describe(self) -> str:
        extra = [f for f in ("avx512vnni", "avx512bf16") if f in self.features]
        return (f"{self.isa}{'+' + '+'.join(extra) if extra else ''}, "
                f"{'oneDNN' if self.onednn else 'no oneDNN'}, {self.threads} thread{'s' * (self.threads != 1)}")

    def to_dict(self) -> dict:
        return {"features": sorted(self.features), "onednn": self.onednn, "threads": self.threads}

    @staticmethod
    def from_dict(d: dict) -> "Target":
        return Target(frozenset(d["features"]), bool(d["onednn"]), int(d["threads"]))

    def changes(self, other: "Target") -> list[str]:
        """What differs from self to other, in the terms that change a program."""
        out = []
        if self.split_form != other.split_form:
            out.append(f"split weight form {'available' if other.split_form else 'unavailable'}")
        if self.onednn != other.onednn:
            out.append(f"oneDNN {'available' if other.onednn else 'unavailable'}")
        if self.isa != other.isa:
            out.append(f"ISA {self.isa} -> {other.isa}")
        if self.threads != other.threads:
            out.append(f"threads {self.threads} -> {other.threads}")
        return out
