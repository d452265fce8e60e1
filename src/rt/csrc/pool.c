/* MAX_POOL and AVG_POOL: 2-D pooling windows (strided, padded, dilated, or adaptive) over x and out read
 * and written through their (n, c, h, w) strides. Each output row and column has its run of input rows
 * and columns worked out once per call; two loop shapes keep the inner loop contiguous: across channels
 * when they are the unit-stride dim of x and out (NHWC), else across a window's columns (NCHW). */
#include <math.h>
#include <stdlib.h>

#include "rt_kernel.h"

/* The input positions one output position reads: first + k * step for k < n, and the divisor an
 * average over the window uses (its size, counted with or without the padding). */
typedef struct {
    int64_t first, n, step, count;
} run;

static void runs(const rt_pool_ints *ip, int axis, run *out)
{
    int64_t in = axis ? ip->W : ip->H, o = axis ? ip->OW : ip->OH, k = axis ? ip->KW : ip->KH;
    int64_t s = axis ? ip->sw : ip->sh, lo = axis ? ip->pl : ip->pt, hi = axis ? ip->pr : ip->pb;
    int64_t d = axis ? ip->dw : ip->dh;
    for (int64_t i = 0; i < o; i++) {
        run *r = &out[i];
        if (ip->adaptive) {
            r->first = i * in / o;
            r->n = ((i + 1) * in + o - 1) / o - r->first;
            r->step = 1;
            r->count = r->n;
            continue;
        }
        int64_t start = i * s - lo;
        int64_t k0 = start < 0 ? (-start + d - 1) / d : 0;
        int64_t k1 = start >= in ? -1 : start + (k - 1) * d < in ? k - 1 : (in - 1 - start) / d; /* last k inside */
        r->first = start + k0 * d;
        r->n = k1 >= k0 ? k1 - k0 + 1 : 0;
        r->step = d;
        int64_t end = start + k < in + hi ? start + k : in + hi; /* averages have no dilation */
        r->count = ip->count_pad ? end - start : r->n;
    }
}

/* One NHWC output row (n, oh): every column's window, whole channel rows at a time. One function per
 * row, not per window position: its loops inline into each ISA's copy and vectorise across channels. */
RT_SIMD static void nhwc_row(const rt_pool_ints *ip, int is_max, float init, const float *x, float *y, int64_t n,
                             int64_t oh, const run *h, const run *rw)
{
    int64_t C = ip->C;
    for (int64_t ow = 0; ow < ip->OW; ow++) {
        const run *w = &rw[ow];
        float *yo = y + n * ip->o_sn + oh * ip->o_sh + ow * ip->o_sw;
        for (int64_t c = 0; c < C; c++) yo[c] = init;
        for (int64_t a = 0; a < h->n; a++)
            for (int64_t b = 0; b < w->n; b++) {
                const float *xr = x + n * ip->x_sn + (h->first + a * h->step) * ip->x_sh +
                                  (w->first + b * w->step) * ip->x_sw;
                if (is_max)
                    for (int64_t c = 0; c < C; c++) yo[c] = xr[c] > yo[c] || xr[c] != xr[c] ? xr[c] : yo[c];
                else
                    for (int64_t c = 0; c < C; c++) yo[c] += xr[c];
            }
        if (!is_max) {
            float scale = 1.f / (float)(ip->divisor ? ip->divisor : h->count * w->count);
            for (int64_t c = 0; c < C; c++) yo[c] *= scale;
        }
    }
}

static int pool(int is_max, const rt_op *op, char *const *arg)
{
    const rt_pool_ints *ip = &op->ip.pool;
    const float *x = (const float *)arg[RT_POOL_X];
    float *y = (float *)arg[RT_POOL_OUT];
    run *rh = malloc(sizeof(run) * (size_t)(ip->OH + ip->OW));
    if (!rh) return RT_ERR_NOMEM;
    run *rw = rh + ip->OH;
    runs(ip, 0, rh);
    runs(ip, 1, rw);
    int64_t C = ip->C, work = ip->N * C * ip->OH * ip->OW;
    float init = is_max ? -INFINITY : 0.f;
    if (ip->x_sc == 1 && ip->o_sc == 1 && C > 1) { /* NHWC: whole channel rows at a time */
        RT_FOR(work >= RT_PAR_MIN_ELEMS, r, ip->N * ip->OH,
               { nhwc_row(ip, is_max, init, x, y, r / ip->OH, r % ip->OH, &rh[r % ip->OH], rw); });
    } else { /* one (n, c) plane at a time */
        RT_FOR(work >= RT_PAR_MIN_ELEMS, p, ip->N * C, {
            int64_t n = p / C, c = p % C;
            const float *xp = x + n * ip->x_sn + c * ip->x_sc;
            float *yp = y + n * ip->o_sn + c * ip->o_sc;
            for (int64_t oh = 0; oh < ip->OH; oh++)
                for (int64_t ow = 0; ow < ip->OW; ow++) {
                    const run *h = &rh[oh], *w = &rw[ow];
                    float acc = init;
                    for (int64_t a = 0; a < h->n; a++) {
                        const float *xr = xp + (h->first + a * h->step) * ip->x_sh + w->first * ip->x_sw;
                        int64_t ws = w->step * ip->x_sw;
                        for (int64_t b = 0; b < w->n; b++) {
                            float v = xr[b * ws];
                            acc = is_max ? (v > acc || v != v ? v : acc) : acc + v;
                        }
                    }
                    if (!is_max) acc /= (float)(ip->divisor ? ip->divisor : h->count * w->count);
                    yp[oh * ip->o_sh + ow * ip->o_sw] = acc;
                }
        });
    }
    free(rh);
    return RT_OK;
}

int rt_k_max_pool(const rt_op *op, char *const *arg) { return pool(1, op, arg); }
int rt_k_avg_pool(const rt_op *op, char *const *arg) { return pool(0, op, arg); }

int rt_c_pool(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_pool_ints *ip = &op->ip.pool;
    RT_CHECK(ip->adaptive || (ip->KH >= 1 && ip->KW >= 1 && ip->sh >= 1 && ip->sw >= 1 && ip->dh >= 1 && ip->dw >= 1),
             "kernel, strides and dilations must be at least 1");
    RT_CHECK(!ip->adaptive || (ip->H >= 1 && ip->W >= 1) || ip->N * ip->C == 0,
             "adaptive pooling needs a non-empty input");
    int64_t xs[4] = {ip->N, ip->C, ip->H, ip->W}, os[4] = {ip->N, ip->C, ip->OH, ip->OW};
    int64_t xst[4] = {ip->x_sn, ip->x_sc, ip->x_sh, ip->x_sw}, ost[4] = {ip->o_sn, ip->o_sc, ip->o_sh, ip->o_sw};
    /* written once each: outputs that do not overlap (which bounds the work by their bytes) */
    RT_CHECK(rt_disjoint(4, os, ost, 1), "output elements overlap");
    /* the kernel reads only positions inside [0, H) x [0, W) */
    return rt_need(op, avail, RT_POOL_X, rt_reach(4, xs, xst), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_POOL_OUT, rt_reach(4, os, ost), 4, "out", msg, msglen);
}
