/* Layer norm over the last dim (biased variance, affine optional). */
#include "rt_kernel.h"

/* Two passes over a row that stays in cache: mean, then centred variance (stable). */
RT_SIMD static void layer_norm_row(const float *x, const float *gamma, const float *beta,
                                   float *y, int64_t n, float eps)
{
    float sum = 0.f;
    for (int64_t i = 0; i < n; i++) sum += x[i];
    float mean = sum / (float)n, var = 0.f;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - mean;
        var += d * d;
    }
    float rstd = 1.f / sqrtf(var / (float)n + eps);
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - mean) * rstd;
        if (gamma) v *= gamma[i];
        if (beta) v += beta[i];
        y[i] = v;
    }
}

int rt_k_layer_norm(const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[0], *g = (const float *)arg[1], *b = (const float *)arg[2];
    float *y = (float *)arg[3];
    int64_t rows = op->ip[0], cols = op->ip[1];
    float eps = (float)op->fp[0];
#pragma omp parallel for num_threads(rt_nthreads) if (rows * cols >= RT_PAR_MIN_ELEMS && rows > 1)
    for (int64_t r = 0; r < rows; r++) layer_norm_row(x + r * cols, g, b, y + r * cols, cols, eps);
    return RT_OK;
}

int rt_c_layer_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    if (rt_check_nargs(op, 4, msg, msglen) || rt_check_dims(op, 0, 2, msg, msglen)) return 1;
    RT_CHECK(op->ip[1] > 0 || op->ip[0] == 0, "cols must be positive");
    RT_CHECK(op->fp[0] >= 0., "eps must be >= 0");
    int64_t n = rt_mul(op->ip[0], op->ip[1]);
    return rt_need(op, avail, 0, n, 4, "x", msg, msglen) ||
           rt_need_opt(op, avail, 1, op->ip[1], 4, "gamma", msg, msglen) ||
           rt_need_opt(op, avail, 2, op->ip[1], 4, "beta", msg, msglen) ||
           rt_need(op, avail, 3, n, 4, "out", msg, msglen);
}
