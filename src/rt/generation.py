"""Text generation from a compiled causal LM: a prefill and a decode program over one KV cache.

`rt.compile_generator` derives both programs from the ordinary export (rt.lowering.kv_cache): prefill
runs the prompt (any length up to the context bound) and writes every layer's K and V into the cache;
decode runs one token at position P, writes its row and attends over rows [0, P]. Both read the same
weights. The cache is the programs' persistent state: one buffer per layer's K and V, allocated per
generation (so generations in several threads are independent) and written in place; nothing is
concatenated or copied per step. Nothing here imports torch.
"""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from .dialects.ir import Module
from .errors import InputError, UsageError
from .lowering.kv_cache import PAST, sequence_symbol
from .target import Target
from .weight_formats import WeightChoice
from .api import RunsOnTarget, summarize_kernels
from .dialects.text import print_module

PROGRAMS = ("prefill", "decode")
BATCH = "decode_batch"        # the optional program decoding several sequences per step


def _check_program(name: str, planned: Module) -> None:
    if len(planned.inputs) != 1 or planned.inputs[0].type.dtype not in ("i64", "i32") \
            or planned.inputs[0].type.rank != 2 or len(planned.outputs) != 1 or planned.outputs[0].type.rank != 3:
        raise UsageError(f"the {name} program must take token ids [1, n] and return logits [1, n, vocab]")


class Generator(RunsOnTarget):
    """A causal LM compiled for generation: `generate(prompt_ids, max_new_tokens)` returns the new
    token ids, `stream(...)` yields them as they come; `last_timings` holds the last generation's
    prefill ms, each decode step's ms and decode tokens/s. Greedy by default; temperature, top-k and
    top-p sample with a seed. Saved with `save`, loaded with `rt.load` (no torch needed)."""

    def __init__(self, stages: dict[str, Module], weights=None, run_target: Target | None = None):
        from .kernels.executor import CompiledProgram
        for name in PROGRAMS:
            if name not in stages:
                raise UsageError(f"a generator needs a {name} program; it has {', '.join(stages)}")
            _check_program(name, stages[name])
        self.stages = stages
        self.target: Target | None = stages["decode"].meta.get("target")
        self.run_target = run_target or Target.host()
        self._weights = weights
        # the programs read one copy of the weights, each in place (no packed or split copies)
        self._prefill = CompiledProgram(stages["prefill"], self.run_target, weights_in_place=True)
        self._decode = CompiledProgram(stages["decode"], self.run_target, weights_in_place=True)
        self.cache_types = self._prefill.layout.state_types
        if self._decode.layout.state_types != self.cache_types:
            raise UsageError("the prefill and decode programs keep different KV caches")
        self._batch = CompiledProgram(stages[BATCH], self.run_target, weights_in_place=True) if BATCH in stages else None
        self.max_batch = int(stages[BATCH].inputs[0].type.shape[0]) if self._batch else 1
        if self._batch and [t.shape[1:] for t in self._batch.layout.state_types] != [t.shape[1:] for t in self.cache_types]:
            raise UsageError("the batched decode program keeps a KV cache of another shape")
        _, _, self.context = sequence_symbol(stages["prefill"])
        self.vocab_size = int(stages["decode"].outputs[0].type.shape[-1])
        self.id_dtype = stages["decode"].inputs[0].type.np_dtype
        self.last_timings: dict[str, float] = {}

    # ---- facts ----------------------------------------------------------------------------------
    @property
    def programs(self) -> dict:
        """{name: CompiledProgram}: prefill, decode and (with max_batch > 1) decode_batch."""
        found = {"prefill": self._prefill, "decode": self._decode}
        return found | ({BATCH: self._batch} if self._batch else {})

    @property
    def cache_bytes(self) -> int:
        """Bytes of one generation's KV cache (every layer's K and V, at the context bound)."""
        return sum(t.nbytes for t in self.cache_types)

    def plan_report(self) -> dict:
        """Each program's arena plan, and the KV cache: its bytes and bytes per token."""
        report = {name: dict(self.stages[name].meta["plan"]) for name in self.programs}
        report["kv_cache"] = {"bytes": self.cache_bytes, "bytes_per_token": self.cache_bytes // self.context,
                              "context": self.context, "buffers": len(self.cache_types)}
        return report

    def plan_summary(self) -> str:
        mib = lambda n: f"{n / 2**20:.2f} MiB"   # noqa: E731
        r = self.plan_report()
        kv = r["kv_cache"]
        return (f"prefill arena {mib(r['prefill']['arena_bytes'])}, decode arena {mib(r['decode']['arena_bytes'])}, "
                f"KV cache {mib(kv['bytes'])} ({kv['bytes_per_token'] / 1024:.1f} KiB per token, "
                f"context {kv['context']})")

    def kernel_plan(self, program: str = "decode") -> list[dict]:
        """Per C op of the prefill or decode program as it runs here (CompiledModel.kernel_plan)."""
        programs = self.programs
        if program not in programs:
            raise UsageError(f"program is one of {tuple(programs)}, got {program!r}")
        return programs[program].kernel_plan()

    def kernel_summary(self, program: str = "decode") -> str:
        return summarize_kernels(self.kernel_plan(program))

    def ir(self, stage: str = "decode") -> str:
        """A stage's IR text: "torch" and "fused" (the model as exported), "prefill", "decode"."""
        if stage not in self.stages:
            raise UsageError(f"unknown stage {stage!r}; stages: {', '.join(self.stages)}")
        return print_module(self.stages[stage])

    # ---- generating -----------------------------------------------------------------------------
    def generate(self, prompt_ids, max_new_tokens: int, **sampling) -> list[int]:
        """The new token ids (stopping early after a stop token, which is included)."""
        return list(self.stream(prompt_ids, max_new_tokens, **sampling))

    def stream(self, prompt_ids, max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, seed: int | None = None, stop_tokens: Iterable[int] = (),
               with_logits: bool = False) -> Iterator[int]:
        """Yield each new token id as soon as it is chosen (with_logits: (id, the logits [vocab] it was
        chosen from) pairs)."""
        prompt = self._prompt(prompt_ids)
        pick = _sampler(temperature, top_k, top_p, seed)
        stop = {int(t) for t in stop_tokens}
        n = _count(max_new_tokens, "max_new_tokens")
        if len(prompt) + n - 1 > self.context:
            raise InputError(f"a prompt of {len(prompt)} tokens and {n} new ones need a KV cache of "
                             f"{len(prompt) + n - 1} positions; this generator holds {self.context}")
        steps = self._steps(prompt, n, pick, stop)
        return steps if with_logits else (token for token, _ in steps)

    def _steps(self, prompt: np.ndarray, n: int, pick, stop: set[int]) -> Iterator[tuple[int, np.ndarray]]:
        if n == 0:
            return
        cache = [np.empty(t.shape, t.np_dtype) for t in self.cache_types]   # only rows written are read
        t0 = time.perf_counter()
        logits = self._prefill.run([prompt.reshape(1, -1)], cache)[0]
        token = pick(logits[0, -1])
        steps: list[float] = []         # each decode step's seconds (not the caller's time between them)
        self.last_timings = {"prompt_tokens": len(prompt), "prefill_ms": (time.perf_counter() - t0) * 1e3,
                             "new_tokens": 1, "decode_step_ms": steps}
        yield token, logits[0, -1]
        step = np.empty((1, 1), dtype=self.id_dtype)
        for i in range(1, n):
            if token in stop:
                break
            t0 = time.perf_counter()
            step[0, 0] = token
            logits = self._decode.run([step], cache, sizes={PAST: len(prompt) + i - 1})[0]
            token = pick(logits[0, -1])
            steps.append((time.perf_counter() - t0) * 1e3)
            self.last_timings.update(new_tokens=i + 1, decode_ms_per_token=sum(steps) / i,
                                     decode_tokens_per_s=i * 1e3 / sum(steps))
            yield token, logits[0, -1]

    def position_logits(self, ids) -> np.ndarray:
        """The logits [n, vocab] the model gives after each of the n tokens `ids`, computed as generation
        does: the first token's by prefill, each later one's by a decode step fed that token (so a
        quantized decode path is what is measured; rt.bench compares them with fp32's)."""
        ids = self._prompt(ids)
        cache = [np.empty(t.shape, t.np_dtype) for t in self.cache_types]
        rows = [self._prefill.run([ids[:1].reshape(1, 1)], cache)[0][0, -1].copy()]
        for pos in range(1, len(ids)):
            rows.append(self._decode.run([ids[pos:pos + 1].reshape(1, 1)], cache, sizes={PAST: pos})[0][0, -1].copy())
        return np.stack(rows)

    def generate_batch(self, prompts, max_new_tokens: int, *, temperature: float = 0.0, top_k: int = 0,
                       top_p: float = 1.0, seed: int | None = None, stop_tokens: Iterable[int] = ()) -> list[list[int]]:
        """The new token ids of each prompt (up to max_batch of them, of any lengths), decoded
        together: each step reads the weights once for all of them. Greedy gives each prompt's own
        generate(); a sequence ends at a stop token (included) while the others go on."""
        if self._batch is None:
            raise UsageError("this generator decodes one sequence at a time: compile it with max_batch=N")
        if not isinstance(prompts, (list, tuple)) or not 1 <= len(prompts) <= self.max_batch:
            raise InputError(f"generate_batch takes a list of 1..{self.max_batch} prompts, got "
                             f"{len(prompts) if isinstance(prompts, (list, tuple)) else type(prompts).__name__}")
        prompts = [self._prompt(p) for p in prompts]
        n = _count(max_new_tokens, "max_new_tokens")
        longest = max(len(p) for p in prompts)
        if longest + n - 1 > self.context:
            raise InputError(f"a batch whose longest prompt has {longest} tokens and {n} new ones needs a KV "
                             f"cache of {longest + n - 1} positions; this generator holds {self.context}")
        pick = _sampler(temperature, top_k, top_p, seed)
        stop = {int(t) for t in stop_tokens}
        out: list[list[int]] = [[] for _ in prompts]
        for tokens, _ in self._batch_steps(prompts, n, pick):
            for seq, t in zip(out, tokens):
                if not (seq and seq[-1] in stop):
                    seq.append(int(t))
            if all(seq and seq[-1] in stop for seq in out):
                break
        return out

    def _batch_steps(self, prompts: list[np.ndarray], n: int, pick) -> Iterator[tuple[list[int], np.ndarray]]:
        """(each sequence's token, the logits [B, vocab] it was chosen from) per step. The prompts are
        prefilled one by one and their cache rows copied right-aligned into the batch's cache, so that
        every sequence's next row is the same P; key_mask hides the rows before a shorter prompt."""
        if n == 0:
            return
        b, rows, longest = len(prompts), self.max_batch, max(len(p) for p in prompts)
        cache = [np.zeros(t.shape, t.np_dtype) for t in self._batch.layout.state_types]  # masked rows: 0, never NaN
        one = [np.empty(t.shape, t.np_dtype) for t in self.cache_types]
        key_mask = np.zeros((rows, 1, 1, self.context), dtype=np.float32)
        t0 = time.perf_counter()
        first = []
        for i, p in enumerate(prompts):
            first.append(self._prefill.run([p.reshape(1, -1)], one)[0][0, -1])
            pad = longest - len(p)
            for whole, mine in zip(cache, one):
                whole[i, ..., pad:longest, :] = mine[0, ..., :len(p), :]
            key_mask[i, ..., :pad] = -np.inf
        tokens = [pick(x) for x in first]
        steps: list[float] = []
        self.last_timings = {"prompts": b, "prompt_tokens": sum(len(p) for p in prompts),
                             "prefill_ms": (time.perf_counter() - t0) * 1e3, "new_tokens": 1, "decode_step_ms": steps}
        yield tokens, np.stack(first)
        ids = np.zeros((rows, 1), dtype=self.id_dtype)
        positions = np.zeros(rows, dtype=np.int64)
        lengths = np.array([len(p) for p in prompts])
        for i in range(1, n):
            t0 = time.perf_counter()
            ids[:b, 0] = tokens
            positions[:b] = lengths + i - 1
            logits = self._batch.run([ids, positions, key_mask], cache, sizes={PAST: longest + i - 1})[0][:b, -1]
            tokens = [pick(x) for x in logits]
            steps.append((time.perf_counter() - t0) * 1e3)
            self.last_timings.update(new_tokens=i + 1, decode_ms_per_step=sum(steps) / i,
                                     decode_tokens_per_s=b * i * 1e3 / sum(steps))
            yield tokens, logits

    def _prompt(self, prompt_ids) -> np.ndarray:
        ids = np.asarray(prompt_ids)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1 or ids.size == 0:
            raise InputError(f"prompt_ids must be a non-empty list of token ids, got shape {list(ids.shape)}")
        if ids.dtype.kind not in "iu":
            raise InputError(f"prompt_ids must be integers, got {ids.dtype}")
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            raise InputError(f"prompt token {bad[0]} is {ids[bad[0]]}, outside the vocabulary [0, {self.vocab_size})")
        if ids.size > self.context:
            raise InputError(f"a prompt of {ids.size} tokens is longer than this generator's context of "
                             f"{self.context}")
        return ids.astype(self.id_dtype)

    def save(self, path: str) -> None:
        """Write both programs and the weights (once) to `path`; `rt.load(path)` gives the Generator
        back, without torch."""
        from .serialize import save_model
        save_model(path, self.stages, programs=PROGRAMS + ((BATCH,) if self._batch else ()))


def generate(generator: Generator, prompt_ids, max_new_tokens: int, **sampling) -> list[int]:
    """rt.generate(g, prompt_ids, n, temperature=, top_k=, top_p=, seed=, stop_tokens=): the new
    token ids; g from rt.compile_generator or rt.load. Generator.stream yields them one by one."""
    if not isinstance(generator, Generator):
        raise UsageError(f"rt.generate takes a Generator (rt.compile_generator, or rt.load of a saved one), "
                         f"got {type(generator).__name__}")
    return generator.generate(prompt_ids, max_new_tokens, **sampling)


def _count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"{what} must be an integer >= 0, got {n!r}")
    return int(n)


def _sampler(temperature: float, top_k: int, top_p: float, seed: int | None):
    """pick(logits) -> token id: argmax at temperature 0, else a draw from softmax(logits /
    temperature) restricted to the top_k most likely tokens and to the smallest set of them whose
    probability reaches top_p (a numpy Generator seeded with `seed`)."""
    if not (isinstance(temperature, (int, float)) and temperature >= 0 and np.isfinite(temperature)):
        raise InputError(f"temperature must be a finite number >= 0, got {temperature!r}")
    top_k = _count(top_k, "top_k")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise InputError(f"top_p must be in (0, 1], got {top_p!r}")
    if temperature == 0:
        return lambda logits: int(np.argmax(logits))
    rng = np.random.default_rng(seed)

    def pick(logits: np.ndarray) -> int:
        z = logits.astype(np.float64) / temperature
        if 0 < top_k < z.size:
            z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
        p = np.exp(z - z.max())
        p /= p.sum()
        if top_p < 1:
            order = np.argsort(-p, kind="stable")
            keep = np.searchsorted(np.cumsum(p[order]), top_p) + 1
            p[order[keep:]] = 0.0
            p /= p.sum()
        return int(rng.choice(p.size, p=p))
    return pick


def compile_generator(model, max_context: int | None = None, *, max_batch: int = 1, example_ids=None,
                      target: Target | None = None, progress=None, check: bool = True, weights=None,
                      lm_head: str = "auto", calibration=None) -> Generator:
    """Compile a causal LM (an nn.Module mapping token ids [1, n] to logits [1, n, vocab], or a
    transformers model returning them as `logits`) for generation with prompts and outputs of up to
    `max_context` tokens in all. example_ids: a [1, n] id tensor to trace with (default: n = 8 ids
    below the model's config.vocab_size). A torch.export.ExportedProgram whose one dynamic size is
    the sequence length compiles as exported (its range's top is the context). check: run both
    programs once on random ids and refuse the model if prefill then decode does not give what
    prefill of the longer sequence gives (a model whose positions mix in a way the cache does not
    keep). max_batch > 1 adds a program that decodes up to that many sequences per step
    (Generator.generate_batch), from a second export at that batch size. weights, lm_head: the
    matmul weights' formats, as rt.compile takes them ("int8", "int4", ...: decoding reads fewer
    bytes per token); calibration: prompts like the real ones (each a sequence of token ids) that int
    formats round their weights for (GPTQ, as rt.compile's calibration=)."""
    import inspect

    from . import api
    from .lowering.fold import dead_code_elimination
    from .lowering.kv_cache import with_kv_cache
    from .lowering.plan import to_planned
    from .lowering.weight_packing import check_calibration, input_moments, pack_chosen_weights
    from .lowering.weights import weights_n_by_k

    if calibration is not None:
        check_calibration(weights, lm_head)
    batch = _count(max_batch, "max_batch")
    if batch < 1:
        raise UsageError("max_batch must be at least 1")
    if type(model).__name__ == "ExportedProgram":
        if batch > 1:
            raise UsageError("max_batch > 1 needs the model (an nn.Module) to export it at that batch size")
        compiled = api.compile(model, target=target, progress=progress)
        _, _, top = sequence_symbol(compiled.stages["fused"])
        if max_context is not None and max_context != top:
            raise UsageError(f"the export's sequence length ranges up to {top}: export it with max={max_context}")
    else:
        import torch
        if max_context is None:
            raise UsageError("compile_generator needs max_context (the most tokens a prompt and its continuation hold)")
        context = _count(max_context, "max_context")
        if context < 2:
            raise UsageError(f"max_context must be at least 2, got {max_context}")
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if isinstance(positions, int) and context > positions:
            raise UsageError(f"max_context {context} is more than the model's {positions} positions "
                             "(config.max_position_embeddings)")
        if example_ids is None:
            vocab = getattr(getattr(model, "config", None), "vocab_size", None)
            if vocab is None:
                raise UsageError("give example_ids (a [1, n] tensor of token ids): the model has no config.vocab_size")
            example_ids = torch.arange(min(8, context)).reshape(1, -1) % vocab
        params = list(inspect.signature(model.forward).parameters)
        kwargs = {"use_cache": False} if "use_cache" in params else {}
        dynamic = {params[0]: {1: ("S", 1, context)}}
        compiled = api.compile(model, (example_ids,), kwargs, target=target, progress=progress, dynamic=dynamic)
        if batch > 1:
            batched = api.compile(model, (example_ids.expand(batch, -1).contiguous(),), kwargs, target=target,
                                  progress=progress, dynamic=dynamic)
    fused = compiled.stages["fused"]
    names = compiled.output_names
    output = names.index("logits") if "logits" in names else 0 if len(names) == 1 else None
    if output is None:
        raise UsageError(f"the model returns {names}; a generator needs its logits (an output named "
                         "'logits', or the only output)")
    timed = api._Stages(progress)
    sources = {phase: fused for phase in PROGRAMS}
    if batch > 1:
        sources[BATCH] = batched.stages["fused"]
    unique = {id(m): m for m in sources.values()}.values()
    for source in unique:
        timed.run("weights_n_by_k", weights_n_by_k, source)
        dead_code_elimination(source)
    if batch > 1:
        _share_constants(sources[BATCH], fused)

    def programs(label: str) -> Generator:
        stages = {"torch": compiled.stages["torch"], "fused": fused}
        for phase, source in sources.items():
            cached = timed.run(f"kv_cache_{phase}{label}", with_kv_cache, source, phase, output=output)
            stages[phase] = timed.run(f"to_planned_{phase}{label}", to_planned, cached, compiled.target)
        return timed.run(f"build_programs{label}", Generator, stages, run_target=compiled.run_target)

    packing = WeightChoice(weights, lm_head).active
    gen = programs("_fp32" if packing else "")
    if check:
        # The cache's derivation does not depend on the weights' format, and is checked in fp32: int
        # formats round each product's inputs to int8, so there prefill and decode (whose attention
        # sums in another order) differ by whole rounding steps, not by fp32's last bits.
        timed.run("check_cache", check_cache, gen)
    if packing:
        moments = None
        if calibration is not None:
            moments = timed.run("calibrate", input_moments, fused, _calibration_prompts(gen, calibration))
        for source in unique:
            timed.run("pack_weights", pack_chosen_weights, source, weights, lm_head, moments)
        if batch > 1:
            _share_constants(sources[BATCH], fused)
        gen = programs("")
    return gen


def _calibration_prompts(gen: Generator, prompts) -> list[list[np.ndarray]]:
    """compile_generator's calibration prompts (each a sequence of token ids, checked as gen checks a
    prompt) as its fused module's inputs ([1, n] ids)."""
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise UsageError("calibration= takes a non-empty list of prompts, each a sequence of token ids")
    out = []
    for i, p in enumerate(prompts):
        try:
            out.append([gen._prompt(p)[None]])
        except InputError as e:
            raise InputError(f"calibration prompt {i}: {e}") from None
    return out


def _share_constants(module: Module, other: Module) -> None:
    """module's constants that other holds too (same name, same contents: the weights of a second
    export of one model, merged and transposed alike) become other's arrays, so they are held once."""
    for name, arr in module.constants.items():
        mine = other.constants.get(name)
        if mine is not None and mine is not arr and mine.shape == arr.shape and mine.dtype == arr.dtype \
                and np.array_equal(mine, arr):
            module.constants[name] = mine


def check_cache(gen: Generator, length: int = 9, seed: int = 0) -> None:
    """Prefill of n - 2 random ids then two decode steps must give the logits of prefills of n - 1
    and n ids: else the cache does not hold what the model reads of earlier positions."""
    from .errors import LoweringError
    n = min(length, gen.context)
    ids = np.random.default_rng(seed).integers(0, gen.vocab_size, (1, n)).astype(gen.id_dtype)
    cache = [np.empty(t.shape, t.np_dtype) for t in gen.cache_types]
    want = [gen._prefill.run([ids[:, :k]], cache)[0] for k in (n - 1, n)]
    gen._prefill.run([ids[:, :n - 2]], cache)
    got = [gen._decode.run([ids[:, k - 1:k]], cache, sizes={PAST: k - 1})[0] for k in (n - 1, n)]
    scale = max(float(np.abs(w).max()) for w in want) or 1.0
    err = max(float(np.abs(g - w).max()) for g, w in zip(got, want)) / scale
    if not err <= 1e-4:
        raise LoweringError(f"generation: prefill then decode differs from prefill of the whole sequence "
                            f"(relative error {err:.2e}): the model reads earlier positions in a way rt's "
                            "KV cache does not keep")
    if gen._batch is not None:      # two prompts of different lengths decoded together, and each alone
        prompts = [ids[0, :n - 1], ids[0, :n - 3]]
        greedy = _sampler(0.0, 0, 1.0, None)
        together = [logits for _, logits in gen._batch_steps(prompts, 2, greedy)][1]
        alone = np.stack([list(gen.stream(p, 2, with_logits=True))[1][1] for p in prompts])
        err = float(np.abs(together - alone).max()) / (float(np.abs(alone).max()) or 1.0)
        if not err <= 1e-4:
            raise LoweringError(f"generation: decoding a batch differs from decoding each sequence alone "
                                f"(relative error {err:.2e})")
