"""IR core: the text form round-trips, the verifier names the op that breaks a rule."""
import numpy as np
import pytest

from rt.dialects import parse_module, print_module, verify_module
from rt.dialects.ir import TensorType
from rt.errors import IRParseError, VerificationError

MLP = """module @mlp(%x: tensor<32x512xf32>) -> (tensor<32x512xf32>) {
  %w0 = const "0.weight" : tensor<512x512xf32>
  %b0 = const "0.bias" : tensor<512xf32>
  %0 = fused.matmul %x, %w0, %b0 {act = "relu", alpha = 0.125, transpose_b = true} : tensor<32x512xf32>
  %1 = fused.tanh %0 : tensor<32x512xf32>
  %2 = fused.add %1, %x : tensor<32x512xf32>
  return %2
}
"""


def test_round_trip_is_exact():
    m = parse_module(MLP)
    assert print_module(m) == MLP
    verify_module(m, "fused")


def test_round_trip_attribute_kinds_and_storage():
    text = """module @m(%x: tensor<2x3xf32>, %y: tensor<i64>) -> (tensor<2x3xf32>) {
  %0 = planned.matmul %x, %x, none, none {act = "none", alpha = 1e-05, transpose_a = false, transpose_b = true} : tensor<2x2xf32> @ arena[0, 16]
  %1 = planned.copy %x : tensor<2x3xf32> @ output[0]
  return %1
}
"""
    assert print_module(parse_module(text)) == text


def test_tensor_type_text():
    assert str(TensorType((1, 64, 768), "f32")) == "tensor<1x64x768xf32>"
    assert str(TensorType((), "i64")) == "tensor<i64>"


def test_parse_error_names_the_line():
    with pytest.raises(IRParseError, match="line 2"):
        parse_module("module @m(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %0 = fused.relu %nope : tensor<2xf32>\n  return %0\n}")


def _with(line: str, ret: str = "%0") -> str:
    return ("module @m(%x: tensor<4x4xf32>) -> (tensor<4x4xf32>) {\n"
            f"  {line}\n  return {ret}\n}}\n")


def test_verifier_rejects_use_before_definition():
    m = parse_module(_with("%0 = fused.relu %x : tensor<4x4xf32>"))
    op = m.ops[0]
    later = parse_module(_with("%1 = fused.tanh %x : tensor<4x4xf32>", "%1")).ops[0].result
    op.operands = [later]
    with pytest.raises(VerificationError, match=r"fused.relu .*used before it is defined"):
        verify_module(m, "fused")


def test_verifier_rejects_type_mismatch():
    m = parse_module(_with("%0 = fused.matmul %x, %x : tensor<4x5xf32>").replace(
        "-> (tensor<4x4xf32>)", "-> (tensor<4x5xf32>)"))
    with pytest.raises(VerificationError, match=r"fused.matmul .*does not match inferred tensor<4x4xf32>"):
        verify_module(m, "fused")


def test_verifier_rejects_foreign_dialect_op():
    m = parse_module(_with("%0 = torch.relu %x : tensor<4x4xf32>"))
    verify_module(m, "torch")
    with pytest.raises(VerificationError, match=r"torch.relu .*not allowed in the fused dialect"):
        verify_module(m, "fused")


def test_verifier_rejects_unknown_attribute_and_bad_type():
    m = parse_module(_with('%0 = fused.matmul %x, %x {act = "swish"} : tensor<4x4xf32>'))
    with pytest.raises(VerificationError, match="fused.matmul .*unknown act"):
        verify_module(m, "fused")
    m = parse_module(_with('%0 = fused.matmul %x, %x {transpose_a = 3} : tensor<4x4xf32>'))
    with pytest.raises(VerificationError, match="transpose_a"):
        verify_module(m, "fused")


def test_constant_shape_and_dtype_checked_against_data():
    text = _with('%0 = const "w" : tensor<4x4xf32>')
    verify_module(parse_module(text, {"w": np.zeros((4, 4), np.float32)}), "fused")
    with pytest.raises(VerificationError, match=r"constant float32\[4, 3\] does not match"):
        verify_module(parse_module(text, {"w": np.zeros((4, 3), np.float32)}), "fused")
    with pytest.raises(VerificationError, match=r"constant int32\[4, 4\] does not match"):
        verify_module(parse_module(text, {"w": np.zeros((4, 4), np.int32)}), "fused")


def test_one_naming_rule_and_builder():
    from rt.dialects.builder import Builder
    from rt.dialects.ir import unique_name
    taken = {"linear", "linear_1"}
    assert [unique_name(h, taken) for h in ("x", "linear", "linear", "w.T")] == ["x", "linear_0", "linear_2", "w_T"]
    m = parse_module(MLP, {"0.weight": np.ones((512, 512), np.float32), "0.bias": np.zeros(512, np.float32)})
    b = Builder(m, hint="y")
    r = b.reshape(m.inputs[0], [32, 8, 64])
    assert b.reshape(r, [32, 8, 64]) is r and b.cast(r, "f32") is r
    mm = b.op("fused.matmul", [m.inputs[0], m.inputs[0], None, None], {"alpha": 1.0, "transpose_b": True})
    assert mm.producer.attrs == {"transpose_b": True} and len(mm.producer.operands) == 2   # defaults dropped
    assert [v.name for v in (r, mm, b.scalar(2.0))] == ["y", "y_0", "scalar"]
    assert b.rename(mm, "out").name == "out" and "y_0" not in b.names


def test_normalize_dim_reads_dims_like_torch():
    from rt.dialects.registry import normalize_dim
    assert [normalize_dim(d, 3) for d in (0, 2, -1, -3)] == [0, 2, 2, 0]
    assert normalize_dim(-1, 0) == 0                      # a 0-d tensor takes dim 0 or -1
    for bad in (3, -4):
        with pytest.raises(ValueError, match="out of range"):
            normalize_dim(bad, 3)
