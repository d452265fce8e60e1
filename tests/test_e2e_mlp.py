"""Issue 3: MLPs end to end through all three dialects, both executors, against PyTorch."""
import numpy as np
import pytest
import torch
import torch.nn as nn

import rt
from rt.errors import InputError


class ResidualMLP(nn.Module):
    """4 layers, GELU/Tanh/Sigmoid, and a residual add."""

    def __init__(self, d=256):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4 = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        h = torch.nn.functional.gelu(self.l1(x))
        h = torch.tanh(self.l2(h)) + x
        h = torch.sigmoid(self.l3(h))
        return self.l4(h)


CASES = {
    "linear_relu_linear_512_b32": (lambda: nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512)),
                                   (32, 512)),
    "residual_gelu_tanh_sigmoid": (lambda: ResidualMLP(256), (8, 256)),
    "tiny_64_b1": (lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64)), (1, 64)),
}


def rel_err(got, want) -> float:
    got, want = np.asarray(got), np.asarray(want)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    make, shape = CASES[request.param]
    model = make().eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        want = model(x).numpy()
    return model, x, want, rt.compile(model, (x,), verify=True)


def test_compiled_loop_matches_torch(case):
    model, x, want, compiled = case
    assert rel_err(compiled(x.numpy()), want) <= 1e-5


def test_op_by_op_c_kernels_match_torch(case):
    model, x, want, compiled = case
    timings = []
    assert rel_err(compiled.run_op_by_op(x.numpy(), kernels="c", timings=timings), want) <= 1e-5
    assert len(timings) == sum(1 for op in compiled.planned.ops if op.name != "const")


def test_op_by_op_numpy_reference_matches_torch(case):
    model, x, want, compiled = case
    assert rel_err(compiled.run_op_by_op(x.numpy(), kernels="numpy"), want) <= 1e-5


def test_torch_in_torch_out(case):
    model, x, want, compiled = case
    out = compiled(x)
    assert isinstance(out, torch.Tensor)
    assert rel_err(out.numpy(), want) <= 1e-5


@pytest.mark.parametrize("kind", ["grad", "strided", "mixed", "keyword"])
def test_tensors_that_need_converting_take_the_checked_path(kind):
    """Exact CPU tensors run straight from FastCallable; the rest (a tensor needing grad, a strided one,
    numpy beside torch, keywords) go through CompiledModel._call and give the same answer."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8)).eval()
    a, b = torch.randn(2, 8), torch.randn(2, 8)
    compiled = rt.compile(_Two(model), (a, b))
    want = (model(a) + b).detach().numpy()
    if kind == "grad":
        out = compiled(a.clone().requires_grad_(), b)
    elif kind == "strided":
        out = compiled(torch.randn(8, 2).t().copy_(a), b)
    elif kind == "mixed":
        out = compiled(a.numpy(), b)
    else:
        out = compiled(x=a, y=b)
    assert isinstance(out, torch.Tensor)
    assert rel_err(out.numpy(), want) <= 1e-5


class _Two(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x, y):
        return self.inner(x) + y


def test_every_stage_is_its_own_dialect(case):
    compiled = case[3]
    for stage in ("torch", "fused", "planned"):
        ops = {op.name.split(".")[0] for op in compiled.stages[stage].ops} - {"const"}
        assert ops == {stage}
    plan = compiled.plan_report()
    assert plan["arena_bytes"] >= plan["lower_bound_bytes"]


def test_bias_relu_fused_into_matmul():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)).eval()
    compiled = rt.compile(model, (torch.randn(2, 16),))
    fused = compiled.stages["fused"]
    assert [op.name for op in fused.ops if op.name != "const"] == ["fused.matmul", "fused.matmul"]
    assert fused.ops[-2].attrs.get("act") == "relu" or any(op.attrs.get("act") == "relu" for op in fused.ops)


def test_wrong_inputs_are_named():
    model = nn.Sequential(nn.Linear(8, 8)).eval()
    compiled = rt.compile(model, (torch.randn(2, 8),))
    name = compiled.input_names[0]
    with pytest.raises(InputError, match=rf"input '{name}' has shape \[3, 8\], expected \[2, 8\]"):
        compiled(np.zeros((3, 8), np.float32))
    with pytest.raises(InputError, match=rf"input '{name}' has dtype float64, expected float32"):
        compiled(np.zeros((2, 8), np.float64))
    with pytest.raises(InputError, match="takes 1 inputs"):
        compiled(np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32))
    with pytest.raises(InputError, match="missing input"):
        compiled()
    with pytest.raises(InputError, match=r"dtype >f4, expected float32"):      # never misread as native
        compiled(np.zeros((2, 8), ">f4"))


def test_one_example_tensor_needs_no_tuple():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.randn(1, 4)
    compiled = rt.compile(model, x)
    assert compiled(x.numpy()).shape == (1, 3)
    np.testing.assert_allclose(compiled(x.numpy()), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_profile_needs_at_least_one_run():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    compiled = rt.compile(model, (torch.randn(1, 4),))
    with pytest.raises(ValueError, match="runs must be at least 1"):
        compiled.profile(np.zeros((1, 4), np.float32), runs=0)


def test_same_size_wrong_shape_is_refused_and_strided_input_still_works():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4)).eval()
    x = torch.randn(2, 8)
    compiled = rt.compile(model, (x,))
    name = compiled.input_names[0]
    with pytest.raises(InputError, match=rf"input '{name}' has shape \[8, 2\], expected \[2, 8\]"):
        compiled(np.zeros((8, 2), np.float32))          # same bytes, wrong shape: never run silently
    strided = np.asfortranarray(x.numpy())               # not C-contiguous: copied, then run
    with torch.no_grad():
        want = model(x).numpy()
    assert rel_err(compiled(strided), want) <= 1e-5
