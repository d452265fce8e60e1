"""The planned dialect: the fused ops with every value given a storage, plus copies.

Each fused op `fused.X` has a planned twin `planned.X` with the same facts (derived here, so nothing is
declared twice); kernel_facts.py adds what the planner must know of each op's C kernel (the records
step, rt.kernels.encode, turns planned ops into C op records). `planned.copy` materialises a value (e.g. a strided view or
an output that is also an input) into a fresh contiguous buffer.
"""
from __future__ import annotations

import numpy as np

from .registry import REGISTRY, OpDef, op, same_as_first


def _derive_planned_twins() -> None:
    for fused in REGISTRY.dialect_ops("fused"):
        twin = "planned." + fused.name.split(".", 1)[1]
        if twin not in REGISTRY:
            REGISTRY.register(OpDef(twin, fused.operands, fused.infer, fused.reference, dict(fused.attrs),
                                    fused.traits, fused.verify, dict(fused.extra)))


_derive_planned_twins()

op("planned.copy", ("x",), same_as_first, lambda a, at: np.array(a[0], order="C"))

from . import kernel_facts  # noqa: E402,F401  (what the planner knows of each planned op's kernel)
