"""Generation: a causal LM's KV cache, derived by the compiler from the ordinary no-cache export.

A causal LM exported with a dynamic sequence length S computes every position's logits from the whole
sequence. The only ops of such a model that mix positions are its causal self-attentions and the tables
it reads by position (position ids and embeddings, rotary tables: constants that folding sized to the
largest length and slices to rows [0, S), fold.SizedFold). With P tokens already seen, the model on S
new tokens is the same program in which
  - each attention writes its new K and V into rows [P, P + S) of a persistent buffer (a `state`,
    [B, kv heads, C, D] for a context bound C: grouped-query K/V stay unrepeated) and attends over
    rows [0, P + S) of it, and
  - each position table is read at rows [P, P + S).
Two phases are derived: prefill (P = 0, any S up to C) and decode (S = 1, P dynamic in [1, C - 1]).
A model that mixes positions any other way (an attention that is not causal self-attention over the
sequence, a mask rt did not absorb into the kernel) is refused, naming the op; rt.compile_generator
also checks, on the compiled programs, that prefill then decode gives what prefill of the longer
sequence gives.

Why derive it rather than import transformers' StaticCache export: the ordinary export is what every
model already gives rt (no `cache_position` input, no mutated buffers, no strict tracing), the cache
is planned state the compiler owns (its layout, no repeated K/V), and attention reads only the valid
rows, never the cache's whole capacity behind a mask.
"""
from __future__ import annotations

import math

import numpy as np

from ..dialects.ir import Module, Operation, TensorType, Value
from ..dialects.registry import ELEMENTWISE, REGISTRY
from ..dialects.symbolic import Sym, size_ranges, substitute
from ..dialects.verifier import verify_module
from ..errors import LoweringError
from .fold import dead_code_elimination

PAST = "P"          # the decode program's size symbol: tokens already in the cache
PHASES = ("prefill", "decode", "decode_batch")
# decode_batch's own inputs, after the token ids: each sequence's position, and the additive mask of the
# cache rows it sees (a batch's prompts are right-aligned in the cache: row P is every sequence's next)
BATCH_INPUTS = ("positions", "key_mask")


def _fail(module: Module, op: Operation, why: str) -> LoweringError:
    """The refusal, naming the op and the model line it came from (a lowered op keeps its torch
    node's name, with a _N suffix where one node became several ops)."""
    src = module.meta.get("source", {})
    name = op.result.name
    where = src.get(name) or src.get(name.rsplit("_", 1)[0])
    return LoweringError(f"generation: {op.name} (%{name}) {why}" + (f"\n  at {where}" if where else ""))


def sequence_symbol(fused: Module) -> tuple[str, int, int]:
    """The one dynamic size of a generator's export (its sequence length) and its range."""
    symbols = fused.meta.get("symbols") or {}
    if len(symbols) != 1:
        raise LoweringError(f"generation needs exactly one dynamic size, the sequence length; the model has "
                            f"{sorted(symbols) or 'none'}")
    (name, (lo, hi)), = symbols.items()
    return name, lo, hi


def _is_position_slice(op: Operation | None, seq: Sym) -> bool:
    """A size-dependent table read at positions [0, S) along one dim: a folded constant's leading
    slice, one per dynamic dim (fold.SizedFold)."""
    if op is None or op.name != "fused.slice" or not (
            op.attrs.get("start") == 0 and op.attrs.get("end") == seq and op.attrs.get("step", 1) == 1):
        return False
    src = op.operands[0].producer
    return src is not None and (src.name == "const" or _is_position_slice(src, seq))


def _mask_slices(fused: Module, seq: Sym) -> dict[Operation, bool]:
    """The position slices of attention masks, each with whether it slices the key dim (the mask's
    last): with a cache, a mask is read at query rows [P, P + S) and key columns [0, P + S)."""
    found = {}
    for op in fused.ops:
        mask = op.operands[3] if op.name == "fused.attention" and len(op.operands) > 3 else None
        src = mask.producer if mask is not None else None
        while _is_position_slice(src, seq):
            found[src] = src.attrs["dim"] == mask.type.rank - 1
            src = src.operands[0].producer
    return found


def with_kv_cache(fused: Module, phase: str, output: int = 0) -> Module:
    """The fused module of one phase of a generator, returning the fused module's output #output (the
    logits), with its KV cache as states 0..2L-1 (K then V of each attention, in program order).
    prefill: a prompt, P = 0. decode: one token after P cached ones. decode_batch: one token for each
    of the export's B sequences, whose prompts are right-aligned in the cache (so every one writes row
    P), each at its own position (input `positions` [B]: its position tables are gathered) and seeing
    the cache rows its additive `key_mask` [B, 1, 1, C] lets through (its own, not the padding before
    its prompt)."""
    if phase not in PHASES:
        raise ValueError(f"phase is one of {PHASES}, got {phase!r}")
    name, lo, context = sequence_symbol(fused)
    seq = Sym.symbol(name)
    if phase == "prefill":
        env, new, past, symbols = {}, seq, 0, {name: (lo, context)}
    else:                   # decode, decode_batch
        if context < 2:
            raise LoweringError(f"generation needs a context of at least 2 tokens, the range of {name} ends at {context}")
        env, new, past, symbols = {name: 1}, 1, Sym.symbol(PAST), {PAST: (1, context - 1)}
    m = Module(fused.name, constants=dict(fused.constants),
               meta={k: v for k, v in fused.meta.items() if k not in ("symbols", "signature") and not k.startswith("_")})
    m.meta["symbols"] = symbols
    m.meta["_names"] = {v.name for v in fused.values()}     # the cache's new values take fresh names
    remap: dict[Value, Value] = {}

    def value(v: Value, operands: list, attrs: dict) -> Value:
        """v in this phase: a constant's own type, any other op's inferred from its new operands."""
        if v.producer is None or v.producer.name == "const":
            t = v.type
        else:
            opdef = REGISTRY[v.producer.name]
            t = opdef.infer([None if o is None else o.type for o in operands], opdef.with_defaults(attrs))
        out = remap[v] = Value(v.name, t)
        return out

    def add(name_: str, operands: list, attrs: dict, result: Value) -> Value:
        op = Operation(name_, operands, attrs, result)
        result.producer = op
        m.ops.append(op)
        return result

    m.inputs = [remap.setdefault(v, Value(v.name, TensorType(substitute(v.type.shape, env), v.type.dtype)))
                for v in fused.inputs]
    batch = phase == "decode_batch"
    key_mask = positions = None
    if batch:
        rows = m.inputs[0].type.shape[0]
        positions = Value(BATCH_INPUTS[0], TensorType((rows,), "i64"))
        key_mask = Value(BATCH_INPUTS[1], TensorType((rows, 1, 1, context), "f32"))
        m.inputs += [positions, key_mask]
        m.meta["_names"].update(BATCH_INPUTS)
    states: list[Value] = []
    mask_slices = _mask_slices(fused, seq)
    for op in fused.ops:
        operands = [None if v is None else remap[v] for v in op.operands]
        attrs = substitute(op.attrs, env)
        if batch and op in mask_slices:
            raise _fail(fused, op, "is a mask of positions (a sliding window): batched decoding takes causal "
                            "attention only")
        if batch and _is_position_slice(op, seq):
            remap[op.result] = _gather_positions(m, op, operands[0], positions, add)
            continue
        if mask_slices.get(op):
            attrs = dict(attrs, end=past + new)
        elif _is_position_slice(op, seq):
            attrs = dict(attrs, start=past, end=past + new)
        elif op.name == "fused.attention":
            operands = _attend_over_cache(fused, m, op, operands, attrs, seq, new, past, context, add, states,
                                          key_mask)
            # one new row sees every cached one; a prefill's rows (past 0) keep the model's causality
            attrs = dict(attrs, causal=bool(attrs.get("causal")) and phase == "prefill")
        with size_ranges(symbols):
            add(op.name, operands, attrs, value(op.result, operands, attrs))
    m.outputs = [remap[fused.outputs[output]]]
    if phase == "prefill":            # generation reads the last position's logits only
        m.outputs = [_last_row(m, m.outputs[0], seq, m.users(), {})]
    dead_code_elimination(m)
    if not states:
        raise LoweringError("generation: the model has no causal self-attention, so no KV cache to keep")
    m.invalidate_names()
    with size_ranges(symbols):
        verify_module(m, "fused")
    return m


# Ops that compute each token's row from that row alone, and the operands that may carry the rows
# (the others must not depend on the sequence: weights, biases, norms' parameters).
_ROW_WISE = {"fused.matmul": (0, 3), "fused.layer_norm": (0,), "fused.rms_norm": (0,)}


def _token_dim(t: TensorType, seq: Sym) -> int | None:
    """The dim of t that is the sequence, if it is the only dynamic one and only 1s lead it."""
    dims = [d for d, n in enumerate(t.shape) if not isinstance(n, int)]
    if len(dims) != 1 or t.shape[dims[0]] != seq or any(n != 1 for n in t.shape[:dims[0]]):
        return None
    return dims[0]


def _last_row(m: Module, v: Value, seq: Sym, users: dict, done: dict) -> Value:
    """v's last position (a [.., 1, ..] value in place of [.., S, ..]): the row-wise ops that make v
    and that nothing else reads (the LM head, its norm, the last layer's MLP) recomputed on the last
    row of their operands, so that prefill computes one row of logits instead of S; any other value
    is sliced. done: the values already cut to their row."""
    if v in done:
        return done[v]
    d = _token_dim(v.type, seq)
    if d is None:
        raise LoweringError(f"generation: the logits {v.type} are not one row per position")
    op = v.producer if len(users.get(v, ())) <= 1 else None     # a value others read whole: sliced
    carriers = _ROW_WISE.get(op.name) if op is not None else None
    if carriers is None and op is not None and REGISTRY[op.name].has(ELEMENTWISE):
        carriers = range(len(op.operands))
    operands = list(op.operands) if op is not None else []
    rows = carriers is not None and all(
        x is None or (_token_dim(x.type, seq) is not None if j in carriers and not x.type.is_static else x.type.is_static)
        for j, x in enumerate(operands))
    attrs = dict(op.attrs) if op is not None else {}
    if op is not None and op.name == "fused.reshape" and _token_dim(operands[0].type, seq) is not None:
        rows, carriers = True, (0,)
        attrs["shape"] = [1 if k == d else n for k, n in enumerate(attrs["shape"])]
    if op is not None and op.name == "fused.slice" and op.attrs["dim"] != d:     # columns of the rows
        rows, carriers = True, (0,)
    shape = tuple(1 if k == d else n for k, n in enumerate(v.type.shape))
    if not rows:
        result = Value(m.fresh_name(v.name + "_last"), v.type.with_shape(shape))
        new = Operation("fused.slice", [v], {"dim": d, "start": seq - 1, "end": seq, "step": 1}, result)
    else:
        operands = [_last_row(m, x, seq, users, done) if x is not None and j in carriers and not x.type.is_static else x
                    for j, x in enumerate(operands)]
        result = Value(m.fresh_name(v.name + "_last"), v.type.with_shape(shape))
        new = Operation(op.name, operands, attrs, result)
    result.producer = new
    m.ops.append(new)
    done[v] = result
    return result


def _hides_later_keys(table: np.ndarray) -> bool:
    """Whether an additive mask [..., queries, keys] hides from each query every later key (a causal
    mask, or a sliding window): else a query reads tokens that a cache cannot have yet."""
    q, k = table.shape[-2:]
    later = np.triu(np.ones((q, k), dtype=bool), 1)
    return bool(np.all(table[..., later] < -1e30))       # -inf, or HF's finfo(float32).min


def _gather_positions(m: Module, op: Operation, table: Value, positions: Value, add) -> Value:
    """A position table [1, .., C, rest] read at rows [P, P + 1) becomes each sequence's own row:
    embedding(table as [C, rest], positions) as [B, .., 1, rest]."""
    t, d = table.type, op.attrs["dim"]
    if d == 0 or any(n != 1 for n in t.shape[:d]):
        raise _fail(m, op, f"reads a position table {t} that is not shared by the batch ([1, .., positions, ..])")
    rest = t.shape[d + 1:]
    rows = positions.type.shape[0]
    flat = add("fused.reshape", [table], {"shape": [t.shape[d], math.prod(rest)]},
               Value(m.fresh_name(table.name + "_rows"), t.with_shape((t.shape[d], math.prod(rest)))))
    idx_shape = (rows,) + (1,) * (d - 1)
    idx = add("fused.reshape", [positions], {"shape": list(idx_shape)},
              Value(m.fresh_name("positions"), positions.type.with_shape(idx_shape)))
    picked = add("fused.embedding", [flat, idx], {},
                 Value(m.fresh_name(op.result.name + "_picked"), t.with_shape(idx_shape + (math.prod(rest),))))
    shape = (rows,) + (1,) * d + tuple(rest)
    return add("fused.reshape", [picked], {"shape": list(shape)},
               Value(m.fresh_name(op.result.name + "_each"), t.with_shape(shape)))


def _attend_over_cache(fused: Module, m: Module, op: Operation, operands: list, attrs: dict, seq: Sym, new,
                       past, context: int, add, states: list[Value], key_mask: Value | None) -> list:
    """Each of K and V written into its cache at rows [past, past + new); the attention's K and V
    become rows [0, past + new) of the caches (and its mask rows [0, past + new) of key_mask, if
    given)."""
    q, k, v, mask = (list(op.operands) + [None])[:4]
    if mask is not None:
        if not _is_position_slice(mask.producer, seq):
            raise _fail(fused, op, "has a mask computed from the inputs; a generator's mask must be a table of "
                            "positions (causal, sliding window) that rt can read at the cached rows")
        table = mask.producer
        while table.name != "const":
            table = table.operands[0].producer
        if not _hides_later_keys(fused.constants[table.attrs["name"]]):
            raise _fail(fused, op, "lets a position attend to later ones (it is not causal): a KV cache cannot "
                            "hold tokens that come later")
    if mask is None and not attrs.get("causal"):
        raise _fail(fused, op, "is neither causal nor masked: a generator's attention must be causal self-attention")
    if not (q.type.shape[-2] == k.type.shape[-2] == v.type.shape[-2] == seq):
        raise _fail(fused, op, f"attends from {q.type} to {k.type}: not self-attention over the sequence")
    out = list(operands)
    for j, kind in ((1, "k"), (2, "v")):
        x = operands[j]
        dim = x.type.rank - 2
        index = len(states)
        shape = list(x.type.shape)
        shape[dim] = context
        cache_t = TensorType(tuple(shape), x.type.dtype)
        cache = add("state", [], {"index": index},
                    Value(m.fresh_name(f"{kind}_cache{index // 2}"), cache_t))
        written = add("fused.cache_write", [cache, x], {"dim": dim, "start": past},
                      Value(m.fresh_name(f"{kind}_cache{index // 2}_written"), cache_t))
        rows = list(shape)
        rows[dim] = past + new
        out[j] = add("fused.slice", [written], {"dim": dim, "start": 0, "end": past + new, "step": 1},
                     Value(m.fresh_name(f"{kind}_cache{index // 2}_rows"), TensorType(tuple(rows), x.type.dtype)))
        states.append(cache)
    if key_mask is not None:
        if mask is not None:
            raise _fail(fused, op, "has a mask of positions (a sliding window): batched decoding takes causal attention only")
        shape = key_mask.type.shape[:3] + (past + new,)
        out = (out + [None])[:3] + [add("fused.slice", [key_mask], {"dim": 3, "start": 0, "end": past + new, "step": 1},
                                        Value(m.fresh_name("key_mask_rows"), key_mask.type.with_shape(shape)))]
    return out
