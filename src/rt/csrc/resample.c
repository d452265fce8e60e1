/* RESAMPLE: torch's upsample_nearest2d / _upsample_nearest_exact2d / upsample_bilinear2d, with x and out
 * read and written through their (n, c, h, w) strides. Source indices and blend weights are worked
 * out once per call per output row and column, in float as ATen's CPU kernels do (so indices match
 * torch's exactly); the inner loop runs across channels when they are the unit-stride dim of x and
 * out (NHWC), else across a row's columns. */
#include <math.h>
#include <stdlib.h>

#include "rt_kernel.h"

/* Output position i reads source positions i0 and i1 blended by l0 and l1 (nearest: i1 = i0, l1 = 0). */
typedef struct {
    int64_t i0, i1;
    float l0, l1;
} tap;

/* floor(f) as a source index, at most in - 1 (f >= 0; converted only once in range). */
static int64_t index_of(float f, int64_t in) { return f >= (float)(in - 1) ? in - 1 : (int64_t)floorf(f); }

static void taps(const rt_resample_ints *ip, float scale, int axis, tap *t)
{
    int64_t in = axis ? ip->W : ip->H, out = axis ? ip->OW : ip->OH;
    for (int64_t i = 0; i < out; i++) {
        tap *p = &t[i];
        p->l0 = 1.f, p->l1 = 0.f;
        if (ip->mode == RT_RESAMPLE_NEAREST) {
            p->i0 = out == in ? i : out == 2 * in ? i >> 1 : index_of((float)i * scale, in);
        } else if (ip->mode == RT_RESAMPLE_NEAREST_EXACT) {
            p->i0 = index_of(((float)i + 0.5f) * scale, in);
        } else {
            float src = ip->align_corners ? scale * (float)i : scale * ((float)i + 0.5f) - 0.5f;
            if (src < 0.f) src = 0.f;
            p->i0 = index_of(src, in);
            float l = src - (float)p->i0;
            p->l1 = l < 0.f ? 0.f : l > 1.f ? 1.f : l;
            p->l0 = 1.f - p->l1;
        }
        p->i1 = p->i0 < in - 1 && ip->mode == RT_RESAMPLE_BILINEAR ? p->i0 + 1 : p->i0;
    }
}

/* y[0, n) = the blend of four channel rows (NHWC). */
RT_SIMD static void blend4(float *y, const float *a, const float *b, const float *c, const float *d, float wa,
                           float wb, float wc, float wd, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i];
}

int rt_k_resample(const rt_op *op, char *const *arg)
{
    const rt_resample_ints *ip = &op->ip.resample;
    const float *x = (const float *)arg[RT_RESAMPLE_X];
    float *y = (float *)arg[RT_RESAMPLE_OUT];
    tap *th = malloc(sizeof(tap) * (size_t)(ip->OH + ip->OW));
    if (!th) return RT_ERR_NOMEM;
    tap *tw = th + ip->OH;
    taps(ip, (float)op->fp.resample.scale_h, 0, th);
    taps(ip, (float)op->fp.resample.scale_w, 1, tw);
    int64_t C = ip->C, work = ip->N * C * ip->OH * ip->OW;
    int nearest = ip->mode != RT_RESAMPLE_BILINEAR; /* a copy: no blend with zero weights (inf * 0) */
    if (ip->x_sc == 1 && ip->o_sc == 1 && C > 1) { /* NHWC */
        RT_FOR(work >= RT_PAR_MIN_ELEMS, r, ip->N * ip->OH, {
            int64_t n = r / ip->OH, oh = r % ip->OH;
            const tap *h = &th[oh];
            const float *r0 = x + n * ip->x_sn + h->i0 * ip->x_sh, *r1 = x + n * ip->x_sn + h->i1 * ip->x_sh;
            for (int64_t ow = 0; ow < ip->OW; ow++) {
                const tap *w = &tw[ow];
                float *yo = y + n * ip->o_sn + oh * ip->o_sh + ow * ip->o_sw;
                if (nearest) {
                    memcpy(yo, r0 + w->i0 * ip->x_sw, sizeof(float) * (size_t)C);
                    continue;
                }
                blend4(yo, r0 + w->i0 * ip->x_sw, r0 + w->i1 * ip->x_sw,
                       r1 + w->i0 * ip->x_sw, r1 + w->i1 * ip->x_sw, h->l0 * w->l0, h->l0 * w->l1, h->l1 * w->l0,
                       h->l1 * w->l1, C);
            }
        });
    } else { /* one (n, c) plane at a time */
        RT_FOR(work >= RT_PAR_MIN_ELEMS, p, ip->N * C, {
            int64_t n = p / C, c = p % C;
            const float *xp = x + n * ip->x_sn + c * ip->x_sc;
            float *yp = y + n * ip->o_sn + c * ip->o_sc;
            for (int64_t oh = 0; oh < ip->OH; oh++) {
                const tap *h = &th[oh];
                const float *r0 = xp + h->i0 * ip->x_sh, *r1 = xp + h->i1 * ip->x_sh;
                for (int64_t ow = 0; ow < ip->OW; ow++) {
                    const tap *w = &tw[ow];
                    int64_t a = w->i0 * ip->x_sw, b = w->i1 * ip->x_sw;
                    yp[oh * ip->o_sh + ow * ip->o_sw] = nearest ? r0[a] : h->l0 * (w->l0 * r0[a] + w->l1 * r0[b]) +
                                                        h->l1 * (w->l0 * r1[a] + w->l1 * r1[b]);
                }
            }
        });
    }
    free(th);
    return RT_OK;
}

int rt_c_resample(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_resample_ints *ip = &op->ip.resample;
    double sh = op->fp.resample.scale_h, sw = op->fp.resample.scale_w;
    RT_CHECK(sh >= 0 && sw >= 0 && sh < 1e30 && sw < 1e30, "scales must be finite and non-negative");
    RT_CHECK((ip->H >= 1 && ip->W >= 1) || ip->N * ip->C * ip->OH * ip->OW == 0, "resampling needs a non-empty input");
    int64_t xs[4] = {ip->N, ip->C, ip->H, ip->W}, os[4] = {ip->N, ip->C, ip->OH, ip->OW};
    int64_t xst[4] = {ip->x_sn, ip->x_sc, ip->x_sh, ip->x_sw}, ost[4] = {ip->o_sn, ip->o_sc, ip->o_sh, ip->o_sw};
    /* written once each: outputs that do not overlap (which bounds the work by their bytes) */
    RT_CHECK(rt_disjoint(4, os, ost, 1), "output elements overlap");
    /* every source index is clipped to [0, H) x [0, W) */
    return rt_need(op, avail, RT_RESAMPLE_X, rt_reach(4, xs, xst), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_RESAMPLE_OUT, rt_reach(4, os, ost), 4, "out", msg, msglen);
}
