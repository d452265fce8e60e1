"""Planner: IR text in -> planned IR text out, and properties of plans of random DAGs."""
import numpy as np
from hypothesis import given, settings, strategies as st

from rt.dialects import parse_module, print_module, verify_module
from rt.interpreter import run_reference
from rt.lowering.plan import to_planned


def plan(text: str, constants=None):
    m = parse_module(text, constants)
    verify_module(m, "fused")
    p = to_planned(m)
    verify_module(p, "planned")
    return p


def test_elementwise_writes_into_its_dying_operand():
    p = plan("""module @m(%x: tensor<16x16xf32>) -> (tensor<16x16xf32>) {
  %0 = fused.tanh %x : tensor<16x16xf32>
  %1 = fused.relu %0 : tensor<16x16xf32>
  %2 = fused.sigmoid %1 : tensor<16x16xf32>
  %3 = fused.tanh %2 : tensor<16x16xf32>
  return %3
}
""")
    assert print_module(p) == """module @m(%x: tensor<16x16xf32> @ input[0]) -> (tensor<16x16xf32>) {
  %0 = planned.tanh %x : tensor<16x16xf32> @ arena[0, 1024]
  %1 = planned.relu %0 : tensor<16x16xf32> @ arena[0, 1024]
  %2 = planned.sigmoid %1 : tensor<16x16xf32> @ arena[0, 1024]
  %3 = planned.tanh %2 : tensor<16x16xf32> @ output[0]
  return %3
}
"""
    assert p.meta["plan"] == {"arena_bytes": 1024, "lower_bound_bytes": 1024, "no_reuse_bytes": 3072}


def test_operand_used_later_is_not_overwritten():
    p = plan("""module @m(%x: tensor<16x16xf32>) -> (tensor<16x16xf32>) {
  %0 = fused.tanh %x : tensor<16x16xf32>
  %1 = fused.relu %0 : tensor<16x16xf32>
  %2 = fused.add %1, %0 : tensor<16x16xf32>
  %3 = fused.relu %2 : tensor<16x16xf32>
  return %3
}
""")
    text = print_module(p)
    # %1 must not take %0's buffer (%0 is read again by %2); %2 may take either, since both die there
    assert "%0 = planned.tanh %x : tensor<16x16xf32> @ arena[0, 1024]" in text
    assert "%1 = planned.relu %0 : tensor<16x16xf32> @ arena[1024, 1024]" in text
    assert "%2 = planned.add %1, %0 : tensor<16x16xf32> @ arena[1024, 1024]" in text


def test_graph_input_is_never_written():
    p = plan("""module @m(%x: tensor<8xf32>) -> (tensor<8xf32>) {
  %0 = fused.relu %x : tensor<8xf32>
  %1 = fused.tanh %0 : tensor<8xf32>
  return %1
}
""")
    assert p.ops[0].result.storage.kind == "arena"


def test_output_that_is_an_input_or_listed_twice_gets_a_copy():
    p = plan("""module @m(%x: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {
  %0 = fused.relu %x : tensor<8xf32>
  return %x, %0, %0
}
""")
    assert [v.storage.kind for v in p.outputs] == ["output"] * 3
    assert [op.name for op in p.ops].count("planned.copy") == 2


def _random_graph(draw_ops, sizes):
    """An elementwise DAG over inputs of one shape: each op reads one or two earlier values."""
    lines = []
    names = ["%a", "%b"]
    unary = ["relu", "tanh", "sigmoid"]
    binary = ["add", "sub", "mul"]
    shape = "x".join(str(s) for s in sizes) + "xf32"
    for i, (kind, p, q) in enumerate(draw_ops):
        x, y = names[p % len(names)], names[q % len(names)]
        if kind < 3:
            lines.append(f"  %{i} = fused.{unary[kind]} {x} : tensor<{shape}>")
        else:
            lines.append(f"  %{i} = fused.{binary[kind - 3]} {x}, {y} : tensor<{shape}>")
        names.append(f"%{i}")
    outs = names[-2:]
    head = f"module @g(%a: tensor<{shape}>, %b: tensor<{shape}>) -> (tensor<{shape}>, tensor<{shape}>) {{"
    return "\n".join([head] + lines + ["  return " + ", ".join(outs), "}"]) + "\n"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50), st.integers(0, 50)), min_size=1, max_size=25),
       st.lists(st.integers(1, 9), min_size=1, max_size=3))
def test_random_dag_plans_verify_and_compute_the_same(ops, sizes):
    text = _random_graph(ops, sizes)
    m = parse_module(text)
    p = to_planned(m)
    verify_module(p, "planned")
    plan_facts = p.meta["plan"]
    assert plan_facts["arena_bytes"] >= plan_facts["lower_bound_bytes"]
    assert plan_facts["no_reuse_bytes"] >= plan_facts["arena_bytes"]
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(sizes).astype(np.float32) for _ in range(2)]
    want = run_reference(m, xs)
    got = run_reference(p, xs)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
