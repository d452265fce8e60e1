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

/* ---- binary ---- */

/* One inner row per (op, stride case): unit/unit, unit/broadcast, broadcast/unit,
 * and any strides. out may alias a unit-stride input, so no restrict. */
#define RT_BIN_ROWS(name, expr)                                                          \
    RT_SIMD static void name##_row(const float *a_, int64_t as, const float *b_, int64_t bs, \
                                   float *y, int64_t n)                                 \
    {                                                                                   \
        if (as == 1 && bs == 1)                                                         \
            for (int64_t i = 0; i < n; i++) {                                           \
                float a = a_[i], b = b_[i];                                             \
                y[i] = (expr);                                                          \
            }                                                                           \
        else if (as == 1 && bs == 0) {                                                  \
            float b = b_[0];                                                            \
            for (int64_t i = 0; i < n; i++) {                                           \
                float a = a_[i];                                                        \
                y[i] = (expr);                                                          \
            }                                                                           \
        } else if (as == 0 && bs == 1) {                                                \
            float a = a_[0];                                                            \
            for (int64_t i = 0; i < n; i++) {                                           \
                float b = b_[i];                                                        \
                y[i] = (expr);                                                          \
            }                                                                           \
        } else                                                                          \
            for (int64_t i = 0; i < n; i++) {                                           \
                float a = a_[i * as], b = b_[i * bs];                                   \
                y[i] = (expr);                                                          \
            }                                                                           \
    }                                                                                   \
    int rt_k_##name(const rt_op *op, char *const *arg)                                  \
    {                                                                                   \
        bin_run(name##_row, &op->ip.binary, (const float *)arg[RT_BINARY_A], (const float *)arg[RT_BINARY_B], \
                (float *)arg[RT_BINARY_OUT]);                                          \
        return RT_OK;                                                                   \
    }

typedef void (*bin_row_fn)(const float *a, int64_t as, const float *b, int64_t bs, float *y,
                           int64_t n);

static void bin_run(bin_row_fn f, const rt_binary_ints *ip, const float *a, const float *b, float *y)
{
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
        f(a + off[0] + c0 * as, as, b + off[1] + c0 * bs, bs, y + r * cols + c0, len);
    });
}

/* maximum / minimum propagate NaN, as torch does. */
#define RT_BINARY_LIST(X)                                                       \
    X(add, a + b)                                                               \
    X(sub, a - b)                                                               \
    X(mul, a * b)                                                               \
    X(div, a / b)                                                               \
    X(maximum, a != a ? a : (b != b ? b : (a > b ? a : b)))                     \
    X(minimum, a != a ? a : (b != b ? b : (a < b ? a : b)))                     \
    X(pow_tensor, rt_powf(a, b))                                                \
    X(silu_mul, a / (1.f + rt_expf(-a)) * b)                                    \
    X(gelu_tanh_mul, rt_gelu_tanhf(a) * b)                                      \
    X(gelu_erf_mul, rt_gelu_erff(a) * b)
RT_BINARY_LIST(RT_BIN_ROWS)

int rt_c_binary(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_binary_ints *ip = &op->ip.binary;
    int nd = (int)ip->ndim;
    RT_CHECK(nd <= RT_MAX_NDIM, "ndim %d above %d", nd, RT_MAX_NDIM);
    int64_t n = 1;
    for (int d = 0; d < nd; d++) n = rt_mul(n, ip->shape[d]);
    return rt_need(op, avail, RT_BINARY_A, rt_reach(nd, ip->shape, ip->a_stride), 4, "a", msg, msglen) ||
           rt_need(op, avail, RT_BINARY_B, rt_reach(nd, ip->shape, ip->b_stride), 4, "b", msg, msglen) ||
           rt_need(op, avail, RT_BINARY_OUT, n, 4, "out", msg, msglen);
}
