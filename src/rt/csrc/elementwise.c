/* Unary ops (one X-macro family) and broadcasting binary ops. */
#include "rt_kernel.h"

/* Chunk size for parallel elementwise loops: big enough to amortise the call. */
#define RT_CHUNK 16384

/* ---- unary: x may equal y (in place), so no restrict here ---- */

#define RT_UNARY_DEF(name, expr)                                                  \
    RT_SIMD void rt_row_##name(const float *x_, float *y, int64_t n)              \
    {                                                                             \
        for (int64_t i = 0; i < n; i++) {                                         \
            float x = x_[i];                                                      \
            y[i] = (expr);                                                        \
        }                                                                         \
    }                                                                             \
    int rt_k_##name(const rt_op *op, char *const *arg)                            \
    {                                                                             \
        unary_run(rt_row_##name, (const float *)arg[RT_UNARY_X], (float *)arg[RT_UNARY_OUT], op->ip.unary.n); \
        return RT_OK;                                                             \
    }

typedef void (*row_fn)(const float *x, float *y, int64_t n);

static void unary_run(row_fn f, const float *x, float *y, int64_t n)
{
    RT_FOR(n >= RT_PAR_MIN_ELEMS, c, (n + RT_CHUNK - 1) / RT_CHUNK, {
        int64_t lo = c * RT_CHUNK, len = n - lo < RT_CHUNK ? n - lo : RT_CHUNK;
        f(x + lo, y + lo, len);
    });
}

RT_UNARY_LIST(RT_UNARY_DEF)

int rt_c_unary(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    int64_t n = op->ip.unary.n;
    return rt_need(op, avail, RT_UNARY_X, n, 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_UNARY_OUT, n, 4, "out", msg, msglen);
}

/* ---- binary ---- */

/* One inner row per (op, stride case): unit/unit, unit/broadcast, broadcast/unit,
 * and any strides. out may alias a unit-stride input, so no restrict. */
#define RT_BIN_ROWS(name, OP)                                                            \
    RT_SIMD static void name##_row(const float *a, int64_t as, const float *b, int64_t bs, \
                                   float *y, int64_t n)                                 \
    {                                                                                   \
        if (as == 1 && bs == 1)                                                         \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] OP b[i];                        \
        else if (as == 1 && bs == 0) {                                                  \
            float bv = b[0];                                                            \
            for (int64_t i = 0; i < n; i++) y[i] = a[i] OP bv;                          \
        } else if (as == 0 && bs == 1) {                                                \
            float av = a[0];                                                            \
            for (int64_t i = 0; i < n; i++) y[i] = av OP b[i];                          \
        } else                                                                          \
            for (int64_t i = 0; i < n; i++) y[i] = a[i * as] OP b[i * bs];              \
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

RT_BIN_ROWS(add, +)
RT_BIN_ROWS(sub, -)
RT_BIN_ROWS(mul, *)
RT_BIN_ROWS(div, /)

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
