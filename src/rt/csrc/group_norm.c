/* GROUP_NORM: each (n, group) block of C/G channels by S positions normalised by its own mean and
 * (biased) variance, then the per-channel affine; x and out read and written through their (n, c, s)
 * strides, so an NHWC tensor (channels of a group contiguous) needs no conversion. A block is walked
 * as [A, B] rows with B the unit-stride side: positions x channels (NHWC) or channels x positions
 * (NCHW). Statistics in double, as the layer norm (layernorm.c). */
#include <math.h>

#include "rt_kernel.h"

typedef struct {
    int64_t a, b;           /* rows, row length */
    int64_t xa, xb, oa, ob; /* x's and out's strides along them */
    int channel_is_b;       /* the channel index runs along b (NHWC), else along a */
} block;

RT_SIMD static double row_sum(const float *x, int64_t n, int64_t s)
{
    double acc = 0.;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; i++) acc += x[i * s];
    return acc;
}

RT_SIMD static double row_sq(const float *x, int64_t n, int64_t s, double mean)
{
    double acc = 0.;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < n; i++) {
        double d = x[i * s] - mean;
        acc += d * d;
    }
    return acc;
}

/* y[i] = (x[i] - mean) * rstd * g + b along a row; g and b per item (gs, bs = 1) or one value (0). */
RT_SIMD static void row_out(const float *x, int64_t xs, float *y, int64_t ys, int64_t n, double mean, double rstd,
                            const float *g, const float *b, int64_t step)
{
    for (int64_t i = 0; i < n; i++) {
        float v = (float)((x[i * xs] - mean) * rstd);
        if (g) v *= g[i * step];
        if (b) v += b[i * step];
        y[i * ys] = v;
    }
}

int rt_k_group_norm(const rt_op *op, char *const *arg)
{
    const rt_group_norm_ints *ip = &op->ip.group_norm;
    const float *x = (const float *)arg[RT_GROUP_NORM_X], *g = (const float *)arg[RT_GROUP_NORM_GAMMA],
                *bt = (const float *)arg[RT_GROUP_NORM_BETA];
    float *y = (float *)arg[RT_GROUP_NORM_OUT];
    int64_t cg = ip->C / ip->G;
    int nhwc = ip->x_sc == 1 && ip->S > 1;
    block k = nhwc ? (block){ip->S, cg, ip->x_ss, 1, ip->o_ss, ip->o_sc, 1}
                   : (block){cg, ip->S, ip->x_sc, ip->x_ss, ip->o_sc, ip->o_ss, 0};
    double eps = op->fp.group_norm.eps, count = (double)(cg * ip->S);
    RT_FOR(ip->N * ip->C * ip->S >= RT_PAR_MIN_ELEMS, t, ip->N * ip->G, {
        int64_t n = t / ip->G, c0 = t % ip->G * cg;
        const float *xb = x + n * ip->x_sn + c0 * ip->x_sc;
        float *yb = y + n * ip->o_sn + c0 * ip->o_sc;
        double sum = 0., sq = 0.;
        for (int64_t i = 0; i < k.a; i++) sum += row_sum(xb + i * k.xa, k.b, k.xb);
        double mean = count > 0 ? sum / count : 0.;
        for (int64_t i = 0; i < k.a; i++) sq += row_sq(xb + i * k.xa, k.b, k.xb, mean);
        double rstd = 1. / sqrt((count > 0 ? sq / count : 0.) + eps);
        for (int64_t i = 0; i < k.a; i++) {
            int64_t c = c0 + (k.channel_is_b ? 0 : i);  /* the first channel of this row */
            row_out(xb + i * k.xa, k.xb, yb + i * k.oa, k.ob, k.b, mean, rstd, g ? g + c : NULL, bt ? bt + c : NULL,
                    k.channel_is_b);
        }
    });
    return RT_OK;
}

int rt_c_group_norm(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_group_norm_ints *ip = &op->ip.group_norm;
    RT_CHECK(ip->G >= 1 && ip->C % ip->G == 0, "%lld channels do not split into %lld groups", (long long)ip->C,
             (long long)ip->G);
    int64_t shape[3] = {ip->N, ip->C, ip->S}, xs[3] = {ip->x_sn, ip->x_sc, ip->x_ss}, os[3] = {ip->o_sn, ip->o_sc, ip->o_ss};
    /* written once each: outputs that do not overlap (which bounds the work by their bytes) */
    RT_CHECK(rt_disjoint(3, shape, os, 1), "output elements overlap");
    return rt_need(op, avail, RT_GROUP_NORM_X, rt_reach(3, shape, xs), 4, "x", msg, msglen) ||
           rt_need_opt(op, avail, RT_GROUP_NORM_GAMMA, ip->C, 4, "gamma", msg, msglen) ||
           rt_need_opt(op, avail, RT_GROUP_NORM_BETA, ip->C, 4, "beta", msg, msglen) ||
           rt_need(op, avail, RT_GROUP_NORM_OUT, rt_reach(3, shape, os), 4, "out", msg, msglen);
}
