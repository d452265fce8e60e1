"""Binding dynamic sizes per call: the records step's size-dependent fields, evaluated in one product.

The records step writes a dynamic program's records at the largest sizes and lists every place a size
goes (ProgramLayout.sized). Every such size, every slot's bytes and every input and output dimension
is a polynomial in the symbols, so all of them are one integer matrix (sizes x monomials) times the
monomials' values: binding a size costs that product, then Program.bound_to_sizes writes the record
words it gives into a copy of the records — no planning, no encoding, no allocation beyond the arena
planned for the largest sizes.
"""
from __future__ import annotations

import math

import numpy as np

from ..dialects.symbolic import Sym


class SizeBinder:
    def __init__(self, record_dtype: np.dtype, sized: list, slot_sizes: list, io_shapes: list[tuple]):
        """sized: (record, "ip" | "offset", index, size) places; slot_sizes: every slot's bytes (Sym or
        int); io_shapes: the shapes of the inputs then the outputs (Sym or int dims)."""
        polys = [size for *_, size in sized] + list(slot_sizes) + [d for shape in io_shapes for d in shape]
        self.monomials = sorted({m for p in polys if isinstance(p, Sym) for m, _ in p.terms if m})
        self.symbols = sorted({x for m in self.monomials for x in m})
        col = {m: j for j, m in enumerate(self.monomials)}
        self._matrix = np.zeros((len(polys), len(self.monomials)), dtype=np.int64)
        self._constant = np.zeros(len(polys), dtype=np.int64)
        for i, p in enumerate(polys):
            for m, k in (p.terms if isinstance(p, Sym) else (((), int(p)),)):
                if m == ():
                    self._constant[i] += k
                else:
                    self._matrix[i, col[m]] += k
        # each place as an index into the records viewed as int64 words
        per = record_dtype.itemsize // 8
        first = {kind: record_dtype.fields[kind][1] // 8 for kind in ("ip", "offset")}
        self.words = np.array([r * per + first[kind] + i for r, kind, i, _ in sized], dtype=np.intp)
        self._nslots = len(slot_sizes)
        self._io_ends = np.cumsum([len(s) for s in io_shapes]).tolist()

    def bind(self, env: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        """(the record words' values, every slot's bytes, the inputs' then the outputs' shapes) at
        these sizes."""
        mono = np.array([math.prod(env[x] for x in m) for m in self.monomials], dtype=np.int64)
        v = self._matrix @ mono + self._constant
        nw = self.words.shape[0]
        dims = v[nw + self._nslots:].tolist()
        shapes = [tuple(dims[a:b]) for a, b in zip([0] + self._io_ends, self._io_ends)]
        return v[:nw], v[nw:nw + self._nslots], shapes
