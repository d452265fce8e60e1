/* Unary ops (one X-macro family) and broadcasting binary ops. */
#include "rt_kernel.h"

/* Chunk size for parallel elementwise loops: big enough to amortise the call. */
#define RT_CHUNK 16384

/* ---- unary: x may equal y (in place), so no restrict here ---- */

#define RT_UNARY_DEF(name, expr)                                                  \
    RT_SIMD void rt_row_##name(const float *x_, float *y, int64_t n, float a, float b) \
    {                                                                             \
        (void)a, (void)b;                                                         \
        for (int64_t i = 0; i < n; i++) {                                         \
            float x = x_[i];                                                      \
            y[i] = (expr);                                                        \
        }                                                                         \
    }                                                                             \
    int rt_k_##name(const rt_op *op, char *const *arg)                            \
    {                                                                             \
        unary_run(rt_row_##name, op, arg);                                        \
        return RT_OK;                                                             \
    }

static void unary_run(rt_row_fn f, const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[RT_UNARY_X];
    float *y = (float *)arg[RT_UNARY_OUT];
    int64_t n = op->ip.unary.n;
    float a = (float)op->fp.unary.alpha, b = (float)op->fp.unary.beta;
    RT_FOR(n >= RT_PAR_MIN_ELEMS, c, (n + RT_CHUNK - 1) / RT_CHUNK, {
        int64_t lo = c * RT_CHUNK, len = n - lo < RT_CHUNK ? n - lo : RT_CHUNK;
        f(x + lo, y + lo, len, a, b);
    });
}

RT_UNARY_LIST(RT_UNARY_DEF)

/* pow by a constant exponent: the common exponents as their own loops (a square, a root), any
 * other through rt_powf. */
#define RT_POW_ROW(name, expr)                                                    \
    RT_SIMD static void name(const float *x_, float *y, int64_t n, float a, float b) \
    {                                                                             \
        (void)a, (void)b;                                                         \
        for (int64_t i = 0; i < n; i++) {                                         \
            float x = x_[i];                                                      \
            y[i] = (expr);                                                        \
        }                                                                         \
    }
RT_POW_ROW(pow_square, x * x)
RT_POW_ROW(pow_cube, x * x * x)
RT_POW_ROW(pow_sqrt, sqrtf(x))
RT_POW_ROW(pow_rsqrt, 1.f / sqrtf(x))
RT_POW_ROW(pow_recip, 1.f / x)
RT_POW_ROW(pow_any, rt_powf(x, a))

int rt_k_pow(const rt_op *op, char *const *arg)
{
    float p = (float)op->fp.unary.alpha;
    rt_row_fn f = p == 2.f ? pow_square : p == 3.f ? pow_cube : p == 0.5f ? pow_sqrt
                : p == -0.5f ? pow_rsqrt : p == -1.f ? pow_recip : pow_any;
    unary_run(f, op, arg);
    return RT_OK;
}

int rt_c_unary(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    int64_t n = op->ip.unary.n;
    return rt_need(op, avail, RT_UNARY_X, n, 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_UNARY_OUT, n, 4, "out", msg, msglen);
}

/* ---- binary: typed, broadcasting ---- */

typedef uint8_t rt_bool;

/* One inner row per (op, dtype, stride case): unit/unit, unit/broadcast, broadcast/unit, and any
 * strides. Operands are TA, the result TY; out may alias a unit-stride input of its own type, so
 * no restrict. */
typedef void (*bin_row_fn)(const char *a, int64_t as, const char *b, int64_t bs, char *y, int64_t n);

#define RT_BIN_ROW(fname, TA, TY, expr)                                                  \
    RT_SIMD static void fname(const char *a8, int64_t as, const char *b8, int64_t bs,    \
                              char *y8, int64_t n)                                      \
    {                                                                                   \
        const TA *a_ = (const TA *)a8, *b_ = (const TA *)b8;                            \
        TY *y = (TY *)y8;                                                               \
        if (as == 1 && bs == 1)                                                         \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA a = a_[i], b = b_[i];                                                \
                y[i] = (TY)(expr);                                                      \
            }                                                                           \
        else if (as == 1 && bs == 0) {                                                  \
            TA b = b_[0];                                                               \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA a = a_[i];                                                           \
                y[i] = (TY)(expr);                                                      \
            }                                                                           \
        } else if (as == 0 && bs == 1) {                                                \
            TA a = a_[0];                                                               \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA b = b_[i];                                                           \
                y[i] = (TY)(expr);                                                      \
            }                                                                           \
        } else                                                                          \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA a = a_[i * as], b = b_[i * bs];                                      \
                y[i] = (TY)(expr);                                                      \
            }                                                                           \
    }

/* The dtypes an op's kernel takes (its class: rt.abi.BINARY_OPS says the same in Python), each a row
 * in a table indexed by the operands' dtype (NULL: refused by the checker). FLOAT: f32; ARITH: f32
 * (fexpr), i64 and i32 (iexpr); CMP: every dtype, bool result; LOGIC: bool operands and result;
 * BITS: i64, i32, bool (iexpr). */
#define RT_BIN_FLOAT(name, fexpr, iexpr)                                                 \
    RT_BIN_ROW(name##_f32, float, float, fexpr)                                          \
    static const bin_row_fn name##_rows[RT_DTYPE_COUNT] = {name##_f32, NULL, NULL, NULL}; \
    enum { name##_bool_out = 0 };
#define RT_BIN_ARITH(name, fexpr, iexpr)                                                 \
    RT_BIN_ROW(name##_f32, float, float, fexpr)                                          \
    RT_BIN_ROW(name##_i64, int64_t, int64_t, iexpr)                                      \
    RT_BIN_ROW(name##_i32, int32_t, int32_t, iexpr)                                      \
    static const bin_row_fn name##_rows[RT_DTYPE_COUNT] = {name##_f32, name##_i64, NULL, name##_i32}; \
    enum { name##_bool_out = 0 };
#define RT_BIN_CMP(name, fexpr, iexpr)                                                   \
    RT_BIN_ROW(name##_f32, float, rt_bool, fexpr)                                        \
    RT_BIN_ROW(name##_i64, int64_t, rt_bool, fexpr)                                      \
    RT_BIN_ROW(name##_b8, rt_bool, rt_bool, fexpr)                                       \
    RT_BIN_ROW(name##_i32, int32_t, rt_bool, fexpr)                                      \
    static const bin_row_fn name##_rows[RT_DTYPE_COUNT] = {name##_f32, name##_i64, name##_b8, name##_i32}; \
    enum { name##_bool_out = 1 };
#define RT_BIN_LOGIC(name, fexpr, iexpr)                                                 \
    RT_BIN_ROW(name##_b8, rt_bool, rt_bool, fexpr)                                       \
    static const bin_row_fn name##_rows[RT_DTYPE_COUNT] = {NULL, NULL, name##_b8, NULL};  \
    enum { name##_bool_out = 1 };
#define RT_BIN_BITS(name, fexpr, iexpr)                                                  \
    RT_BIN_ROW(name##_i64, int64_t, int64_t, iexpr)                                      \
    RT_BIN_ROW(name##_b8, rt_bool, rt_bool, iexpr)                                       \
    RT_BIN_ROW(name##_i32, int32_t, int32_t, iexpr)                                      \
    static const bin_row_fn name##_rows[RT_DTYPE_COUNT] = {NULL, name##_i64, name##_b8, name##_i32}; \
    enum { name##_bool_out = 0 };

/* torch's floor division and Python-style remainder of floats (the sign of b), from fmodf. */
static inline float rt_floordivf(float a, float b)
{
    if (b == 0.f) return a / b;
    float mod = fmodf(a, b), div = (a - mod) / b;
    if (mod != 0.f && (b < 0.f) != (mod < 0.f)) div -= 1.f;
    if (div == 0.f) return copysignf(0.f, a / b);
    float fl = floorf(div);
    return div - fl > 0.5f ? fl + 1.f : fl;
}

static inline float rt_remainderf(float a, float b)
{
    float m = fmodf(a, b);
    return m != 0.f && (b < 0.f) != (m < 0.f) ? m + b : m;
}

/* Integer division and remainder as torch's (floor / sign of b); a zero divisor gives 0 (torch
 * raises). */
#define RT_IFLOORDIV(a, b) ((b) == 0 ? 0 : (a) / (b) - (((a) % (b) != 0) && (((a) < 0) != ((b) < 0))))
#define RT_IREM(a, b) ((b) == 0 ? 0 : ((a) % (b) != 0 && (((a) % (b) < 0) != ((b) < 0)) ? (a) % (b) + (b) : (a) % (b)))
#define RT_IFMOD(a, b) ((b) == 0 ? 0 : (a) % (b))
#define RT_ITRUNCDIV(a, b) ((b) == 0 ? 0 : (a) / (b))

static inline float rt_logaddexpf(float a, float b)
{
    float m = a > b ? a : b, d = a > b ? b - a : a - b;
    return m == -INFINITY ? m : (a != a || b != b ? a + b : m + rt_log1pf(rt_expf(d)));
}

/* X(name, class, float expression, integer expression) in a, b. maximum / minimum propagate NaN, as
 * torch does; fmax / fmin ignore it. */
#define RT_BINARY_LIST(X)                                                       \
    X(ADD, add, ARITH, a + b, a + b)                                                 \
    X(SUB, sub, ARITH, a - b, a - b)                                                 \
    X(MUL, mul, ARITH, a * b, a * b)                                                 \
    X(DIV, div, FLOAT, a / b, 0)                                                     \
    X(MAXIMUM, maximum, ARITH, a != a ? a : (b != b ? b : (a > b ? a : b)), a > b ? a : b) \
    X(MINIMUM, minimum, ARITH, a != a ? a : (b != b ? b : (a < b ? a : b)), a < b ? a : b) \
    X(POW_TENSOR, pow_tensor, FLOAT, rt_powf(a, b), 0)                                      \
    X(SILU_MUL, silu_mul, FLOAT, a / (1.f + rt_expf(-a)) * b, 0)                          \
    X(GELU_TANH_MUL, gelu_tanh_mul, FLOAT, rt_gelu_tanhf(a) * b, 0)                            \
    X(GELU_ERF_MUL, gelu_erf_mul, FLOAT, rt_gelu_erff(a) * b, 0)                              \
    X(FMOD, fmod, ARITH, fmodf(a, b), RT_IFMOD(a, b))                                 \
    X(REMAINDER, remainder, ARITH, rt_remainderf(a, b), RT_IREM(a, b))                     \
    X(FLOOR_DIVIDE, floor_divide, ARITH, rt_floordivf(a, b), RT_IFLOORDIV(a, b))              \
    X(TRUNC_DIVIDE, trunc_divide, ARITH, truncf(a / b), RT_ITRUNCDIV(a, b))                   \
    X(ATAN2, atan2, FLOAT, rt_atan2f(a, b), 0)                                         \
    X(COPYSIGN, copysign, FLOAT, copysignf(a, b), 0)                                      \
    X(HYPOT, hypot, FLOAT, sqrtf(a * a + b * b), 0)                                    \
    X(LOGADDEXP, logaddexp, FLOAT, rt_logaddexpf(a, b), 0)                                 \
    X(FMAX, fmax, FLOAT, a != a ? b : (b != b ? a : (a > b ? a : b)), 0)              \
    X(FMIN, fmin, FLOAT, a != a ? b : (b != b ? a : (a < b ? a : b)), 0)              \
    X(EQ, eq, CMP, a == b, 0)                                                       \
    X(NE, ne, CMP, a != b, 0)                                                       \
    X(LT, lt, CMP, a < b, 0)                                                        \
    X(LE, le, CMP, a <= b, 0)                                                       \
    X(GT, gt, CMP, a > b, 0)                                                        \
    X(GE, ge, CMP, a >= b, 0)                                                       \
    X(LOGICAL_AND, logical_and, LOGIC, a && b, 0)                                            \
    X(LOGICAL_OR, logical_or, LOGIC, a || b, 0)                                             \
    X(LOGICAL_XOR, logical_xor, LOGIC, (a != 0) != (b != 0), 0)                              \
    X(BITWISE_AND, bitwise_and, BITS, 0, a & b)                                              \
    X(BITWISE_OR, bitwise_or, BITS, 0, a | b)                                               \
    X(BITWISE_XOR, bitwise_xor, BITS, 0, a ^ b)                                 \
    X(NEXTAFTER, nextafter, FLOAT, nextafterf(a, b), 0)

#define RT_BIN_DEFINE(NAME, name, cls, fexpr, iexpr) RT_BIN_##cls(name, fexpr, iexpr)
RT_BINARY_LIST(RT_BIN_DEFINE)

/* Per op code: its rows by dtype and whether it gives bool. */
static const bin_row_fn *const bin_rows[RT_OP_COUNT] = {
#define RT_BIN_TABLE(NAME, name, cls, fexpr, iexpr) [RT_OP_##NAME] = name##_rows,
    RT_BINARY_LIST(RT_BIN_TABLE)
#undef RT_BIN_TABLE
};
static const char bin_bool_out[RT_OP_COUNT] = {
#define RT_BIN_BOOL(NAME, name, cls, fexpr, iexpr) [RT_OP_##NAME] = name##_bool_out,
    RT_BINARY_LIST(RT_BIN_BOOL)
#undef RT_BIN_BOOL
};

static int64_t bin_out_size(const rt_op *op)
{
    return bin_bool_out[op->code] ? 1 : rt_dtype_size[op->ip.binary.dtype];
}

static void bin_run(const rt_op *op, char *const *arg)
{
    const rt_binary_ints *ip = &op->ip.binary;
    bin_row_fn f = bin_rows[op->code][ip->dtype];
    int64_t isz = rt_dtype_size[ip->dtype], osz = bin_out_size(op);
    const char *a = arg[RT_BINARY_A], *b = arg[RT_BINARY_B];
    char *y = arg[RT_BINARY_OUT];
    rt_space s;
    const int64_t *strides[2] = {ip->a_stride, ip->b_stride};
    rt_collapse(&s, (int)ip->ndim, ip->shape, 2, strides);
    int last = s.ndim - 1;
    int64_t cols = s.shape[last], rows = 1, as = s.stride[0][last], bs = s.stride[1][last];
    for (int d = 0; d < last; d++) rows *= s.shape[d];
    if (rows == 0 || cols == 0) return;
    /* Long single rows are split into chunks so they parallelise too. */
    int64_t chunk = cols > RT_CHUNK ? RT_CHUNK : cols, per_row = (cols + chunk - 1) / chunk;
    int64_t ntasks = rows * per_row;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, t, ntasks, {
        int64_t r = t / per_row, c0 = (t % per_row) * chunk, off[2];
        rt_row_offsets(&s, r, -1, off);
        int64_t len = cols - c0 < chunk ? cols - c0 : chunk;
        f(a + (off[0] + c0 * as) * isz, as, b + (off[1] + c0 * bs) * isz, bs, y + (r * cols + c0) * osz, len);
    });
}

#define RT_BIN_KERNEL(NAME, name, cls, fexpr, iexpr)                                    \
    int rt_k_##name(const rt_op *op, char *const *arg)                            \
    {                                                                             \
        bin_run(op, arg);                                                         \
        return RT_OK;                                                             \
    }
RT_BINARY_LIST(RT_BIN_KERNEL)

int rt_c_binary(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_binary_ints *ip = &op->ip.binary;
    int nd = (int)ip->ndim;
    RT_CHECK(nd <= RT_MAX_NDIM, "ndim %d above %d", nd, RT_MAX_NDIM);
    RT_CHECK(bin_rows[op->code][ip->dtype] != NULL, "%s has no kernel for dtype %d", rt_op_name(op->code),
             (int)ip->dtype);
    int64_t n = 1, isz = rt_dtype_size[ip->dtype];
    for (int d = 0; d < nd; d++) n = rt_mul(n, ip->shape[d]);
    return rt_need(op, avail, RT_BINARY_A, rt_reach(nd, ip->shape, ip->a_stride), isz, "a", msg, msglen) ||
           rt_need(op, avail, RT_BINARY_B, rt_reach(nd, ip->shape, ip->b_stride), isz, "b", msg, msglen) ||
           rt_need(op, avail, RT_BINARY_OUT, n, bin_out_size(op), "out", msg, msglen);
}

/* ---- ternary: where / clamp / lerp, typed, broadcasting ---- */

/* out = f(a, b, c) over `shape`, each input read through its strides (0 broadcasts), out contiguous.
 * WHERE: a is the bool condition, b and c (dtype `dtype`) the two choices; CLAMP: a clamped to
 * [b, c] (NaN bounds and a propagate, as torch); LERP: a + c * (b - a) (f32). */
typedef void (*ter_row_fn)(const char *a, int64_t as, const char *b, int64_t bs, const char *c, int64_t cs,
                           char *y, int64_t n);

#define RT_TER_ROW(fname, TA, T, expr)                                                   \
    RT_SIMD static void fname(const char *a8, int64_t as, const char *b8, int64_t bs,    \
                              const char *c8, int64_t cs, char *y8, int64_t n)           \
    {                                                                                   \
        const TA *a_ = (const TA *)a8;                                                  \
        const T *b_ = (const T *)b8, *c_ = (const T *)c8;                               \
        T *y = (T *)y8;                                                                 \
        if (as == 1 && bs == 1 && cs == 1)                                              \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA a = a_[i];                                                           \
                T b = b_[i], c = c_[i];                                                 \
                y[i] = (T)(expr);                                                       \
            }                                                                           \
        else                                                                            \
            for (int64_t i = 0; i < n; i++) {                                           \
                TA a = a_[i * as];                                                      \
                T b = b_[i * bs], c = c_[i * cs];                                       \
                y[i] = (T)(expr);                                                       \
            }                                                                           \
    }

#define RT_WHERE_EXPR a ? b : c
RT_TER_ROW(where_f32, rt_bool, float, RT_WHERE_EXPR)
RT_TER_ROW(where_i64, rt_bool, int64_t, RT_WHERE_EXPR)
RT_TER_ROW(where_b8, rt_bool, rt_bool, RT_WHERE_EXPR)
RT_TER_ROW(where_i32, rt_bool, int32_t, RT_WHERE_EXPR)
#define RT_CLAMP_EXPR ((a < b ? b : a) > c ? c : (a < b ? b : a)) /* min(max(a, b), c), as torch */
RT_TER_ROW(clamp_f32, float, float, b != b ? b : (c != c ? c : (a != a ? a : RT_CLAMP_EXPR)))
RT_TER_ROW(clamp_i64, int64_t, int64_t, RT_CLAMP_EXPR)
RT_TER_ROW(clamp_i32, int32_t, int32_t, RT_CLAMP_EXPR)
/* torch's lerp: from the nearer end, so weight 1 gives b exactly */
RT_TER_ROW(lerp_f32, float, float, fabsf(c) < 0.5f ? a + c * (b - a) : b - (b - a) * (1.f - c))

/* Per op code: rows by dtype, and the first operand's item size when it is not the dtype's. */
static const ter_row_fn ter_rows[RT_OP_COUNT][RT_DTYPE_COUNT] = {
    [RT_OP_WHERE] = {where_f32, where_i64, where_b8, where_i32},
    [RT_OP_CLAMP_TENSOR] = {clamp_f32, clamp_i64, NULL, clamp_i32},
    [RT_OP_LERP] = {lerp_f32, NULL, NULL, NULL},
};

static int64_t ter_a_size(const rt_op *op)
{
    return op->code == RT_OP_WHERE ? 1 : rt_dtype_size[op->ip.ternary.dtype];
}

static int ternary_run(const rt_op *op, char *const *arg)
{
    const rt_ternary_ints *ip = &op->ip.ternary;
    ter_row_fn f = ter_rows[op->code][ip->dtype];
    int64_t sz = rt_dtype_size[ip->dtype], asz = ter_a_size(op);
    const char *a = arg[RT_TERNARY_A], *b = arg[RT_TERNARY_B], *c = arg[RT_TERNARY_C];
    char *y = arg[RT_TERNARY_OUT];
    rt_space s;
    const int64_t *strides[3] = {ip->a_stride, ip->b_stride, ip->c_stride};
    rt_collapse(&s, (int)ip->ndim, ip->shape, 3, strides);
    int last = s.ndim - 1;
    int64_t cols = s.shape[last], rows = 1;
    for (int d = 0; d < last; d++) rows *= s.shape[d];
    if (rows == 0 || cols == 0) return RT_OK;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, {
        int64_t off[3];
        rt_row_offsets(&s, r, -1, off);
        f(a + off[0] * asz, s.stride[0][last], b + off[1] * sz, s.stride[1][last], c + off[2] * sz,
          s.stride[2][last], y + r * cols * sz, cols);
    });
    return RT_OK;
}

int rt_k_where(const rt_op *op, char *const *arg) { return ternary_run(op, arg); }
int rt_k_clamp_tensor(const rt_op *op, char *const *arg) { return ternary_run(op, arg); }
int rt_k_lerp(const rt_op *op, char *const *arg) { return ternary_run(op, arg); }

int rt_c_ternary(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_ternary_ints *ip = &op->ip.ternary;
    int nd = (int)ip->ndim;
    RT_CHECK(nd <= RT_MAX_NDIM, "ndim %d above %d", nd, RT_MAX_NDIM);
    RT_CHECK(ter_rows[op->code][ip->dtype] != NULL, "%s has no kernel for dtype %d", rt_op_name(op->code),
             (int)ip->dtype);
    int64_t n = 1, sz = rt_dtype_size[ip->dtype];
    for (int d = 0; d < nd; d++) n = rt_mul(n, ip->shape[d]);
    return rt_need(op, avail, RT_TERNARY_A, rt_reach(nd, ip->shape, ip->a_stride), ter_a_size(op), "a", msg, msglen) ||
           rt_need(op, avail, RT_TERNARY_B, rt_reach(nd, ip->shape, ip->b_stride), sz, "b", msg, msglen) ||
           rt_need(op, avail, RT_TERNARY_C, rt_reach(nd, ip->shape, ip->c_stride), sz, "c", msg, msglen) ||
           rt_need(op, avail, RT_TERNARY_OUT, n, sz, "out", msg, msglen);
}
