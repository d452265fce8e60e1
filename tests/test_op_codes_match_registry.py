"""One source of op codes: every C op a planned op runs as exists in the C table, and every C kernel
is reachable from some planned op."""
from rt.dialects.registry import REGISTRY
from rt.kernels._runtime import op_codes


def test_planned_ops_name_existing_c_ops():
    codes = op_codes()
    used = {d.extra["c_op"] for d in REGISTRY.dialect_ops("planned") if "c_op" in d.extra}
    assert used <= set(codes), f"planned ops name C ops that do not exist: {used - set(codes)}"


def test_every_c_kernel_is_reachable_from_a_planned_op():
    used = {d.extra["c_op"] for d in REGISTRY.dialect_ops("planned") if "c_op" in d.extra}
    assert set(op_codes()) <= used, f"C kernels no planned op runs: {set(op_codes()) - used}"
