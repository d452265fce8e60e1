"""Weight formats for constant matmul weights, chosen at compile time (`rt.compile(..., weights=)`):
how a [N, K] weight is packed for QMATMUL (csrc/matmul_packed.c documents the byte layout), read back,
and multiplied in numpy the way the kernel multiplies (the interpreter's reference). Nothing here
imports torch.

Formats, spelled as users give them:
- "bf16": each weight rounded to bfloat16 (to nearest even); products in fp32 with the inputs as they are.
- "int8": symmetric, a scale per output channel (w = d u, u in [-127, 127]); "int8:g32" (or g64, g128...)
  a scale per output and per group of that many inputs instead.
- "int4": symmetric, a scale per output and per group of 32 inputs (w = d (u - 8), u in [0, 15], as
  llama.cpp's q4_0); "int4:g128" groups of 128; a ":zp" suffix adds an offset per group (w = d u - m,
  as q4_1), which fits a group's range exactly.
- "int4nl": int4's bytes and groups, but u picks one of 16 levels spaced like a bell curve's
  quantiles (w = d INT4NL_LEVELS[u], as llama.cpp's IQ4_NL): less error for the same bytes.
Int formats multiply the inputs quantized to int8 per block of QBLOCK (32) with a scale each. A
":rot" suffix packs W H instead of W, H the orthonormal Hadamard transform of each block of QBLOCK
inputs, and turns each block of the inputs by H before quantizing it (the product is unchanged, as
H H = I): an outlying input or weight is spread over its block, so both roundings err less (as
QuaRot and QuIP# rotate before quantizing).
- "int4:best": per weight, whichever of int4 and int4nl, turned (":rot") or not, rounds that weight with
  the least squared error (weighted by its inputs' second moment when calibrated: the products' error;
  choose_variant). Uniform noise fits int4's even grid best, trained weights with outliers the
  bell-curve levels turned; the compile report names each weight's pick.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .abi import INT4NL_LEVELS, QBLOCK, QPANEL, qweight_bytes
from .errors import UsageError

KINDS = ("bf16", "int8", "int4", "int4nl")
NIBBLE_KINDS = ("int4", "int4nl")


@dataclass(frozen=True)
class WeightFormat:
    kind: str                   # one of KINDS
    group: int | None = None    # int formats: inputs per scale; None = all of K (int8's default)
    zero_point: bool = False    # int4: an offset per group
    rotate: bool = False        # int formats: W and the inputs turned by a Hadamard transform per block
    best: bool = False          # int4: per weight, the 4-bit variant that errs least (choose_variant)

    @property
    def name(self) -> str:
        return (self.kind + (f":g{self.group}" if self.group else "") + (":zp" if self.zero_point else "")
                + (":rot" if self.rotate else "") + (":best" if self.best else ""))

    def group_for(self, k: int) -> int:
        """The group size this format takes for K inputs (K itself for per-channel int8, 0 for bf16)."""
        return 0 if self.kind == "bf16" else self.group or k

    def fits(self, k: int) -> str | None:
        """Why a weight with K inputs cannot take this format, or None."""
        if self.kind == "bf16":
            return None
        g = self.group_for(k)
        if k % QBLOCK or k % g:
            return f"{self.name} needs K ({k}) to be a multiple of {QBLOCK} and of its group ({g})"
        return None


def parse(spec) -> WeightFormat | None:
    """A format from its spelling ("bf16", "int8", "int8:g32", "int4", "int4:g128:zp", ...); None or
    "fp32" keep a weight as it is."""
    if spec is None or isinstance(spec, WeightFormat):
        return spec
    if not isinstance(spec, str):
        raise UsageError(f"a weight format is a string such as 'int8' or 'int4:g128', got {spec!r}")
    if spec == "fp32":
        return None
    kind, *opts = spec.split(":")
    group, zero_point, rotate, best = None, False, False, False
    for o in opts:
        if o == "zp":
            zero_point = True
        elif o == "rot":
            rotate = True
        elif o == "best":
            best = True
        elif o.startswith("g") and o[1:].isdigit() and int(o[1:]) > 0 and int(o[1:]) % QBLOCK == 0:
            group = int(o[1:])
        else:
            raise UsageError(f"weight format {spec!r}: unknown option {o!r} (groups are g<n> with n a "
                             f"multiple of {QBLOCK}; 'zp' adds a zero point; 'rot' rotates each block "
                             f"of {QBLOCK} inputs before rounding; 'best' picks int4 or int4nl, turned or "
                             "not, per weight)")
    if kind not in KINDS:
        raise UsageError(f"unknown weight format {spec!r} (known: fp32, {', '.join(KINDS)}, with "
                         "options such as int8:g32, int4:g128, int4:g32:zp, int4nl:rot)")
    if kind == "bf16" and (group or zero_point or rotate):
        raise UsageError(f"weight format {spec!r}: bf16 takes no group, zero point or rotation")
    if kind != "int4" and zero_point:
        raise UsageError(f"weight format {spec!r}: {kind} is symmetric (only int4 takes a zero point)")
    if best and (kind != "int4" or zero_point or rotate):
        raise UsageError(f"weight format {spec!r}: 'best' chooses among int4 and int4nl, turned or not; "
                         "it takes a group only (int4:best, int4:g128:best)")
    if kind in NIBBLE_KINDS and group is None:
        group = 32
    return WeightFormat(kind, group, zero_point, rotate, best)


# Output rows a ':best' format measures each variant's error on: the choice is per weight, and rows
# of one weight round alike, so a sample decides it at a fraction of a full packing's cost.
BEST_SAMPLE_ROWS = 256


def choose_variant(w: np.ndarray, fmt: WeightFormat, hessian: np.ndarray | None = None) -> WeightFormat:
    """The concrete format a [N, K] weight takes under fmt: fmt itself, or for ':best' the variant of
    int4 / int4nl, turned or not (fmt's group), whose nearest rounding of up to BEST_SAMPLE_ROWS of its
    rows errs least: sum (W - W')^2, or with hessian (the inputs' X^T X / rows) tr(E H E^T), the
    squared error of the products it gives."""
    if not fmt.best:
        return fmt
    n, k = w.shape
    rows = w[np.unique(np.linspace(0, n - 1, min(n, BEST_SAMPLE_ROWS)).astype(np.intp))].astype(np.float32)
    best, best_err = None, np.inf
    for kind in NIBBLE_KINDS:
        for rotate in (False, True):
            cand = WeightFormat(kind, fmt.group, False, rotate)
            back = unpack(pack(rows, cand), kind, len(rows), k, cand.group_for(k), False)
            e = rows - (_rotate_blocks(back) if rotate else back)           # H H = I turns W H back
            err = np.sum(e * e) if hessian is None else np.sum((e @ hessian) * e)
            if err < best_err:
                best, best_err = cand, err
    return best


# ---- packing --------------------------------------------------------------------------------------
def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _bf16_bits(w: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    rounded = ((u.astype(np.uint64) + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(w), np.uint16(0x7FC0), rounded)


def _panels(a: np.ndarray, n: int) -> np.ndarray:
    """a [N, ...] zero-padded to whole panels, as [panels, QPANEL, ...]."""
    pad = -n % QPANEL
    if pad:
        a = np.concatenate([a, np.zeros((pad,) + a.shape[1:], a.dtype)])
    return a.reshape((-1, QPANEL) + a.shape[1:])


def _quantize_groups(w: np.ndarray, fmt: WeightFormat, g: int, hessian: np.ndarray | None = None):
    """Per (output, group): fp16 scale d, fp16 offset m (None when implied) and values u, with
    w ~ d u - m. hessian (K x K, the inputs' X^T X / rows): round by GPTQ instead of to nearest."""
    n, k = w.shape
    wg = w.reshape(n, k // g, g).astype(np.float32)
    # with calibration, an input's error weighs as much as the input varies (H's diagonal)
    weight = None if hessian is None else np.maximum(np.diag(hessian), 0).reshape(1, k // g, g)
    levels = None
    if fmt.kind == "int8":
        d, m, implied, lo, hi = _f16(np.abs(wg).max(axis=2) / 127), None, 128, 1, 255
    elif fmt.kind == "int4nl":
        levels = np.array(INT4NL_LEVELS, np.float32)
        d, m, implied, lo, hi = _searched_scales(wg, weight, levels), None, 0, 0, 15
    elif not fmt.zero_point:     # q4_0's grid d * [-8, 7], d searched: see _searched_scales
        d, m, implied, lo, hi = _searched_scales(wg, weight), None, 8, 0, 15
    else:
        d, m, implied, lo, hi = _f16((wg.max(axis=2) - wg.min(axis=2)) / 15), _f16(-wg.min(axis=2)), 0, 0, 15
    grid = _Grid(np.repeat(_safe(d), g, axis=1), None if m is None else np.repeat(m.astype(np.float32), g, axis=1),
                 implied, lo, hi, levels)
    u = grid.round(w.astype(np.float32)) if hessian is None else _gptq(w, grid, hessian)
    return d, m, u.astype(np.uint8)


@dataclass
class _Grid:
    """Per weight value: u = clip(rint(w / d) + implied) (or clip(rint((w + m) / d)) with an offset
    m) in [lo, hi], and back: d (u - implied) (or d u - m); with `levels`, u is the index of the level
    nearest w / d, and back d levels[u]. d and m have the weights' shape; `at` picks the part of them
    (an index or slice of their first axis) that w or u covers."""
    d: np.ndarray
    m: np.ndarray | None
    implied: int
    lo: int
    hi: int
    levels: np.ndarray | None = None

    def round(self, w: np.ndarray, at=slice(None)) -> np.ndarray:
        d = self.d[at]
        if self.levels is not None:
            return np.searchsorted((self.levels[1:] + self.levels[:-1]) / 2, w / d).astype(np.float32)
        x = np.rint(w / d) + self.implied if self.m is None else np.rint((w + self.m[at]) / d)
        return np.clip(x, self.lo, self.hi)

    def value(self, u: np.ndarray, at=slice(None)) -> np.ndarray:
        d = self.d[at]
        if self.levels is not None:
            return d * self.levels[u.astype(np.intp)]
        return d * (u - self.implied) if self.m is None else d * u - self.m[at]


# GPTQ's dampening, as a fraction of the mean diagonal of the Hessian: with a few hundred calibration
# rows X^T X is far from full rank, and 0.1 generalised to held-out inputs better than 0.01 (MiniLM).
GPTQ_DAMP = 0.1
GPTQ_BLOCK = 128


def _gptq(w: np.ndarray, grid: _Grid, hessian: np.ndarray) -> np.ndarray:
    """u for w on grid, rounded one input column at a time, most active inputs (largest diagonal of
    H = X^T X) first, each column's rounding error spread over the columns not yet rounded through
    the Cholesky factor of H's inverse (GPTQ, Frantar et al. 2022), so that X W^T, not W, stays close.
    Scales are fixed beforehand (the format's own), so the bytes are the format's as ever."""
    n, k = w.shape
    h = np.array(hessian, dtype=np.float64)
    dead = np.diag(h) <= 0                      # inputs that never vary: nothing to compensate with
    h[dead, dead] = 1
    h += GPTQ_DAMP * np.mean(np.diag(h)) * np.eye(k)
    order = np.argsort(-np.diag(h), kind="stable")
    inv_chol = np.linalg.cholesky(np.linalg.inv(h[np.ix_(order, order)])).T     # upper triangular
    # inputs as rows ([K, N]): each step reads and updates whole contiguous rows
    work = np.ascontiguousarray(w.T[order], dtype=np.float64)
    g = replace(grid, d=np.ascontiguousarray(grid.d.T[order]),
                m=None if grid.m is None else np.ascontiguousarray(grid.m.T[order]))
    u = np.empty((k, n), np.float32)
    for b0 in range(0, k, GPTQ_BLOCK):
        b1 = min(b0 + GPTQ_BLOCK, k)
        err = np.empty((b1 - b0, n))
        for j in range(b0, b1):
            u[j] = g.round(work[j], j)
            e = (work[j] - g.value(u[j], j)) / inv_chol[j, j]
            work[j:b1] -= inv_chol[j, j:b1, None] * e
            err[j - b0] = e
        work[b1:] -= inv_chol[b0:b1, b1:].T @ err
    out = np.empty((n, k), np.float32)
    out[:, order] = u.T
    return out


# Where the group's value of largest magnitude lands on the grid, as a fraction of the grid's most
# negative value: q4_0 puts it at -8 exactly; a slightly finer grid that rounds it (and clips) often
# errs less over the group. The scale with the least squared error over these is kept: same format
# and speed, smaller error than q4_0's rule.
EXTREME_PLACES = np.linspace(9 / 8, 7 / 8, 9)


def _searched_scales(wg: np.ndarray, weight: np.ndarray | None = None, levels: np.ndarray | None = None) -> np.ndarray:
    """Per group (last axis) the fp16 scale d of a 4-bit grid (q4_0's d (u - 8), or d levels[u]) that
    minimises sum weight (w - d value(u))^2 (weight: per input, broadcast against wg; None: all 1)."""
    idx = np.abs(wg).argmax(axis=2)
    big = np.take_along_axis(wg, idx[..., None], axis=2)[..., 0]
    lowest = -8.0 if levels is None else float(levels[0])
    best_d, best_err = None, None
    for t in EXTREME_PLACES * lowest:
        d = _f16(big / t)
        grid = _Grid(_safe(d)[..., None], None, 8, 0, 15, levels)
        err = np.square(grid.value(grid.round(wg)) - wg)
        err = (err if weight is None else err * weight).sum(axis=2)
        if best_d is None:
            best_d, best_err = d, err
        else:
            better = err < best_err
            best_d, best_err = np.where(better, d, best_d), np.minimum(err, best_err)
    return best_d


def _safe(d: np.ndarray) -> np.ndarray:
    """d as float32 with zeros replaced by 1 (a zero scale's values are all zero anyway)."""
    d = d.astype(np.float32)
    return np.where(d == 0, np.float32(1), d)


def pack(w: np.ndarray, fmt: WeightFormat, hessian: np.ndarray | None = None) -> np.ndarray:
    """A [N, K] float weight as the bytes QMATMUL reads (uint8, qweight_bytes long); hessian (int
    formats): the inputs' K x K second moment, to round by GPTQ (_gptq) rather than to nearest."""
    n, k = w.shape
    why = fmt.fits(k)
    if why:
        raise UsageError(why)
    fmt = choose_variant(w, fmt, hessian)
    if fmt.kind == "bf16":
        bits = _bf16_bits(w)
        if k % 2:
            bits = np.concatenate([bits, np.zeros((n, 1), np.uint16)], axis=1)
        p = _panels(bits, n)                                     # [panels, 16, Kp]
        out = p.reshape(p.shape[0], QPANEL, -1, 2).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(out).view(np.uint8).reshape(-1)
    g = fmt.group_for(k)
    if fmt.rotate:      # pack W H; the inputs' second moment turns alike: (X H)^T (X H) = H X^T X H
        w = _rotate_blocks(w)
        hessian = None if hessian is None else _rotate_blocks(_rotate_blocks(hessian).T).T
    d, m, u = _quantize_groups(w, fmt, g, hessian)
    parts = [_panels(d, n).transpose(0, 2, 1)[..., None].view(np.uint8).reshape(-1, k // g, 2 * QPANEL)]
    if m is not None:
        parts.append(_panels(m, n).transpose(0, 2, 1)[..., None].view(np.uint8).reshape(-1, k // g, 2 * QPANEL))
    up = _panels(u, n)                                           # [panels, 16, groups, g]
    if fmt.kind == "int8":
        vals = up.reshape(up.shape[0], QPANEL, k // g, g // 4, 4).transpose(0, 2, 3, 1, 4)
    else:
        o = up.reshape(up.shape[0], QPANEL, k // g, g // 8, 2, 4)
        vals = (o[..., 0, :] | (o[..., 1, :] << 4)).transpose(0, 2, 3, 1, 4)
    parts.append(np.ascontiguousarray(vals).reshape(vals.shape[0], k // g, -1))
    out = np.ascontiguousarray(np.concatenate(parts, axis=2)).reshape(-1)
    assert out.size == qweight_bytes(fmt.kind, n, k, g, fmt.zero_point)
    return out


def _hadamard(n: int) -> np.ndarray:
    """The orthonormal n-point Hadamard matrix in Sylvester's order (csrc/matmul_packed.c's butterflies)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def _rotate_blocks(a: np.ndarray) -> np.ndarray:
    """Each block of QBLOCK along a's last axis times the Hadamard matrix H (symmetric, so H x = x H)."""
    blocks = a.reshape(a.shape[:-1] + (a.shape[-1] // QBLOCK, QBLOCK)).astype(np.float64)
    return (blocks @ _hadamard(QBLOCK)).reshape(a.shape)


def unpack(packed: np.ndarray, kind: str, n: int, k: int, group: int, zero_point: bool) -> np.ndarray:
    """The [N, K] float32 weight that `packed` holds (d u - m per value, as the kernel reads it; for a
    rotated format that is W H, the weight turned)."""
    panels = -(-n // QPANEL)
    if kind == "bf16":
        kp = k + k % 2
        bits = packed.view(np.uint16).reshape(panels, kp // 2, QPANEL, 2).transpose(0, 2, 1, 3).reshape(-1, kp)
        return (bits.astype(np.uint32) << 16).view(np.float32)[:n, :k]
    ng, head = k // group, 2 * QPANEL * (2 if zero_point else 1)
    rec = packed.reshape(panels, ng, -1)
    d = rec[..., :2 * QPANEL].copy().view(np.float16).astype(np.float32)        # [panels, groups, 16]
    vals = rec[..., head:]
    if kind == "int8":
        u = vals.reshape(panels, ng, group // 4, QPANEL, 4).transpose(0, 3, 1, 2, 4).reshape(panels, QPANEL, ng, group)
        m = d * 128
    else:
        b = vals.reshape(panels, ng, group // 8, QPANEL, 4)
        u = np.stack([b & 15, b >> 4], axis=3)                                   # [p, g, oct, 2, 16, 4]
        u = u.transpose(0, 4, 1, 2, 3, 5).reshape(panels, QPANEL, ng, group)
        m = rec[..., 2 * QPANEL:head].copy().view(np.float16).astype(np.float32) if zero_point else d * 8
    d, m = d.transpose(0, 2, 1)[..., None], m.transpose(0, 2, 1)[..., None]    # [p, 16, groups, 1]
    if kind == "int4nl":
        u, m = np.array(INT4NL_LEVELS, np.float32)[u], 0
    w = d * u.astype(np.float32) - m
    return w.reshape(panels * QPANEL, k)[:n]


# ---- the kernel's arithmetic, in numpy --------------------------------------------------------------
def quantize_inputs(a: np.ndarray, rotate: bool = False) -> np.ndarray:
    """Rows of a [..., K] as an int format's product reads them: each QBLOCK inputs (turned by H
    first, with rotate) rounded to int8 with scale max|x| / 127, times that scale (float32 steps as in
    the kernel)."""
    a = _rotate_blocks(a).astype(np.float32) if rotate else a
    x = a.astype(np.float32).reshape(-1, a.shape[-1] // QBLOCK, QBLOCK)
    amax = np.abs(x).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
        q = np.rint(x * inv)
    return (q * (amax / np.float32(127))).reshape(a.shape)


def reference(args, attrs) -> np.ndarray:
    """fused.matmul_packed in numpy: act(alpha * a @ W^T + bias + residual), W = unpack(w)."""
    from .dialects import numerics
    a, w, bias, res = (list(args) + [None] * 4)[:4]
    kind = attrs["format"]
    weight = unpack(w, kind, attrs["n"], attrs["k"], attrs["group"], attrs["zero_point"])
    x = a if kind == "bf16" else quantize_inputs(a, attrs.get("rotate", False))
    y = np.matmul(x.astype(np.float64), weight.T.astype(np.float64)) * attrs["alpha"]
    if bias is not None:
        y = y + bias
    if res is not None:
        y = y + res
    return numerics.ACTIVATIONS[attrs["act"]](y.astype(np.float32))


# ---- what a program holds --------------------------------------------------------------------------
def weight_bytes(module) -> dict[str, int]:
    """Bytes of a module's constants by the format they are read in: each packed matmul weight under
    its format's name (int4:g32, ...), every other constant under its dtype (f32, i64, ...)."""
    packed = {}
    for op in module.ops:
        if op.name.endswith(".matmul_packed"):
            at = op.attrs
            group = at.get("group", 0)
            per_channel = at["format"] == "int8" and group == at["k"]     # int8's default spelling
            fmt = WeightFormat(at["format"], None if per_channel or not group else group, at.get("zero_point", False),
                               at.get("rotate", False))
            packed[op.operands[1].producer.attrs["name"]] = fmt.name
    out: dict[str, int] = {}
    seen = set()
    for op in module.ops:
        if op.name == "const" and op.attrs["name"] not in seen:
            seen.add(op.attrs["name"])
            key = packed.get(op.attrs["name"], op.result.type.dtype)
            out[key] = out.get(key, 0) + module.constants[op.attrs["name"]].nbytes
    return out


def describe_weight_bytes(by_format: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in sorted(by_format.items(), key=lambda kv: -kv[1]))


# ---- which weight takes which format ----------------------------------------------------------------
AUTO = "auto"


class WeightChoice:
    """Which format each constant matmul weight takes. `weights`: one format for all, or a dict
    {pattern: format} matched (fnmatch, first match wins; no match keeps fp32) against the weight's
    name as the model names it (`model.layers.0.mlp.down_proj.weight`; merged projections join their
    names with '+'). `lm_head`: the format of the product that gives a model output (the LM head); by
    default the body's, but int8 under an int4 body: the logits are where 4-bit errors show most, and
    llama.cpp likewise keeps its q4_0 models' output tensor at 6 bits."""

    def __init__(self, weights, lm_head=AUTO):
        items = weights.items() if isinstance(weights, dict) else [("*", weights)]
        self.rules = [(str(pattern), parse(spec)) for pattern, spec in items]
        self.lm_head = lm_head if lm_head == AUTO else parse(lm_head)

    @property
    def active(self) -> bool:
        return any(f is not None for _, f in self.rules) or self.lm_head not in (AUTO, None)

    @property
    def rounds_to_ints(self) -> bool:
        """Whether any weight may take an int format (what calibration changes)."""
        formats = [f for _, f in self.rules] + ([] if self.lm_head in (AUTO, None) else [self.lm_head])
        return any(f is not None and f.kind != "bf16" for f in formats)

    def body(self, name: str) -> WeightFormat | None:
        from fnmatch import fnmatchcase
        return next((f for pattern, f in self.rules if fnmatchcase(name, pattern)), None)

    def pick(self, name: str, is_output: bool) -> WeightFormat | None:
        if not is_output:
            return self.body(name)
        if self.lm_head != AUTO:
            return self.lm_head
        body = self.body(name)
        return parse("int8") if body is not None and body.kind in NIBBLE_KINDS else body
