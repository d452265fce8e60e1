"""The pass manager (timings, verification, print-ir-after-all) and the rewrite engine's rules."""
import io

import numpy as np
import pytest

from rt.dialects import parse_module, print_module
from rt.errors import LoweringError, VerificationError
from rt.lowering import PIPELINES, PassManager, register_pass, to_fused
from rt.lowering.rewrite import N, Pattern, Scalar, apply_patterns

SRC = """module @m(%x: tensor<4x8xf32>) -> (tensor<4x4xf32>) {
  %w = const "w" : tensor<4x8xf32>
  %b = const "b" : tensor<4xf32>
  %y = torch.linear %x, %w, %b : tensor<4x4xf32>
  %r = torch.relu %y : tensor<4x4xf32>
  return %r
}
"""
CONSTS = {"w": np.ones((4, 8), np.float32), "b": np.zeros(4, np.float32)}


def test_pipeline_times_each_pass_and_lowers():
    pm = PassManager.pipeline("to-fused", verify=True, print_ir_after_all=False)
    out = pm.run(parse_module(SRC, CONSTS))
    assert [n for n, _, _ in pm.timings] == PIPELINES["to-fused"]
    assert all(t >= 0 for _, t, _ in pm.timings)
    assert [op.name for op in out.ops if op.name != "const"] == ["fused.matmul"]
    assert out.ops[-1].attrs == {"act": "relu", "transpose_b": True}


def test_print_ir_after_all_flag():
    buf = io.StringIO()
    PassManager.of(["legalize-torch-to-fused", "fuse-matmul-epilogues"], print_ir_after_all=True,
                   stream=buf).run(parse_module(SRC, CONSTS))
    text = buf.getvalue()
    assert "IR Dump After legalize-torch-to-fused" in text and "IR Dump After fuse-matmul-epilogues" in text
    assert "fused.relu" in text and 'act = "relu"' in text


def test_print_ir_after_all_env(monkeypatch, capsys):
    monkeypatch.setenv("RT_PRINT_IR_AFTER_ALL", "1")
    to_fused(parse_module(SRC, CONSTS))
    err = capsys.readouterr().err
    assert err.count("IR Dump After") == len(PIPELINES["to-fused"])


def test_to_fused_leaves_its_input_alone():
    m = parse_module(SRC, CONSTS)
    before = print_module(m)
    to_fused(m, verify=True)
    assert print_module(m) == before


def test_verification_names_the_pass():
    @register_pass("test-break-types", dialect="fused")
    def _break(module):
        module.ops[-1].result.type = module.ops[-1].result.type.with_shape((1,))
    with pytest.raises(VerificationError, match="after pass test-break-types"):
        PassManager.of(["legalize-torch-to-fused", "test-break-types"], verify=True).run(parse_module(SRC, CONSTS))


def test_unknown_pass_and_unsupported_op():
    with pytest.raises(LoweringError, match="unknown pass"):
        PassManager.of(["no-such-pass"])
    src = SRC.replace("torch.relu %y", "torch.frexp.Tensor %y")      # no fused lowering (yet)
    with pytest.raises(LoweringError, match="torch.frexp"):
        to_fused(parse_module(src, CONSTS))


SCALE = """module @m(%x: tensor<4xf32>, %z: tensor<4xf32>) -> (tensor<4xf32>) {
  %h = const "h" : tensor<f32>
  %a = fused.mul %h, %x : tensor<4xf32>
  %b = fused.add %a, %x : tensor<4xf32>
  %c = fused.mul %a, %z : tensor<4xf32>
  return %b
}
"""


def _pattern(value):
    # (x * 0.5) + x -> x * 1.5 ; x appears twice, 0.5 within tolerance, mul is commutative
    return Pattern("test", "add", {"mul": N("fused.mul", ["$x", Scalar(value, rel=1e-3)]),
                                   "add": N("fused.add", ["mul", "$x"])},
                   lambda m, b: b.op("fused.mul", [m["$x"], b.scalar(1.5)]))


def test_engine_commutative_tolerance_and_shared_value():
    m = parse_module(SCALE.replace("  %c = fused.mul %a, %z : tensor<4xf32>\n", ""), {"h": np.float32(0.5)})
    assert apply_patterns(m, [_pattern(0.50001)]) == 1
    assert [op.name for op in m.ops if op.name != "const"] == ["fused.mul"]


def test_engine_rejects_outside_users_and_wrong_scalars():
    m = parse_module(SCALE, {"h": np.float32(0.5)})
    assert apply_patterns(m, [_pattern(0.5)]) == 0          # %a is also used by %c
    m = parse_module(SCALE.replace("  %c = fused.mul %a, %z : tensor<4xf32>\n", ""), {"h": np.float32(0.6)})
    assert apply_patterns(m, [_pattern(0.5)]) == 0          # not the constant the pattern wants
