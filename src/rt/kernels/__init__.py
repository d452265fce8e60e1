"""Compiled runtime: op codes, the op-record dtype, and Program (see docs/dev.md)."""

from rt.kernels._runtime import (
    DTYPE_CODES,
    HAVE_ONEDNN,
    MATMUL_B_MODES,
    MAX_ARGS,
    MAX_FP,
    MAX_IP,
    RECORD_DTYPE,
    SPLIT_FAST,
    Program,
    attention_scratch_bytes,
    get_num_threads,
    op_codes,
    record_layout,
    run_single,
    set_num_threads,
)

__all__ = [
    "DTYPE_CODES",
    "HAVE_ONEDNN",
    "MATMUL_B_MODES",
    "MAX_ARGS",
    "MAX_FP",
    "MAX_IP",
    "RECORD_DTYPE",
    "SPLIT_FAST",
    "Program",
    "attention_scratch_bytes",
    "get_num_threads",
    "op_codes",
    "record_layout",
    "run_single",
    "set_num_threads",
]
