/* Layer norm over the last dim (biased variance, affine optional), alone or after a
 * residual add. Rows are processed in place-safe passes, so operands may alias. */
#include "rt_kernel.h"

/* Two passes over a row that stays in cache: mean, then centred variance. Statistics
 * and the normalisation run in double: with a small variance (rstd in the hundreds) a
 * float mean's rounding error is amplified past 1e-5; the rows are in L1, so it is cheap.
 * "omp simd reduction" licenses the reordered (vector) sums that -O3 alone won't. */
RT_SIMD static void layer_norm_row(const float *x, const float *gamma, const float *beta,
                                   float *y, int64_t n, double eps)
{
    double sum = 0.;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += x[i];
    double mean = sum / (double)n, var = 0.;
#pragma omp simd reduction(+ : var)
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        var += d * d;
    }
    double rstd = 1. / sqrt(var / (double)n + eps);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)((x[i] - mean) * rstd);
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
    double eps = op->fp[0];
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows,
           layer_norm_row(x + r * cols, g, b, y + r * cols, cols, eps););
    return RT_OK;
}

/* d = x + r, then out = layer_norm(d); d is the sum operand or out itself. */
RT_SIMD static void add_layer_norm_row(const float *x, const float *r, const float *gamma,
                                       const float *beta, float *d, float *y, int64_t n,
                                       double eps)
{
    for (int64_t i = 0; i < n; i++) d[i] = x[i] + r[i];
    layer_norm_row(d, gamma, beta, y, n, eps);
}

int rt_k_add_layer_norm(const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[0], *res = (const float *)arg[1],
                *g = (const float *)arg[2], *b = (const float *)arg[3];
    float *sum = (float *)arg[4], *y = (float *)arg[5];
    int64_t rows = op->ip[0], cols = op->ip[1];
    double eps = op->fp[0];
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, {
        int64_t o = r * cols;
        add_layer_norm_row(x + o, res + o, g, b, (sum ? sum : y) + o, y + o, cols, eps);
    });
    return RT_OK;
}

/* Both norms: operand count, rows/cols/eps, and gamma/beta (at `affine`) plus the out operand. */
static int check_norm(const rt_op *op, const int64_t *avail, int nargs, int affine, char *msg,
                      size_t msglen)
{
    if (rt_check_nargs(op, nargs, msg, msglen) || rt_check_dims(op, 0, 2, msg, msglen)) return 1;
    RT_CHECK(op->ip[1] > 0 || op->ip[0] == 0, "cols must be positive");
    RT_CHECK(op->fp[0] >= 0., "eps must be >= 0");
    int64_t n = rt_mul(op->ip[0], op->ip[1]);
    return rt_need(op, avail, 0, n, 4, "x", msg, msglen) ||
           rt_need_opt(op, avail, affine, op->ip[1], 4, "gamma", msg, msglen) ||
           rt_need_opt(op, avail, affine + 1, op->ip[1], 4, "beta", msg, msglen) ||
           rt_need(op, avail, nargs - 1, n, 4, "out", msg, msglen);
}

int rt_c_add_layer_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    if (check_norm(op, avail, 6, 2, msg, msglen)) return 1;
    int64_t n = rt_mul(op->ip[0], op->ip[1]);
    return rt_need(op, avail, 1, n, 4, "residual", msg, msglen) ||
           rt_need_opt(op, avail, 4, n, 4, "sum", msg, msglen);
}

int rt_c_layer_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    return check_norm(op, avail, 4, 1, msg, msglen);
}
