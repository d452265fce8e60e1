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
    const float *x = (const float *)arg[RT_LAYER_NORM_X], *g = (const float *)arg[RT_LAYER_NORM_GAMMA],
                *b = (const float *)arg[RT_LAYER_NORM_BETA];
    float *y = (float *)arg[RT_LAYER_NORM_OUT];
    int64_t rows = op->ip.layer_norm.rows, cols = op->ip.layer_norm.cols;
    double eps = op->fp.layer_norm.eps;
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
    const float *x = (const float *)arg[RT_ADD_LAYER_NORM_X],
                *res = (const float *)arg[RT_ADD_LAYER_NORM_RESIDUAL],
                *g = (const float *)arg[RT_ADD_LAYER_NORM_GAMMA],
                *b = (const float *)arg[RT_ADD_LAYER_NORM_BETA];
    float *sum = (float *)arg[RT_ADD_LAYER_NORM_SUM], *y = (float *)arg[RT_ADD_LAYER_NORM_OUT];
    int64_t rows = op->ip.add_layer_norm.rows, cols = op->ip.add_layer_norm.cols;
    double eps = op->fp.add_layer_norm.eps;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, {
        int64_t o = r * cols;
        add_layer_norm_row(x + o, res + o, g, b, (sum ? sum : y) + o, y + o, cols, eps);
    });
    return RT_OK;
}

/* Both norms: rows/cols/eps, x, gamma, beta and out (their operand indices given). */
static int check_norm(const rt_op *op, const int64_t *avail, int64_t rows, int64_t cols, double eps,
                      const int idx[4], char *msg, size_t msglen)
{
    RT_CHECK(cols > 0 || rows == 0, "cols must be positive");
    RT_CHECK(eps >= 0., "eps must be >= 0");
    int64_t n = rt_mul(rows, cols);
    return rt_need(op, avail, idx[0], n, 4, "x", msg, msglen) ||
           rt_need_opt(op, avail, idx[1], cols, 4, "gamma", msg, msglen) ||
           rt_need_opt(op, avail, idx[2], cols, 4, "beta", msg, msglen) ||
           rt_need(op, avail, idx[3], n, 4, "out", msg, msglen);
}

int rt_c_add_layer_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_add_layer_norm_ints *ip = &op->ip.add_layer_norm;
    static const int idx[4] = {RT_ADD_LAYER_NORM_X, RT_ADD_LAYER_NORM_GAMMA, RT_ADD_LAYER_NORM_BETA,
                               RT_ADD_LAYER_NORM_OUT};
    if (check_norm(op, avail, ip->rows, ip->cols, op->fp.add_layer_norm.eps, idx, msg, msglen)) return 1;
    int64_t n = rt_mul(ip->rows, ip->cols);
    return rt_need(op, avail, RT_ADD_LAYER_NORM_RESIDUAL, n, 4, "residual", msg, msglen) ||
           rt_need_opt(op, avail, RT_ADD_LAYER_NORM_SUM, n, 4, "sum", msg, msglen);
}

int rt_c_layer_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    static const int idx[4] = {RT_LAYER_NORM_X, RT_LAYER_NORM_GAMMA, RT_LAYER_NORM_BETA, RT_LAYER_NORM_OUT};
    return check_norm(op, avail, op->ip.layer_norm.rows, op->ip.layer_norm.cols, op->fp.layer_norm.eps,
                      idx, msg, msglen);
}

/* ---- RMS norm (Llama's): x / sqrt(mean(x^2) + eps) * gamma; the sum of squares in double, like
 * layer_norm_row's statistics. ---- */
RT_SIMD static void rms_norm_row(const float *x, const float *gamma, float *y, int64_t n, double eps)
{
    double ss = 0.;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = (float)(1. / sqrt(ss / (double)n + eps));
    if (gamma)
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * r * gamma[i];
    else
        for (int64_t i = 0; i < n; i++) y[i] = x[i] * r;
}

int rt_k_rms_norm(const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[RT_RMS_NORM_X], *g = (const float *)arg[RT_RMS_NORM_GAMMA];
    float *y = (float *)arg[RT_RMS_NORM_OUT];
    const rt_rms_norm_ints *ip = &op->ip.rms_norm;
    int64_t rows = ip->rows, cols = ip->cols;
    double eps = op->fp.rms_norm.eps;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows,
           rms_norm_row(x + r / ip->group * ip->x_gs + r % ip->group * ip->x_rs, g, y + r * cols, cols, eps););
    return RT_OK;
}

int rt_c_rms_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_rms_norm_ints *ip = &op->ip.rms_norm;
    RT_CHECK(ip->cols > 0 || ip->rows == 0, "cols must be positive");
    RT_CHECK(op->fp.rms_norm.eps >= 0., "eps must be >= 0");
    RT_CHECK(ip->group >= 1 && ip->rows % ip->group == 0, "rows %lld are not groups of %lld",
             (long long)ip->rows, (long long)ip->group);
    int64_t n = rt_mul(ip->rows, ip->cols);
    int64_t shape[3] = {ip->rows / ip->group, ip->group, ip->cols}, stride[3] = {ip->x_gs, ip->x_rs, 1};
    return rt_need(op, avail, RT_RMS_NORM_X, rt_reach(3, shape, stride), 4, "x", msg, msglen) ||
           rt_need_opt(op, avail, RT_RMS_NORM_GAMMA, ip->cols, 4, "gamma", msg, msglen) ||
           rt_need(op, avail, RT_RMS_NORM_OUT, n, 4, "out", msg, msglen);
}
