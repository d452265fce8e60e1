/* Reductions over any set of dims: x is read through its strides as [kept dims..., reduced dims...]
 * (the encoder orders them), out is contiguous over the kept dims. Two loop shapes keep the inner
 * loop contiguous: a reduced dim of stride 1 innermost (a row reduction per output), or a kept dim
 * of stride 1 innermost (whole output rows accumulated at once, as when reducing over a batch). */
#include "rt_kernel.h"

enum { SUM, MEAN, AMAX, AMIN, PROD };

/* The accumulator's start and one step; NaN propagates through amax/amin. */
RT_INLINE float red_init(int kind)
{
    return kind == AMAX ? -INFINITY : kind == AMIN ? INFINITY : kind == PROD ? 1.f : 0.f;
}

RT_INLINE float red_step(int kind, float acc, float x)
{
    switch (kind) {
    case AMAX: return (x > acc || x != x) && acc == acc ? x : acc;
    case AMIN: return (x < acc || x != x) && acc == acc ? x : acc;
    case PROD: return acc * x;
    default: return acc + x;
    }
}

/* One contiguous row of n items reduced; the kinds as separate loops so each vectorises. */
RT_SIMD static float reduce_row(int kind, const float *x, int64_t n)
{
    float acc = red_init(kind);
    if (kind == SUM || kind == MEAN) {
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < n; i++) acc += x[i];
    } else if (kind == PROD) {
#pragma omp simd reduction(* : acc)
        for (int64_t i = 0; i < n; i++) acc *= x[i];
    } else
        for (int64_t i = 0; i < n; i++) acc = red_step(kind, acc, x[i]);
    return acc;
}

/* y[0..n) = step(y, x[0..n)), a contiguous row of the kept dims. */
RT_SIMD static void accumulate_row(int kind, float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = red_step(kind, y[i], x[i]);
}

typedef struct {
    rt_space kept, red; /* collapsed kept and reduced dims, one operand: x's strides */
    int64_t nkept, nred;
} red_plan;

static void plan(const rt_reduce_ints *ip, red_plan *p)
{
    int nd = (int)ip->ndim, nr = (int)ip->nred, nk = nd - nr;
    const int64_t *ks = ip->stride, *rs = ip->stride + nk;
    rt_collapse(&p->kept, nk, ip->shape, 1, &ks);
    rt_collapse(&p->red, nr, ip->shape + nk, 1, &rs);
    p->nkept = p->nred = 1;
    for (int d = 0; d < p->kept.ndim; d++) p->nkept *= p->kept.shape[d];
    for (int d = 0; d < p->red.ndim; d++) p->nred *= p->red.shape[d];
}

/* Offset of the r-th item of a collapsed space (all its dims, the last fastest). */
static int64_t space_offset(const rt_space *s, int64_t r)
{
    int64_t off = 0;
    for (int d = s->ndim - 1; d >= 0; d--) {
        off += r % s->shape[d] * s->stride[0][d];
        r /= s->shape[d];
    }
    return off;
}

static int reduce_run(int kind, const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[RT_REDUCE_X];
    float *y = (float *)arg[RT_REDUCE_OUT];
    red_plan p;
    plan(&op->ip.reduce, &p);
    const rt_space *k = &p.kept, *r = &p.red;
    int64_t total = p.nkept * p.nred;
    float scale = kind == MEAN ? 1.f / (float)p.nred : 1.f; /* nred 0: inf * 0 sum = NaN, as torch */
    int64_t rin = r->shape[r->ndim - 1], rin_s = r->stride[0][r->ndim - 1];
    int64_t kin = k->shape[k->ndim - 1], kin_s = k->stride[0][k->ndim - 1];
    if (rin_s == 1 || kin_s != 1 || kin == 1) { /* per output: reduce rows of the reduced space */
        int64_t rows = p.nred / (rin ? rin : 1);
        RT_FOR(total >= RT_PAR_MIN_ELEMS, o, p.nkept, {
            const float *xo = x + space_offset(k, o);
            float acc = red_init(kind);
            for (int64_t q = 0; q < rows && rin; q++) {
                const float *row = xo + space_offset(r, q * rin);
                float part;
                if (rin_s == 1)
                    part = reduce_row(kind, row, rin);
                else {
                    part = red_init(kind);
                    for (int64_t i = 0; i < rin; i++) part = red_step(kind, part, row[i * rin_s]);
                }
                acc = kind == SUM || kind == MEAN ? acc + part : red_step(kind, acc, part);
            }
            y[o] = acc * scale;
        });
    } else { /* kept dims' innermost is contiguous: accumulate whole output rows */
        int64_t orows = p.nkept / kin;
        RT_FOR(total >= RT_PAR_MIN_ELEMS, o, orows, {
            float *yr = y + o * kin;
            const float *xo = x + space_offset(k, o * kin);
            for (int64_t i = 0; i < kin; i++) yr[i] = red_init(kind);
            for (int64_t q = 0; q < p.nred; q++) accumulate_row(kind, yr, xo + space_offset(r, q), kin);
            if (scale != 1.f)
                for (int64_t i = 0; i < kin; i++) yr[i] *= scale;
        });
    }
    return RT_OK;
}

int rt_k_sum(const rt_op *op, char *const *arg) { return reduce_run(SUM, op, arg); }
int rt_k_mean(const rt_op *op, char *const *arg) { return reduce_run(MEAN, op, arg); }
int rt_k_amax(const rt_op *op, char *const *arg) { return reduce_run(AMAX, op, arg); }
int rt_k_amin(const rt_op *op, char *const *arg) { return reduce_run(AMIN, op, arg); }
int rt_k_prod(const rt_op *op, char *const *arg) { return reduce_run(PROD, op, arg); }

int rt_c_reduce(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_reduce_ints *ip = &op->ip.reduce;
    int nd = (int)ip->ndim, nr = (int)ip->nred;
    RT_CHECK(nd <= RT_MAX_NDIM && nr <= nd, "ndim %d / nred %d out of range", nd, nr);
    int64_t nkept = 1;
    for (int d = 0; d < nd - nr; d++) nkept = rt_mul(nkept, ip->shape[d]);
    return rt_need(op, avail, RT_REDUCE_X, rt_reach(nd, ip->shape, ip->stride), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_REDUCE_OUT, nkept, 4, "out", msg, msglen);
}
