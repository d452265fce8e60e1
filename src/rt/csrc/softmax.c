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

/* Each row of the SOFTMAX family's [rows, cols] operand through one row function. */
static int each_row(const rt_op *op, char *const *arg, void (*row)(const float *, float *, int64_t))
{
    const float *x = (const float *)arg[RT_SOFTMAX_X];
    float *y = (float *)arg[RT_SOFTMAX_OUT];
    int64_t rows = op->ip.softmax.rows, cols = op->ip.softmax.cols;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, row(x + r * cols, y + r * cols, cols););
    return RT_OK;
}

int rt_k_softmax(const rt_op *op, char *const *arg) { return each_row(op, arg, softmax_row); }

int rt_c_softmax(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    RT_CHECK(op->ip.softmax.cols > 0 || op->ip.softmax.rows == 0, "cols must be positive");
    int64_t n = rt_mul(op->ip.softmax.rows, op->ip.softmax.cols);
    return rt_need(op, avail, RT_SOFTMAX_X, n, 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_SOFTMAX_OUT, n, 4, "out", msg, msglen);
}

/* log_softmax: x - max - log(sum exp(x - max)); x may equal y. */
RT_SIMD static void log_softmax_row(const float *x, float *y, int64_t n)
{
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    m = m == -INFINITY || m == INFINITY ? (m == m ? m : 0.f) : m;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += rt_expf(x[i] - m);
    float shift = m + rt_logf(sum);
    for (int64_t i = 0; i < n; i++) y[i] = x[i] - shift;
}

int rt_k_log_softmax(const rt_op *op, char *const *arg) { return each_row(op, arg, log_softmax_row); }
