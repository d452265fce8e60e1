/* Reductions over any set of dims: x is read through its strides as [kept dims..., reduced dims...]
 * (the encoder orders them), out is contiguous over the kept dims. Two loop shapes keep the inner
 * loop contiguous: a reduced dim of stride 1 innermost (a row reduction per output), or a kept dim
 * of stride 1 innermost (whole output rows accumulated at once, as when reducing over a batch). */
#include "rt_kernel.h"

enum { SUM, MEAN, AMAX, AMIN, PROD, ARGMAX, ARGMIN, VAR, STD, LOGSUMEXP };

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

static void reduce_whole(int kind, const rt_op *op, const float *x, char *y8, const red_plan *p);
static void reduce_i64(int kind, const int64_t *x, int64_t *y, const red_plan *p);

static int reduce_run(int kind, const rt_op *op, char *const *arg)
{
    const float *x = (const float *)arg[RT_REDUCE_X];
    float *y = (float *)arg[RT_REDUCE_OUT];
    red_plan p;
    plan(&op->ip.reduce, &p);
    if (op->ip.reduce.dtype == RT_DTYPE_I64) {
        reduce_i64(kind, (const int64_t *)x, (int64_t *)y, &p);
        return RT_OK;
    }
    if (kind >= ARGMAX) {
        reduce_whole(kind, op, x, arg[RT_REDUCE_OUT], &p);
        return RT_OK;
    }
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

/* The kinds that need the whole reduced set per output (an index, two passes): one output at a
 * time, its reduced items visited row by row (rows of the innermost reduced dim). */
typedef struct {
    const rt_space *r;
    int64_t rin, rin_s, rows;
} red_rows;

/* for each reduced item v (of type T, flat position i in the reduced dims) of the output at xo: body */
#define FOR_REDUCED(T, rr, xo, i, v, ...)                                               \
    for (int64_t q_ = 0; q_ < (rr)->rows; q_++) {                                       \
        const T *row_ = (xo) + space_offset((rr)->r, q_ * (rr)->rin);                   \
        for (int64_t j_ = 0; j_ < (rr)->rin; j_++) {                                    \
            int64_t i = q_ * (rr)->rin + j_;                                            \
            T v = row_[j_ * (rr)->rin_s];                                               \
            (void)i;                                                                    \
            __VA_ARGS__                                                                 \
        }                                                                               \
    }

static void reduce_whole(int kind, const rt_op *op, const float *x, char *y8, const red_plan *p)
{
    const rt_space *k = &p->kept, *r = &p->red;
    int64_t rin = r->shape[r->ndim - 1];
    red_rows rr = {r, rin, r->stride[0][r->ndim - 1], rin ? p->nred / rin : 0};
    double corr = op->fp.reduce.correction;
    RT_FOR(p->nkept * p->nred >= RT_PAR_MIN_ELEMS, o, p->nkept, {
        const float *xo = x + space_offset(k, o);
        if (kind == ARGMAX || kind == ARGMIN) { /* first extreme; the first NaN wins */
            float best = kind == ARGMAX ? -INFINITY : INFINITY;
            int64_t at = 0, nan = 0;
            FOR_REDUCED(float, &rr, xo, i, v, {
                if (!nan && (v != v || (kind == ARGMAX ? v > best : v < best))) {
                    best = v, at = i, nan = v != v;
                }
            })
            ((int64_t *)y8)[o] = at;
        } else if (kind == LOGSUMEXP) {
            float m = -INFINITY;
            FOR_REDUCED(float, &rr, xo, i, v, { m = v > m || v != v ? v : m; })
            float shift = m == -INFINITY || m == INFINITY ? 0.f : m;
            double sum = 0.0;
            FOR_REDUCED(float, &rr, xo, i, v, { sum += rt_expf(v - shift); })
            ((float *)y8)[o] = m == INFINITY ? m : (float)(rt_logf((float)sum) + shift);
        } else { /* VAR, STD: two passes in double */
            double sum = 0.0, ss = 0.0;
            FOR_REDUCED(float, &rr, xo, i, v, { sum += v; })
            double mean = sum / (double)p->nred;
            FOR_REDUCED(float, &rr, xo, i, v, { ss += ((double)v - mean) * ((double)v - mean); })
            double dof = (double)p->nred - corr;
            double var = ss / (dof > 0.0 ? dof : 0.0);
            ((float *)y8)[o] = (float)(kind == STD ? sqrt(var) : var);
        }
    });
}

/* int64 reductions, exact (sums and products wrap, as torch's): one output at a time. */
static void reduce_i64(int kind, const int64_t *x, int64_t *y, const red_plan *p)
{
    const rt_space *k = &p->kept, *r = &p->red;
    int64_t rin = r->shape[r->ndim - 1];
    red_rows rr = {r, rin, r->stride[0][r->ndim - 1], rin ? p->nred / rin : 0};
    RT_FOR(p->nkept * p->nred >= RT_PAR_MIN_ELEMS, o, p->nkept, {
        const int64_t *xo = x + space_offset(k, o);
        uint64_t acc = kind == PROD ? 1 : 0; /* unsigned: wrapping is defined */
        int64_t best = kind == AMAX || kind == ARGMAX ? INT64_MIN : INT64_MAX, at = 0;
        FOR_REDUCED(int64_t, &rr, xo, i, v, {
            if (kind == SUM)
                acc += (uint64_t)v;
            else if (kind == PROD)
                acc *= (uint64_t)v;
            else if ((kind == AMAX || kind == ARGMAX) ? v > best || i == 0 : v < best || i == 0)
                best = v, at = i;
        })
        y[o] = kind == SUM || kind == PROD ? (int64_t)acc : kind == ARGMAX || kind == ARGMIN ? at : best;
    });
}

int rt_k_argmax(const rt_op *op, char *const *arg) { return reduce_run(ARGMAX, op, arg); }
int rt_k_argmin(const rt_op *op, char *const *arg) { return reduce_run(ARGMIN, op, arg); }
int rt_k_var(const rt_op *op, char *const *arg) { return reduce_run(VAR, op, arg); }
int rt_k_std(const rt_op *op, char *const *arg) { return reduce_run(STD, op, arg); }
int rt_k_logsumexp(const rt_op *op, char *const *arg) { return reduce_run(LOGSUMEXP, op, arg); }

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
    int code = op->code, i64 = ip->dtype == RT_DTYPE_I64;
    RT_CHECK(ip->dtype == RT_DTYPE_F32 || (i64 && (code == RT_OP_SUM || code == RT_OP_PROD || code == RT_OP_AMAX ||
                                                   code == RT_OP_AMIN || code == RT_OP_ARGMAX || code == RT_OP_ARGMIN)),
             "%s has no kernel for dtype %d", rt_op_name(code), (int)ip->dtype);
    int64_t nkept = 1;
    for (int d = 0; d < nd - nr; d++) nkept = rt_mul(nkept, ip->shape[d]);
    int64_t isz = i64 ? 8 : 4;
    return rt_need(op, avail, RT_REDUCE_X, rt_reach(nd, ip->shape, ip->stride), isz, "x", msg, msglen) ||
           rt_need(op, avail, RT_REDUCE_OUT, nkept, code == RT_OP_ARGMAX || code == RT_OP_ARGMIN ? 8 : isz,
                   "out", msg, msglen);
}

/* ---- scans: running sum / product along the last dim, in double ---- */

enum { CUMSUM, CUMPROD, LOGCUMSUMEXP };

static int scan_run(int kind, const rt_op *op, char *const *arg)
{
    const rt_scan_ints *ip = &op->ip.scan;
    const float *x = (const float *)arg[RT_SCAN_X];
    float *y = (float *)arg[RT_SCAN_OUT];
    int nd = (int)ip->ndim, last = nd - 1;
    int64_t n = nd ? ip->shape[last] : 1, xs = nd ? ip->stride[last] : 0, ys = nd ? ip->out_stride[last] : 0;
    int64_t rows = 1;
    for (int d = 0; d < last; d++) rows *= ip->shape[d];
    if (n == 0) return RT_OK;
    int i64 = ip->dtype == RT_DTYPE_I64;
    RT_FOR(rows * n >= RT_PAR_MIN_ELEMS, r, rows, {
        int64_t xo = 0, yo = 0, rem = r;
        for (int d = last - 1; d >= 0; d--) {
            int64_t i = rem % ip->shape[d];
            rem /= ip->shape[d];
            xo += i * ip->stride[d];
            yo += i * ip->out_stride[d];
        }
        if (i64) { /* unsigned: wrapping is defined */
            const int64_t *xi = (const int64_t *)arg[RT_SCAN_X];
            int64_t *yi = (int64_t *)arg[RT_SCAN_OUT];
            uint64_t iacc = kind == CUMPROD ? 1 : 0;
            for (int64_t i = 0; i < n; i++) {
                uint64_t v = (uint64_t)xi[xo + i * xs];
                iacc = kind == CUMPROD ? iacc * v : iacc + v;
                yi[yo + i * ys] = (int64_t)iacc;
            }
            continue;
        }
        double acc = kind == CUMPROD ? 1.0 : kind == LOGCUMSUMEXP ? -INFINITY : 0.0;
        for (int64_t i = 0; i < n; i++) {
            double v = x[xo + i * xs];
            if (kind == LOGCUMSUMEXP) { /* log(e^acc + e^v), from the larger */
                double m = acc > v ? acc : v;
                acc = m == -INFINITY ? m : (v != v || acc != acc ? v + acc : m + log1p(exp(-fabs(acc - v))));
            } else
                acc = kind == CUMPROD ? acc * v : acc + v;
            y[yo + i * ys] = (float)acc;
        }
    });
    return RT_OK;
}

int rt_k_cumsum(const rt_op *op, char *const *arg) { return scan_run(CUMSUM, op, arg); }
int rt_k_cumprod(const rt_op *op, char *const *arg) { return scan_run(CUMPROD, op, arg); }
int rt_k_logcumsumexp(const rt_op *op, char *const *arg) { return scan_run(LOGCUMSUMEXP, op, arg); }

int rt_c_scan(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_scan_ints *ip = &op->ip.scan;
    int nd = (int)ip->ndim;
    RT_CHECK(nd >= 1 && nd <= RT_MAX_NDIM, "ndim %d out of [1, %d]", nd, RT_MAX_NDIM);
    RT_CHECK(ip->dtype == RT_DTYPE_F32 || (ip->dtype == RT_DTYPE_I64 && op->code != RT_OP_LOGCUMSUMEXP),
             "%s has no kernel for dtype %d", rt_op_name(op->code), (int)ip->dtype);
    for (int d = 0; d < nd; d++)
        RT_CHECK(ip->shape[d] <= 1 || ip->out_stride[d] > 0, "out_stride[%d] is 0 for a dim of %lld", d,
                 (long long)ip->shape[d]);
    int64_t isz = rt_dtype_size[ip->dtype];
    return rt_need(op, avail, RT_SCAN_X, rt_reach(nd, ip->shape, ip->stride), isz, "x", msg, msglen) ||
           rt_need(op, avail, RT_SCAN_OUT, rt_reach(nd, ip->shape, ip->out_stride), isz, "out", msg, msglen);
}
