"""Binding dynamic sizes per call: the records step's size-dependent fields, evaluated in one product.

The records step writes a dynamic program's records at the largest sizes and lists every place a size
goes (ProgramLayout.sized). Every such size is a polynomial in the symbols, so all of them are one
integer matrix (places x monomials) times the monomials' values: binding a size costs that product and
a scatter into a copy of the records — no planning, no encoding, no allocation beyond the arena planned
for the largest sizes.
"""
from __future__ import annotations

import numpy as np

from ..dialects.symbolic import Sym


class SizeBinder:
    def __init__(self, records: np.ndarray, sized: list, slot_sizes: list, io_shapes: list[tuple]):
        """sized: (record, "ip" | "offset", index, size) places; slot_sizes: every slot's bytes (Sym or
        int); io_shapes: the shapes of the inputs then the outputs (Sym or int dims)."""
        self.records = records
        sizes = [s for *_, s in sized] + [s for s in slot_sizes if isinstance(s, Sym)]
        sizes += [d for shape in io_shapes for d in shape if isinstance(d, Sym)]
        self.monomials = sorted({m for s in sizes for m, _ in s.terms if m})
        col = {m: j for j, m in enumerate(self.monomials)}
        self.symbols = sorted({x for m in self.monomials for x in m})
        # per record column ("ip" fields, operand "offset"s): (record rows, column indices, sizes' matrix)
        self._places = {}
        for kind in ("ip", "offset"):
            mine = [(r, i, size) for r, k, i, size in sized if k == kind]
            if mine:
                self._places[kind] = (np.array([r for r, _, _ in mine], dtype=np.intp),
                                      np.array([i for _, i, _ in mine], dtype=np.intp),
                                      self._poly_matrix([size for *_, size in mine], col))
        self._slot_m = self._poly_matrix(slot_sizes, col)
        self._io_m = [self._poly_matrix(list(shape), col) for shape in io_shapes]

    def _poly_matrix(self, polys: list, col: dict) -> tuple[np.ndarray, np.ndarray]:
        """(coefficients of the non-constant monomials, constant terms) of each size."""
        a = np.zeros((len(polys), len(self.monomials)), dtype=np.int64)
        c = np.zeros(len(polys), dtype=np.int64)
        for i, p in enumerate(polys):
            for m, k in (p.terms if isinstance(p, Sym) else (((), int(p)),)):
                if m == ():
                    c[i] += k
                else:
                    a[i, col[m]] += k
        return a, c

    def _monomial_values(self, env: dict[str, int]) -> np.ndarray:
        return np.array([np.prod([env[x] for x in m], dtype=np.int64) for m in self.monomials], dtype=np.int64)

    @staticmethod
    def _eval(mc: tuple[np.ndarray, np.ndarray], mono: np.ndarray) -> np.ndarray:
        return mc[0] @ mono + mc[1]

    def bind(self, env: dict[str, int]) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
        """(records, every slot's bytes, the inputs' then the outputs' shapes) at these sizes."""
        mono = self._monomial_values(env)
        recs = self.records.copy()
        for kind, (rows, cols, matrix) in self._places.items():
            recs[kind][rows, cols] = self._eval(matrix, mono)
        shapes = [tuple(int(d) for d in self._eval(m, mono)) for m in self._io_m]
        return recs, self._eval(self._slot_m, mono), shapes
