"""A loaded file is proved, not trusted: each storage is what the ops make it (dialects/planned_proof.py),
every size is bounded by what the program needs, and anything else is refused with ModelFileError
naming it. Each case here is a file with valid checksums that loaded and then gave wrong answers,
uninitialised memory or a huge allocation."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rt
from model_files import pack_file, split_file


class Block(nn.Module):
    """Views (reshape, permute, slices), attention with scratch, two inputs, one output."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(16, 48)
        self.o = nn.Linear(16, 16)

    def forward(self, x, y):
        q, k, v = self.qkv(x).reshape(1, 8, 3, 2, 8).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(a.transpose(1, 2).reshape(1, 8, 16)) - y


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    torch.manual_seed(0)
    args = (torch.randn(1, 8, 16), torch.randn(1, 8, 16))
    # two threads' attention scratch (34816 bytes), the figure the cases below edit
    compiled = rt.compile(Block().eval(), args, target=dataclasses.replace(rt.Target.host(), threads=2))
    path = tmp_path_factory.mktemp("proofs") / "block.rt"
    compiled.save(str(path))
    return path.read_bytes(), [a.numpy() for a in args], compiled.ir("planned")


def _storage(text: str, value: str) -> str:
    """The storage text of %value's line in the planned IR ('arena[34816, 1536]', 'view(%x, 0)', ...)."""
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"%{value} = "))
    return line.rsplit(" @ ", 1)[1]


def _edit(text: str, value: str, new_storage: str) -> str:
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"%{value} = "))
    return text.replace(line, line.rsplit(" @ ", 1)[0] + " @ " + new_storage)


def _arena(text: str, value: str) -> tuple[int, int]:
    off, size = _storage(text, value)[len("arena["):-1].split(", ")
    return int(off), int(size)


def _load(block, tmp_path, change):
    data, _, _ = block
    prefix, header, weights = split_file(data)
    change(header)
    bad = tmp_path / "bad.rt"
    bad.write_bytes(pack_file(prefix, header, weights))
    return rt.load(str(bad))


def _planned(change_text):
    def change(header):
        header["ir"]["planned"] = change_text(header["ir"]["planned"])
    return change


def test_the_saved_block_loads_and_runs(block, tmp_path):
    data, args, _ = block
    model = _load(block, tmp_path, lambda h: None)
    assert np.allclose(model(*args), model.run_op_by_op(*args, kernels="numpy"), atol=1e-5)


def _output_in_a_dead_arena_slice(t):
    off, _ = _arena(t, "linear_2")          # dead once attention has run
    return _edit(t, "sub", f"arena[{off}, 512]")


CASES = [
    ("output never written", _planned(_output_in_a_dead_arena_slice), r"output #0 \(%sub\) must be computed into output\[0\]"),
    ("view of another buffer", _planned(lambda t: _edit(t, "linear_1", "view(%linear_0, 0)")),
     r"planned.reshape \(%linear_1\): stored as view\(%linear_0, 0, None\); its op makes view\(%linear_1_1, 0"),
    ("view at another offset", _planned(lambda t: _edit(t, "getitem_1", "view(%linear_2, 128, [16, 8, 48, 1])")),
     r"%getitem_1\): stored as view\(%linear_2, 128"),
    ("view with other strides", _planned(lambda t: _edit(t, "getitem", "view(%linear_2, 0, [16, 8, 16, 1])")),
     r"%getitem\): stored as view"),
    ("inputs swapped", _planned(lambda t: t.replace("@ input[0], %y", "@ input[1], %y").replace(
        "%y: tensor<1x8x16xf32> @ input[1]", "%y: tensor<1x8x16xf32> @ input[0]", 1)),
     r"input %x \(#0\) must be stored in input\[0\]"),
    ("scratch smaller than the kernel's", _planned(lambda t: t.replace("scratch = [0, 34816, 2]", "scratch = [0, 512, 2]")),
     r"scratch of 512 bytes; its kernel needs 34816 for 2 threads"),
    ("scratch for a million threads", _planned(lambda t: t.replace("scratch = [0, 34816, 2]", "scratch = [0, 34816, 1000000]")),
     r"scratch for 1000000 threads"),
    ("constant of another dtype", lambda h: next(e for e in h["constants"] if e["name"] == "o.bias").update(dtype="i32"),
     r"const \(%o_bias\): constant int32\[16\] does not match tensor<16xf32>"),
    ("huge arena slice", lambda h: (_planned(lambda t: _edit(t, "linear_1_1", "arena[0, 536870912]"))(h),
                                   h["plan"].update(arena_bytes=536870912 + 2 ** 16)),
     r"arena slice of 536870912 bytes for a tensor<8x16xf32>"),
    ("arena far beyond the buffers", lambda h: (_planned(lambda t: _edit(t, "linear_1_1", "arena[1099511627776, 512]"))(h),
                                                h["plan"].update(arena_bytes=2 ** 40 + 2 ** 16)),
     r"an arena of 1099511693312 bytes .* whose buffers need \d+ bytes without any reuse"),
    ("view strides not a list", _planned(lambda t: _edit(t, "getitem", "view(%linear_2, 0, 192)")),
     r"corrupt IR: line \d+: view strides must be a list of integers, got 192"),   # was a bare TypeError
    ("negative arena offset", _planned(lambda t: _edit(t, "linear_1_1", "arena[-64, 512]")),
     r"expected a count \(an integer >= 0\), got -64"),
    ("fractional arena size", _planned(lambda t: _edit(t, "linear_1_1", "arena[0, 512.0]")),
     r"expected a count \(an integer >= 0\), got 512.0"),
    ("an unread constant", lambda h: h["constants"].append(dict(h["constants"][0], name="extra")),
     r"the constants table lists 'extra', which the planned program never reads"),
]


@pytest.mark.parametrize("what, change, message", CASES, ids=[c[0] for c in CASES])
def test_a_file_that_does_not_prove_is_refused(block, tmp_path, what, change, message):
    with pytest.raises(rt.ModelFileError, match=message):
        _load(block, tmp_path, change)
