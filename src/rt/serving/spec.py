"""What a served model takes and returns, read off its planned program: each input's and output's name,
dtype and shape (a dynamic dim by its symbol, with the symbol's range), and whether requests can be
stacked along dim 0 into one call (the batch dim)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..api import CompiledModel, bind_inputs, load
from ..dialects.instantiate import sizes_of
from ..dialects.ir import Value
from ..dialects.symbolic import Sym, evaluate, symbols_of
from ..errors import UsageError

DEFAULT_MAX_BATCH = 16    # rows per batched call unless told (every request in a call waits for all of it)
_NPY_HEADER = 4096        # room for a .npy header (numpy writes 128 bytes, or a multiple of 64)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    shape: tuple          # ints; a dynamic dim as its symbol's text ("B", "(12*S)")

    @staticmethod
    def of(name: str, v: Value) -> "TensorSpec":
        return TensorSpec(name, v.type.np_dtype, tuple(str(d) if isinstance(d, Sym) else d for d in v.type.shape))

    def describe(self) -> dict:
        return {"name": self.name, "dtype": str(self.dtype), "shape": list(self.shape)}


@dataclass(frozen=True)
class ModelSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    ranges: dict                  # symbol -> (lo, hi)
    batch_symbol: str | None      # dim 0 of every input and output, and no other dim: rows stack
    why_unbatched: str            # when batch_symbol is None: why requests run one at a time
    max_nbytes: dict              # input name -> the most bytes its .npy can take (at the largest sizes)

    @staticmethod
    def of(model: CompiledModel) -> "ModelSpec":
        planned = model.planned
        ranges = dict(planned.meta.get("symbols") or {})
        symbol, why = _batch_symbol(planned.inputs + planned.outputs, ranges)
        largest = {k: hi for k, (_, hi) in ranges.items()}
        nbytes = {n: math.prod(evaluate(v.type.shape, largest)) * v.type.np_dtype.itemsize + _NPY_HEADER
                  for n, v in zip(model.input_names, planned.inputs)}
        return ModelSpec(tuple(TensorSpec.of(n, v) for n, v in zip(model.input_names, planned.inputs)),
                         tuple(TensorSpec.of(n, v) for n, v in zip(model.output_names, planned.outputs)),
                         ranges, symbol, why, nbytes)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def max_rows(self) -> int:
        """The most rows one call takes: the batch symbol's upper bound (1 when unbatched)."""
        return self.ranges[self.batch_symbol][1] if self.batch_symbol else 1

    def batch_limit(self, max_batch: int | None) -> int:
        """The most rows one batched call runs (1: requests run one at a time): `max_batch`, or by
        default the model's bound capped at DEFAULT_MAX_BATCH; UsageError when the model cannot take that many."""
        if max_batch is None:
            return min(self.max_rows, DEFAULT_MAX_BATCH)
        if not isinstance(max_batch, int) or max_batch < 1:
            raise UsageError(f"max_batch must be a positive integer, got {max_batch!r}")
        if max_batch > 1 and self.batch_symbol is None:
            raise UsageError(f"max_batch={max_batch}: this model cannot batch requests ({self.why_unbatched}); "
                             "compile it with a dynamic dim 0 (rt.compile(..., dynamic=...)) or use max_batch=1")
        if max_batch > self.max_rows:
            raise UsageError(f"max_batch={max_batch} is more rows than the model takes: its batch size "
                             f"{self.batch_symbol} is in {self.ranges[self.batch_symbol][0]}..{self.max_rows}")
        return max_batch

    def check(self, model: CompiledModel, args: list, kwargs: dict) -> list[np.ndarray]:
        """A request's arrays (positional, by name) in input order, or rt.InputError naming what is
        wrong (names, dtypes, shapes and dynamic sizes): checked before the request joins a batch."""
        ordered, _ = bind_inputs(model.planned, model.signature, tuple(args), kwargs)
        if self.ranges:
            sizes_of(model.planned, [a.shape for a in ordered])
        return ordered

    def describe(self) -> dict:
        return {"inputs": [t.describe() for t in self.inputs], "outputs": [t.describe() for t in self.outputs],
                "dynamic_sizes": {k: list(v) for k, v in self.ranges.items()}}


def load_model(path: str) -> CompiledModel:
    """The model file at `path` (ModelFileError if it does not load; UsageError for a generator's)."""
    model = load(path)
    if not isinstance(model, CompiledModel):
        raise UsageError(f"{path} is a generator; rt serves models (`rt generate` runs generators)")
    return model


def _batch_symbol(values: list[Value], ranges: dict) -> tuple[str | None, str]:
    firsts = {str(v.type.shape[0]) if v.type.rank and isinstance(v.type.shape[0], Sym) else None for v in values}
    symbol = next(iter(firsts)) if len(firsts) == 1 else None
    if symbol is None or symbol not in ranges:
        return None, "dim 0 is not one dynamic size shared by every input and output"
    if any(symbol in symbols_of(v.type.shape[1:]) for v in values):
        return None, f"the batch size {symbol} appears in dims other than dim 0"
    return symbol, ""
