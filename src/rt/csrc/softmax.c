/* Softmax over the last dim: max-subtracted, one row at a time in cache. */
#include "rt_kernel.h"

/* x may equal y. */
RT_SIMD static void softmax_row(const float *x, float *y, int64_t n)
{
    /* "omp simd reduction" licenses the reordered (vector) sum that -O3 alone won't. */
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) {
        y[i] = rt_expf(x[i] - m);
        sum += y[i];
    }
    float inv = 1.f / sum;
    for (int64_t i = 0; i < n; i++) y[i] *= inv;
}

int rt_k_softmax(const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[0];
    float *y = (float *)arg[1];
    int64_t rows = op->ip[0], cols = op->ip[1];
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, softmax_row(x + r * cols, y + r * cols, cols););
    return RT_OK;
}

int rt_c_softmax(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    if (rt_check_nargs(op, 2, msg, msglen) || rt_check_dims(op, 0, 2, msg, msglen)) return 1;
    int64_t n = rt_mul(op->ip[0], op->ip[1]);
    return rt_need(op, avail, 0, n, 4, "x", msg, msglen) ||
           rt_need(op, avail, 1, n, 4, "out", msg, msglen);
}
