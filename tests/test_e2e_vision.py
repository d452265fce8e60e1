"""Vision models end to end against PyTorch (max abs error <= 1e-4 of the output's scale) through both
executors: HF ResNet, ViT, ConvNeXt, MobileNetV2, EfficientNet and Whisper's encoder (its conv1d front
end) (small configs, random weights), the hand-written
ConvNet and UNet (transposed convolution, concatenated skips), with what the lowering must make of them
(batch norms folded, convolutions in one NHWC chain, an arena at its lower bound)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

import rt
from rt.dialects.ir import padded
from rt.dialects.kernel_facts import winograd_tile
from rt.kernels import _runtime
from rt.testing import models

pytestmark = pytest.mark.skipif(not _runtime.HAVE_ONEDNN, reason="convolutions run on oneDNN")

CASES = {
    "resnet": lambda: models.resnet(),
    "resnet_b2_base": lambda: models.resnet(batch=2, classes=None, size=48),
    # ResNet-18-like: 3x3 convolutions wide enough for Winograd, residual and relu in their epilogue
    "resnet_basic_b2": lambda: models.resnet(batch=2, size=64, layer_type="basic", embedding_size=64,
                                             hidden_sizes=[64, 128], depths=[2, 2]),
    "vit": lambda: models.vit(),
    "beit": lambda: models.beit(),
    "convnext": lambda: models.convnext(),
    "mobilenet_v2": lambda: models.mobilenet_v2(),
    "efficientnet": lambda: models.efficientnet(),
    "whisper_encoder": lambda: models.whisper_encoder(),
    "convnet": lambda: models.convnet(),
    "unet": lambda: models.unet(),
}
# Layout conversions left (planned copies): the input's, and the output's when it is an image.
COPIES = {"resnet_b2_base": 2, "unet": 2}


def rel_err(got, want) -> float:
    return float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    model, args = CASES[request.param]()
    with torch.no_grad():
        want = model(*args).numpy()
    return request.param, args, want, rt.compile(model, args)


def test_compiled_loop_matches_torch(case):
    name, args, want, compiled = case
    assert rel_err(compiled(*args), want) <= 1e-4


def test_op_by_op_executor_matches_torch(case):
    name, args, want, compiled = case
    assert rel_err(compiled.run_op_by_op(*args), want) <= 1e-4


def test_arena_at_its_lower_bound(case):
    assert case[3].plan_report()["ratio"] <= 1.05


def _ops(compiled, stage="planned") -> Counter:
    return Counter(op.name.split(".", 1)[1] for op in compiled.stages[stage].ops if op.name != "const")


def test_convolutions_run_in_nhwc_with_their_epilogues(case):
    """Every convolution is NHWC; batch norms and activations are folded into them; the layout
    conversions are only at the chains' ends (COPIES)."""
    name, _, _, compiled = case
    convs = [op for op in compiled.stages["planned"].ops if "conv" in op.name]
    assert convs and all(op.attrs.get("layout") == "nhwc" for op in convs)
    ops = _ops(compiled)
    if name.startswith(("resnet", "mobilenet", "unet")):      # nothing but convolutions, pools and the head
        assert not {"mul", "add", "relu", "clamp", "pad"} & set(ops), ops
    assert ops["copy"] == COPIES.get(name, 1), ops


def test_wide_3x3_convolutions_run_winograd(case):
    """Every 3x3 stride-1 conv of the wide ResNet runs Winograd (F(4x4) at 16x16, F(2x2) at 8x8), residual
    epilogues too; the others direct."""
    name, _, _, compiled = case
    if name != "resnet_basic_b2":
        pytest.skip("the wide ResNet only")
    convs = [op for op in compiled.stages["planned"].ops if op.name == "planned.conv2d"]
    wino = [op for op in convs if op.attrs.get("scratch")]
    want = [op for op in convs if op.operands[1].type.shape[2:] == (3, 3) and op.attrs.get("stride", [1, 1]) == [1, 1]]
    assert wino == want and len(wino) == 7 and any(padded(op.operands, 4)[3] is not None for op in wino)
    assert sorted(winograd_tile(op) for op in wino) == [2, 2, 2, 4, 4, 4, 4]
    summary = compiled.kernel_summary()          # what a user sees (`rt inspect`)
    assert "CONV[winograd4x4]×4" in summary and "CONV[winograd2x2]×3" in summary and "CONV[direct]×3" in summary


def test_vit_patch_embedding_feeds_the_tokens_without_a_copy(case):
    name, _, _, compiled = case
    if name != "vit":
        pytest.skip("ViT only")
    planned = compiled.stages["planned"]
    conv = next(op for op in planned.ops if op.name == "planned.conv2d")
    assert conv.attrs["stride"] == [8, 8] and conv.operands[1].type.shape[2:] == (8, 8)
    copies = [op for op in planned.ops if op.name == "planned.copy"]
    assert len(copies) == 1 and copies[0].operands[0].producer.operands[0] in planned.inputs


def test_convnext_layer_norm_over_channels_reads_nhwc_in_place(case):
    """ConvNeXt's channels-first layer norms and its blocks' permutes cancel against the NHWC convolutions."""
    name, _, _, compiled = case
    if name != "convnext":
        pytest.skip("ConvNeXt only")
    ops = _ops(compiled)
    assert ops["layer_norm"] >= 5 and ops["copy"] == 1


def test_conv1d_and_unbatched_input():
    """conv1d runs as a conv2d over a height of 1 (e.g. an audio front end); a 3-d input to a conv2d is one image."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3, stride=2, padding=1), torch.nn.GELU(),
                              torch.nn.Conv1d(8, 8, 3, padding=2, dilation=2)).eval()
    x = torch.randn(2, 4, 33)
    assert rel_err(rt.compile(net, (x,))(x), net(x).detach().numpy()) <= 1e-4
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    x = torch.randn(3, 9, 9)
    assert rel_err(rt.compile(conv, (x,))(x), conv(x).detach().numpy()) <= 1e-4


def test_saved_and_loaded(case, tmp_path):
    """A saved vision model loads and runs without torch's help (its convolutions prepared again)."""
    name, args, want, compiled = case
    if name not in ("resnet_basic_b2", "unet"):
        pytest.skip("one CNN of each kind is enough")
    path = tmp_path / "m.rt"
    compiled.save(str(path))
    assert rel_err(rt.load(str(path))(*[a.numpy() for a in args]), want) <= 1e-4
