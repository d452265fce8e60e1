"""Compiled runtime (Program, threads, this machine's facts) and the records step (see docs/dev.md)."""

from rt.kernels._runtime import (
    HAVE_ONEDNN,
    SPLIT_FAST,
    Program,
    attention_scratch_floats,
    conv_winograd_scratch_bytes,
    cpu_features,
    get_num_threads,
    qmatmul_scratch_bytes,
    qweight_bytes,
    record_layout,
    set_num_threads,
    threads_in_use,
)
from rt.kernels.records import RECORD_DTYPE, make_record, operand_places, read_fields

__all__ = [
    "HAVE_ONEDNN",
    "SPLIT_FAST",
    "Program",
    "RECORD_DTYPE",
    "attention_scratch_floats",
    "conv_winograd_scratch_bytes",
    "cpu_features",
    "get_num_threads",
    "make_record",
    "qmatmul_scratch_bytes",
    "qweight_bytes",
    "operand_places",
    "read_fields",
    "record_layout",
    "set_num_threads",
    "threads_in_use",
]
