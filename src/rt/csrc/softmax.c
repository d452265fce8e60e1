/* Softmax over the last dim: max-subtracted, one row at a time in cache. */
#include "rt_kernel.h"

/* x may equal y. */
RT_SIMD static void softmax_row(const float *x, float *y, int64_t n)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    float sum = 0.f;
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
#pragma omp parallel for num_threads(rt_nthreads) if (rows * cols >= RT_PAR_MIN_ELEMS && rows > 1)
    for (int64_t r = 0; r < rows; r++) softmax_row(x + r * cols, y + r * cols, cols);
    return RT_OK;
}

int rt_c_softmax(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    if (rt_check_nargs(op, 2, msg, msglen) || rt_check_dims(op, 0, 2, msg, msglen)) return 1;
    int64_t n = rt_mul(op->ip[0], op->ip[1]);
    return rt_need(op, avail, 0, n, 4, "x", msg, msglen) ||
           rt_need(op, avail, 1, n, 4, "out", msg, msglen);
}
