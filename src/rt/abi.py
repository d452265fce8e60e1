"""The runtime's ABI, declared once: constants, enums, op codes and every C op's record fields.

C reads this file as `rt_abi.h`, which the build generates from it (`rt/abi_header.py`); Python reads it
directly, so the records step and the planner need nothing compiled. A record is `rt_op`: operand
slots/offsets, then the op family's int fields (`op->ip.<family>.<field>` in C) and float fields
(`op->fp.<family>.<field>`). Records are rebuilt from the planned IR whenever a program is built (saved
files hold IR, not records), so fields may be added, removed or reordered freely.

Field specs: args `"a b bias? >sum? out"` (`?` = optional: absent is slot -1; `>` = the kernel writes it
besides the out, the last arg), ints `"M N act:act shape[6]"`
(plain ints are extents, checked to lie in [0, MAX_EXTENT] by the generic checker; `:bool` is 0/1;
`:<enum>` one of ENUMS' names, filled by name from Python; `[n]` an array of n extents), floats `"eps"`
(`"alpha=0"`: a parameter only some ops of the family use, 0 when left out).
The C checker of each family checks everything else (buffer sizes, consistency).
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_ARGS = 8          # operands per record
MAX_IP = 40           # int64 slots per record
MAX_FP = 4            # double slots per record
MAX_NDIM = 6          # rank limit of strided kernels
ALIGN = 64            # bytes: arena offsets, the arena itself, saved weights
MAX_EXTENT = 1 << 40  # dims and strides above this are refused, so extent arithmetic cannot overflow



def align(n: int) -> int:
    """n rounded up to a multiple of ALIGN."""
    return (n + ALIGN - 1) // ALIGN * ALIGN


# One-row products on weights of at most this many elements run rt's own loops (matvec.c).
MATVEC_SMALL_ELEMS = 128 * 128
# Inputs per encoded chunk of the split form; a row's last k % SPLIT_CHUNK stay plain floats.
SPLIT_CHUNK = 64
# Packed weights (QMATMUL, rt/weight_formats.py): outputs per panel (one 16-float vector), and inputs
# per block of an activation row quantized to int8 with one scale (the int formats' group sizes are
# multiples of it).
QPANEL = 16
QBLOCK = 32
# int4nl's 16 levels (a 4-bit value u stands for d * INT4NL_LEVELS[u]): spaced like the quantiles of a
# bell-shaped weight distribution, denser near zero than int4's even grid; llama.cpp's IQ4_NL table
INT4NL_LEVELS = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)

ENUMS: dict[str, tuple[str, ...]] = {
    "dtype": ("f32", "i64", "bool", "i32", "f64"),   # f64: casts only
    # MATMUL epilogue activation
    "act": ("none", "relu", "gelu_tanh", "gelu_erf", "silu"),
    # How MATMUL reads B: BLAS; oneDNN reading the constant B in place; oneDNN reading a copy of the
    # constant B reordered once into its preferred layout; rt's one-row kernel on a copy of the
    # constant B in 3.5 bytes per float (matvec_split.c); rt's register-blocked one-row loops for a
    # B of at most MATVEC_SMALL_ELEMS (matvec.c).
    "b_mode": ("blas", "onednn", "packed", "split", "small"),
    # QMATMUL's weight formats (rt/weight_formats.py describes their layouts)
    "weight_format": ("bf16", "int8", "int4", "int4nl"),
    # Why a kernel stopped (rt_status.code)
    "error": ("ok", "index", "nomem", "backend"),
}

# CPU features the target records (C asks __builtin_cpu_supports for each, by this name).
CPU_FEATURES = ("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq",
                "avx512vnni", "avx512bf16")


@dataclass(frozen=True)
class Field:
    name: str
    count: int = 1            # > 1: an array
    enum: str | None = None   # "bool", or a key of ENUMS
    optional: bool = False    # args only
    written: bool = False     # args only: the kernel writes it (the out, the last arg, always is)
    default: float | None = None   # floats: the value when an encoder leaves the field out

    @property
    def limit(self) -> int:
        """Largest valid value of an int field."""
        if self.enum == "bool":
            return 1
        return len(ENUMS[self.enum]) - 1 if self.enum else MAX_EXTENT


def _args(spec: str) -> tuple[Field, ...]:
    words = spec.split()
    return tuple(Field(w.lstrip(">").rstrip("?"), optional=w.endswith("?"), written=w.startswith(">") or
                       i == len(words) - 1) for i, w in enumerate(words))


def _float(w: str) -> Field:
    name, eq, default = w.partition("=")
    return Field(name, default=float(default) if eq else None)


def _ints(spec: str) -> tuple[Field, ...]:
    fields = []
    for w in spec.split():
        name, _, enum = w.partition(":")
        count = 1
        if name.endswith("]"):
            name, n = name[:-1].split("[")
            count = int(n)
        if enum and enum != "bool" and enum not in ENUMS:
            raise ValueError(f"field {name}: unknown enum {enum!r}")
        fields.append(Field(name, count, enum or None))
    return tuple(fields)


@dataclass(frozen=True)
class Family:
    """Ops that share one record layout (and one C checker, `rt_c_<name>`)."""
    name: str
    args: tuple[Field, ...]
    ints: tuple[Field, ...]
    floats: tuple[Field, ...]
    doc: str

    def int_offsets(self) -> dict[str, tuple[int, Field]]:
        """Field name -> (first index in ip, field)."""
        out, i = {}, 0
        for f in self.ints:
            out[f.name] = (i, f)
            i += f.count
        return out


def family(name: str, doc: str, args: str, ints: str = "", floats: str = "") -> Family:
    fam = Family(name, _args(args), _ints(ints), tuple(_float(w) for w in floats.split()), doc)
    if len(fam.args) > MAX_ARGS or sum(f.count for f in fam.ints) > MAX_IP or len(fam.floats) > MAX_FP:
        raise ValueError(f"family {name} has more fields than a record holds")
    return fam


ND = f"[{MAX_NDIM}]"

MATMUL = family("matmul", """
out[i1,i2] = act(alpha * op(A[i1,i2]) @ op(B[i1,i2]) + bias[N] + residual[i1,i2])
A[i1,i2] starts at a + i1*sa1 + i2*sa2 (likewise B, C); batch strides may be 0. op(A) is MxK: stored
MxK (leading dim lda) or, with trans_a, KxM; op(B) is KxN likewise. residual has out's layout (ldc,
sc1, sc2); it may be out itself, or not overlap it. b_mode other than blas needs a constant B
(bound when the program is built), one batch and K > 0; oneDNN modes also alpha 1; split and small
one row.""",
    "a b bias? residual? out",
    "b1 b2 M N K trans_a:bool trans_b:bool lda ldb ldc sa1 sa2 sb1 sb2 sc1 sc2 act:act b_mode:b_mode",
    "alpha")

QMATMUL = family("qmatmul", """
out[M,N] = act(alpha * A[M,K] @ W + bias[N] + residual[M,N]), W a constant [N, K] weight packed in
`format` (rt/weight_formats.py: panels of QPANEL outputs; int formats in groups of `group` inputs along
K, each with a scale per output and, with zero_point, an offset). A's rows (leading dim lda) are read
contiguously; int formats quantize each QBLOCK inputs of a row to int8 into scratch (qmatmul_scratch_bytes)
and multiply in integers; with rotate, each block is first turned by the orthonormal QBLOCK-point
Hadamard transform (the weight was packed turned the same way, so the product is unchanged). residual
has out's layout (ldc) and may be out itself.""",
    "a w bias? residual? >scratch? out",
    "M N K lda ldc format:weight_format group zero_point:bool rotate:bool act:act",
    "alpha")

UNARY = family("unary", """
out[i] = f(x[i]) over n floats; x may be out (in place). alpha, beta: the op's parameters (leaky_relu,
elu: alpha the slope / scale; clamp: [alpha, beta]; pow: x ** alpha; softplus: beta alpha, threshold
beta; others ignore them).""", "x out", "n", "alpha=0 beta=0")

# The unary ops, by their fused/planned names; C op NAME = name.upper(), C row function rt_row_<name>
# (csrc/rt_unary.h), numpy reference in rt.dialects.numerics.UNARY.
UNARY_OPS = ("relu", "gelu_tanh", "gelu_erf", "tanh", "sigmoid", "neg", "exp", "sqrt", "rsqrt", "silu",
             "sin", "cos", "erf", "abs", "log", "log1p", "expm1", "reciprocal", "floor", "ceil", "round",
             "trunc", "sign", "hardswish", "hardsigmoid", "mish", "softplus", "elu", "leaky_relu", "clamp",
             "pow", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2", "log2",
             "log10", "erfc", "log_sigmoid", "frac", "lgamma")

BINARY = family("binary", """
out = a (op) b with broadcasting: out is contiguous with `shape` (first ndim entries used), a and b are
read through their strides (a stride of 0 broadcasts). a and b have dtype `dtype` (one the op takes:
BINARY_OPS); out has it too, or bool for comparisons and logical ops (BOOL_RESULT). out may be a or b
when that input has out's dtype and is contiguous with out's shape; no other overlap.""",
    "a b out", f"ndim shape{ND} a_stride{ND} b_stride{ND} dtype:dtype")

# The dtypes each class of binary op takes (csrc/elementwise.c's classes: FLOAT, ARITH, CMP, LOGIC, BITS).
_F, _ARITH, _ALL, _BOOL, _BITS = ("f32",), ("f32", "i64", "i32"), ("f32", "i64", "bool", "i32"), ("bool",), \
    ("i64", "bool", "i32")
# Binary op -> the operand dtypes its kernel takes. silu_mul, gelu_tanh_mul, gelu_erf_mul: act(a) * b,
# a gated MLP's gate (SwiGLU, GeGLU). floor_divide / remainder: Python's (torch's) rounding; fmod,
# trunc_divide: C's. An integer division by zero gives 0 (torch raises).
BINARY_OPS: dict[str, tuple[str, ...]] = {
    "add": _ARITH, "sub": _ARITH, "mul": _ARITH, "div": _F, "maximum": _ARITH, "minimum": _ARITH,
    "pow_tensor": _F, "silu_mul": _F, "gelu_tanh_mul": _F, "gelu_erf_mul": _F, "fmod": _ARITH,
    "remainder": _ARITH, "floor_divide": _ARITH, "trunc_divide": _ARITH, "atan2": _F, "copysign": _F,
    "hypot": _F, "logaddexp": _F, "fmax": _F, "fmin": _F,
    "eq": _ALL, "ne": _ALL, "lt": _ALL, "le": _ALL, "gt": _ALL, "ge": _ALL,
    "logical_and": _BOOL, "logical_or": _BOOL, "logical_xor": _BOOL,
    "bitwise_and": _BITS, "bitwise_or": _BITS, "bitwise_xor": _BITS, "nextafter": _F,
}
BOOL_RESULT = ("eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor")

TERNARY = family("ternary", """
out = f(a, b, c) with broadcasting: out contiguous with `shape`, a, b, c read through their strides.
where: a bool condition, b and c of dtype `dtype` (f32, i64, bool, i32); clamp_tensor: a limited to
[b, c] (f32, i64, i32; NaN propagates); lerp: a + c * (b - a) (f32). No overlap of out with an input
unless equal and contiguous.""",
    "a b c out", f"ndim shape{ND} a_stride{ND} b_stride{ND} c_stride{ND} dtype:dtype")
TERNARY_OPS: dict[str, tuple[str, ...]] = {"where": _ALL, "clamp_tensor": _ARITH, "lerp": _F}

REDUCE = family("reduce", """
out[kept] = reduce over the last nred of ndim dims of x (read through its strides, the kept dims
first): contiguous out with the kept dims' shape. mean divides the sum by the count; amax/amin
propagate NaN, as torch does; an empty reduction gives 0 (sum, mean: NaN), 1 (prod), -inf/inf.
argmax / argmin: the int64 index of the first largest / smallest (NaN counts as largest, as torch), in
the reduced dims flattened; var / std: with `correction` (Bessel's), in double; logsumexp: max-shifted.
dtype: x's, f32 or i64 (i64: sum, prod, amax, amin, argmax, argmin, exact, wrapping as torch's).""",
    "x out", f"ndim nred shape{ND} stride{ND} dtype:dtype", "correction=0")

REDUCE_OPS = ("sum", "mean", "amax", "amin", "prod", "argmax", "argmin", "var", "std", "logsumexp")

SCAN = family("scan", """
Running sum / product / log-sum-exp along the last of ndim dims of x (read through `stride`), written through
`out_stride` (nonzero where a dim is above 1), accumulated in double; dtype f32, or i64 for cumsum and
cumprod (exact, wrapping as torch's).""",
    "x out", f"ndim shape{ND} stride{ND} out_stride{ND} dtype:dtype")
SCAN_OPS = ("cumsum", "cumprod", "logcumsumexp")

GATHER = family("gather", """
out[i] = x[..., idx[i] along dim, ...] for each i of out (contiguous, `shape`): x is read through
x_stride (the dim's own entry unused) plus idx[i] * x_dim_stride, idx (int64) through idx_stride. A
negative index counts from the end (size); one outside [-size, size) stops the run with error index.
Items of itemsize bytes. torch.gather, index_select, index.Tensor, flip, roll are this.""",
    "x idx out", f"ndim shape{ND} x_stride{ND} idx_stride{ND} dim size x_dim_stride itemsize")

ENUMS["scatter"] = ("none", "sum", "prod", "amax", "amin")
SCATTER = family("scatter", """
out = x (n items, contiguous; x may be out), then for each i of `shape` (idx and src read through
their strides): out[..., idx[i] along dim, ...] = src[i], or combined with it by `reduce`; out's item
for i is at out_stride (the dim's own entry unused) plus idx[i] * out_dim_stride. include_self false:
the targeted items start from the reduction's identity. In order, so a repeated index keeps the last
write (none). A negative index counts from the end; one outside [-size, size) stops the run with
error index. dtype: f32, i64, i32 or bool (none only).""",
    "x idx src out", f"ndim shape{ND} idx_stride{ND} src_stride{ND} out_stride{ND} dim size out_dim_stride n "
    "reduce:scatter include_self:bool dtype:dtype")

SORT = family("sort", """
Stable sort of each row (the last dim of `shape`, x read through `stride`) into out (contiguous): the
first k items of each sorted row, ascending or descending (NaN sorts as the largest, as torch); result
0: the values (f32), 1: their int64 positions in the row.""",
    "x out", f"ndim shape{ND} stride{ND} k descending:bool result")

RMS_NORM = family("rms_norm", """
out = x / sqrt(mean(x^2 over the last dim) + eps) * gamma over rows of cols: out contiguous, x's rows
read as [rows / group, group] through strides (x_gs, x_rs) (Qwen3's per-head q/k norms read heads of
one merged projection in place); x may be out when contiguous.""", "x gamma? out", "rows cols group x_gs x_rs",
                  "eps")

SOFTMAX = family("softmax", "Softmax (LOG_SOFTMAX: its log, as x - max - log(sum exp)) over the last dim of "
                 "[rows, cols]; x may be out. A row of all -inf gives NaN, as torch.softmax does.", "x out",
                 "rows cols")

LAYER_NORM = family("layer_norm", "Layer norm over the last dim of [rows, cols] (biased variance, as "
                    "torch); x may be out.", "x gamma? beta? out", "rows cols", "eps")

ADD_LAYER_NORM = family("add_layer_norm", """
sum = x + residual (stored when the sum operand is present: the next residual), out = layer_norm(sum).
Any operands may alias each other exactly; no partial overlap.""",
    "x residual gamma? beta? >sum? out", "rows cols", "eps")

ATTENTION = family("attention", """
q [B,H,Sq,D], k [B,H,Sk,D], v [B,H,Sk,Dv], out [B,H,Sq,Dv] through their (batch, head, seq) strides
(last dim stride 1); mask [B,H,Sq,Sk] additive float, broadcast by 0 strides. causal: query i sees keys
j <= i (top-left, as torch SDPA is_causal=True). A query row that sees no key gives zeros, as torch
SDPA does. Grouped-query attention: query head h reads k/v head h / kv_group. scratch holds `threads` shares of rt_attention_scratch_floats(Sk, D, Dv) floats (planned
by the memory planner); the kernel runs on at most that many threads.""",
    "q k v mask? >scratch out",
    "B H Sq Sk D Dv q_sb q_sh q_ss k_sb k_sh k_ss v_sb v_sh v_ss o_sb o_sh o_ss causal:bool "
    "m_sb m_sh m_sq m_sk threads kv_group",
    "scale")

EMBEDDING = family("embedding", "out[i] = table[idx[i]] (idx int64, table read through its strides); an "
                   "index outside [0, vocab) stops the run with error index (detail = the index).",
                   "table idx out", "n vocab dim row_stride col_stride")

ROPE = family("rope", """
Rotary embedding: x [B, H, S, D] read through its (batch, head, seq) strides (last dim contiguous),
cos and sin [B?, S, D] through theirs (c_sb 0 when shared by the batch), out [B, H, S, D] through its
own. The first `rot` dims rotate, in halves (rotate_half: out[i] = x[i] cos[i] - x[i + rot/2] sin[i],
out[i + rot/2] = x[i + rot/2] cos[i + rot/2] + x[i] sin[i + rot/2]) or, when interleaved, in pairs
(2j, 2j + 1); the rest pass through. out may be x.""",
    "x cos sin out", "B H S D rot interleaved:bool x_sb x_sh x_ss c_sb c_ss o_sb o_sh o_ss")

# ---- vision: convolution, pooling, resampling, padding (csrc/conv*.c, pool.c, resample.c) ----
# A convolution's epilogue activation (a oneDNN eltwise post-op); clamp is [alpha, beta].
ENUMS["eltwise"] = ("none", "relu", "gelu_tanh", "gelu_erf", "silu", "hardswish", "hardsigmoid", "clamp",
                    "sigmoid", "tanh")
_NCHW_STRIDES = "x_sn x_sc x_sh x_sw o_sn o_sc o_sh o_sw"

CONV = family("conv", """
2-D convolution (cross-correlation) through oneDNN: out[n,o,i,j] = act(bias[o] + residual[n,o,i,j] +
sum over c < C/G, kh, kw of x[n, g*C/G + c, i*sh - pt + kh*dh, j*sw - pl + kw*dw] * w[o, c, kh, kw]),
g = o / (O/G), zero padding pt/pb/pl/pr (OH = (H + pt + pb - dh*(KH-1) - 1) / sh + 1). x and out (and
residual, with out's strides) are read and written through their (n, c, h, w) strides: NCHW or NHWC
is only strides. w is [O, C/G, KH, KW] contiguous; a constant w is reordered once into oneDNN's layout.
residual may be out itself, or not overlap it. act: eltwise (clamp to [alpha, beta]). transposed: torch's
conv_transpose2d instead (oneDNN's deconvolution): w is [C, O/G, KH, KW], the padding crops the output
and OH = (H - 1)*sh + dh*(KH-1) + 1 + oph - pt - pb (oph, opw: torch's output_padding). wino_tile m (2 or
4; 0: direct): a 3x3, stride-1, undilated, ungrouped convolution with a constant w computed by Winograd's
F(m x m, 3x3) instead (conv_winograd.c): scratch holds a chunk's transformed input and products
(conv_winograd_scratch_bytes).""",
    "x w bias? residual? >scratch? out",
    f"N C H W O OH OW KH KW sh sw pt pb pl pr dh dw G {_NCHW_STRIDES} act:eltwise transposed:bool oph opw "
    "wino_tile",
    "alpha=0 beta=0")

POOL = family("pool", """
2-D pooling of x [N, C, H, W] into out [N, C, OH, OW], both through their (n, c, h, w) strides. Window
(i, j) covers rows i*sh - pt + kh*dh (kh < KH) within [0, H), likewise columns; adaptive: rows
[floor(i*H/OH), ceil((i+1)*H/OH)) (KH, sh, pt, dh unused). MAX_POOL: the largest (NaN propagates);
AVG_POOL: the sum over divisor when nonzero, else over the window's size clipped to [-pt, H + pb) x
[-pl, W + pr) (count_pad) or to the input.""",
    "x out", f"N C H W OH OW KH KW sh sw pt pb pl pr dh dw adaptive:bool count_pad:bool divisor {_NCHW_STRIDES}")

ENUMS["resample"] = ("nearest", "nearest_exact", "bilinear")
RESAMPLE = family("resample", """
out [N, C, OH, OW] resampled from x [N, C, H, W], both through their (n, c, h, w) strides, as torch's
upsample_*2d: scale_h, scale_w are input pixels per output pixel (torch's). nearest: row min(floor(i *
scale_h), H - 1); nearest_exact: floor((i + 0.5) * scale_h); bilinear: source row i * scale_h with
align_corners, else max((i + 0.5) * scale_h - 0.5, 0), blending its two neighbours.""",
    "x out", f"N C H W OH OW mode:resample align_corners:bool {_NCHW_STRIDES}", "scale_h scale_w")

ENUMS["pad"] = ("constant", "reflect", "replicate")
PAD = family("pad", """
out (contiguous, shape `shape`) = x (shape `in_shape`, read through its strides) with lo[d] items before
and shape[d] - in_shape[d] - lo[d] after it in each dim: `value` (constant), x mirrored about its edge
without repeating it (reflect) or its edge repeated (replicate).""",
    "x out", f"ndim shape{ND} in_shape{ND} lo{ND} stride{ND} mode:pad", "value")

GROUP_NORM = family("group_norm", """
out[n, c, s] = (x[n, c, s] - mean) / sqrt(var + eps) * gamma[c] + beta[c], the mean and (biased) variance
over the C/G channels of c's group and all S positions of n; x and out through their (n, c, s) strides
(NCHW or NHWC with H and W merged into S); x may be out.""",
    "x gamma? beta? out", "N C S G x_sn x_sc x_ss o_sn o_sc o_ss", "eps")


COPY = family("copy", """
Strided copy of x (strides `stride`) into out (strides `out_stride`: nonzero where a dim is above 1, so
no item is written twice); items of itemsize bytes (1, 2, 4, 8). A contiguous out for a copy; a
slice of a bigger out for each part of a concatenation.""",
              "x out", f"ndim shape{ND} stride{ND} out_stride{ND} itemsize")

CAST = family("cast", "out = x converted (float -> int truncates toward zero; to bool is x != 0).",
              "x out", "n src:dtype dst:dtype")


@dataclass(frozen=True)
class Op:
    name: str          # C op name (rt_op.code = its index in OPS)
    family: Family

    @property
    def kernel(self) -> str:
        return f"rt_k_{self.name.lower()}"


# Op codes are positions in this list.
OPS: tuple[Op, ...] = (
    Op("MATMUL", MATMUL),
    Op("QMATMUL", QMATMUL),
    *(Op(n.upper(), UNARY) for n in UNARY_OPS),
    *(Op(n.upper(), BINARY) for n in BINARY_OPS),
    *(Op(n.upper(), REDUCE) for n in REDUCE_OPS),
    *(Op(n.upper(), TERNARY) for n in TERNARY_OPS),
    *(Op(n.upper(), SCAN) for n in SCAN_OPS),
    Op("GATHER", GATHER),
    Op("SCATTER", SCATTER),
    Op("SORT", SORT),
    Op("RMS_NORM", RMS_NORM),
    Op("ROPE", ROPE),
    Op("SOFTMAX", SOFTMAX),
    Op("LOG_SOFTMAX", SOFTMAX),
    Op("LAYER_NORM", LAYER_NORM),
    Op("ATTENTION", ATTENTION),
    Op("EMBEDDING", EMBEDDING),
    Op("COPY", COPY),
    Op("CAST", CAST),
    Op("ADD_LAYER_NORM", ADD_LAYER_NORM),
    Op("CONV", CONV),
    Op("MAX_POOL", POOL),
    Op("AVG_POOL", POOL),
    Op("RESAMPLE", RESAMPLE),
    Op("PAD", PAD),
    Op("GROUP_NORM", GROUP_NORM),
)

OP_CODES: dict[str, int] = {o.name: i for i, o in enumerate(OPS)}
OP_BY_NAME: dict[str, Op] = {o.name: o for o in OPS}
FAMILIES: tuple[Family, ...] = tuple(dict.fromkeys(o.family for o in OPS))


def enum_code(enum: str, name: str) -> int:
    return ENUMS[enum].index(name)


def attention_scratch_floats(sk: int, d: int, dv: int) -> int:
    """Scratch floats one thread of ATTENTION needs: packed K^T and V for all keys plus one query block.
    Mirrors rt_attention_scratch_floats in csrc/attention.c, whose checker refuses less
    (tests/test_kernels.py compares the two)."""
    up = lambda x, m: (x + m - 1) // m * m     # noqa: E731
    skp, dvp = up(sk, ATTENTION_BK), up(dv, ATTENTION_LANES)
    return up(d * skp + skp * dvp + ATTENTION_BQ * d + ATTENTION_BQ * ATTENTION_BK + ATTENTION_BQ * dvp, 16)


def qweight_bytes(fmt: str, n: int, k: int, group: int, zero_point: bool) -> int:
    """Bytes of a [N, K] weight packed in format fmt. Mirrors rt_qweight_bytes in csrc/matmul_packed.c,
    whose checker refuses less (tests/test_weight_formats.py compares the two)."""
    panels = -(-n // QPANEL)
    if fmt == "bf16":
        return panels * (k + k % 2) * QPANEL * 2
    scales = QPANEL * 2 * (2 if zero_point else 1)      # an fp16 scale (and offset) per output
    values = QPANEL * group if fmt == "int8" else QPANEL * group // 2
    return panels * (k // group) * (scales + values)


def qmatmul_scratch_bytes(fmt: str, m: int, k: int) -> int:
    """Scratch of a QMATMUL: its int formats' quantized activations, per row K int8 and two floats per
    QBLOCK inputs (the block's scale, and the scale times the sum of its quantized values)."""
    return 0 if fmt == "bf16" else m * (k + k // QBLOCK * 8)


# CONV's Winograd F(m x m, 3x3), m in WINO_TILES: output tiles of m x m, each from an (m + 2)^2 input
# tile, so (m + 2)^2 products per tile. The planner (dialects/kernel_facts.py) takes the largest m with
# at least WINO_MIN_TILES tiles, for at least WINO_MIN_CHANNELS channels in and out: below either,
# oneDNN's direct convolution was faster here. Each product row (tile) does 2 flops per transformed
# weight it reads, and the transformed weights (4x the plain ones for m = 4, 1.8x for m = 2) come from
# memory once per run: 32 rows give ~16 flops per byte, about this machine's fp32 flops over its
# bandwidth. Tiles run in chunks whose transformed input and products take about WINO_CHUNK_BYTES (so
# they stay in cache between the passes), but at least WINO_MIN_CHUNK tiles.
WINO_TILES = (4, 2)
WINO_MIN_CHANNELS, WINO_MIN_TILES = 64, 32
WINO_CHUNK_BYTES, WINO_MIN_CHUNK = 4 << 20, 32


def conv_winograd_tiles(n: int, oh: int, ow: int, m: int) -> int:
    return n * -(-oh // m) * -(-ow // m)


def conv_winograd_chunk(tiles: int, c: int, o: int, m: int) -> int:
    """Tiles per chunk of a Winograd CONV: the fewest chunks of at most the budget, evened out.
    Mirrors rt_conv_winograd_chunk in csrc/conv.c."""
    most = max(WINO_CHUNK_BYTES // ((m + 2) ** 2 * (c + o) * 4), WINO_MIN_CHUNK)
    chunks = -(-tiles // most)
    return -(-tiles // chunks)


def conv_winograd_scratch_bytes(n: int, oh: int, ow: int, c: int, o: int, m: int) -> int:
    """Scratch of a Winograd CONV: one chunk's transformed input [(m+2)^2, chunk, C] and products
    [(m+2)^2, chunk, O]. Mirrors rt_conv_winograd_scratch_bytes in csrc/conv.c, whose checker refuses less."""
    return (m + 2) ** 2 * conv_winograd_chunk(conv_winograd_tiles(n, oh, ow, m), c, o, m) * (c + o) * 4


# ATTENTION's tiles: query rows per block, keys per block, register tile width (floats).
ATTENTION_BQ, ATTENTION_BK, ATTENTION_LANES = 32, 64, 16
