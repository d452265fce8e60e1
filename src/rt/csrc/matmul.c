/* Batched matmul on BLAS with a fused epilogue (bias, residual, activation).
 *
 * Threads: OpenBLAS is kept single-threaded and rt's OpenMP threads each multiply
 * their own block of the output, so one thread pool runs at a time (two pools spinning
 * against each other on few cores cost up to 10x) and each thread applies the epilogue
 * to the block it just produced. A BLAS call takes no epilogue, so a tall block is cut
 * into row panels, each finished while still in cache. */
#include <cblas.h>
#include <float.h>
#include <math.h>

#include "rt_kernel.h"

/* Rows per panel. Every panel re-packs B, which cost ~10% at 64 rows and ~2% at 256
 * (M=1024, N=2304, K=768, one thread). */
#define RT_PANEL_ROWS 256
/* Below this M*N*K a product is not worth splitting over threads. */
#define RT_SPLIT_MIN (64 * 64 * 32)
/* Split N (each thread packs only its columns of B) when every thread gets this many. */
#define RT_SPLIT_N_MIN 128

const rt_row_fn rt_matmul_acts[RT_ACT_COUNT] = {[RT_ACT_NONE] = NULL, [RT_ACT_RELU] = rt_row_relu,
                                            [RT_ACT_GELU_TANH] = rt_row_gelu_tanh,
                                            [RT_ACT_GELU_ERF] = rt_row_gelu_erf, [RT_ACT_SILU] = rt_row_silu};

typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    int ta, tb;
    float alpha, beta; /* beta = 1 when the residual is the output itself */
    const float *bias;
    rt_row_fn act;
    const void *split; /* B in the split form (b_mode split; one row): read this, not b */
    int small;         /* b_mode small: rt's one-row loops (matvec.c) */
    int64_t col0;      /* the block's first output column, for split */
} mm_params;

/* out rows += bias + residual, then activation, in one pass per row. */
RT_SIMD static void epilogue(const mm_params *p, float *c, const float *res, int64_t rows)
{
    int64_t n = p->N;
    const float *bias = p->bias;
    for (int64_t r = 0; r < rows; r++) {
        float *cr = c + r * p->ldc;
        const float *rr = res ? res + r * p->ldc : NULL;
        if (bias && rr)
            for (int64_t j = 0; j < n; j++) cr[j] += bias[j] + rr[j];
        else if (bias)
            for (int64_t j = 0; j < n; j++) cr[j] += bias[j];
        else if (rr)
            for (int64_t j = 0; j < n; j++) cr[j] += rr[j];
        if (p->act) p->act(cr, cr, n, 0.f, 0.f);
    }
}

static void gemm(const mm_params *p, const float *a, const float *b, float *c, int64_t m)
{
    if (m == 1 && p->K > 0) { /* a vector times a matrix: gemv avoids gemm's packing */
        int64_t incx = p->ta ? p->lda : 1;
        if (p->split) { /* the checker allows it only with a contiguous x */
            rt_split_matvec(p->split, p->col0, p->N, a, p->alpha, p->beta, c);
            return;
        }
        if (p->small)
            rt_matvec_small(a, incx, b, p->ldb, p->tb, p->N, p->K, p->alpha, p->beta, c);
        else if (p->tb)
            scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, p->N, p->K, p->alpha, b, p->ldb, a, incx,
                              p->beta, c, 1);
        else
            scipy_cblas_sgemv(CblasRowMajor, CblasTrans, p->K, p->N, p->alpha, b, p->ldb, a, incx,
                              p->beta, c, 1);
        return;
    }
    scipy_cblas_sgemm(CblasRowMajor, p->ta ? CblasTrans : CblasNoTrans,
                      p->tb ? CblasTrans : CblasNoTrans, m, p->N, p->K, p->alpha, a, p->lda, b,
                      p->ldb, p->beta, c, p->ldc);
}

/* One thread's block: p->M rows, p->N columns; res is NULL when absent or in beta. */
static void block(const mm_params *p, const float *a, const float *b, const float *res, float *c)
{
    int need_epilogue = p->bias || res || p->act;
    int64_t panel = need_epilogue ? RT_PANEL_ROWS : p->M;
    for (int64_t r0 = 0; r0 < p->M; r0 += panel) {
        int64_t m = p->M - r0 < panel ? p->M - r0 : panel;
        float *cr = c + r0 * p->ldc;
        gemm(p, a + (p->ta ? r0 : r0 * p->lda), b, cr, m);
        if (need_epilogue) epilogue(p, cr, res ? res + r0 * p->ldc : NULL, m);
    }
}

/* One output matrix over nth threads: columns split when wide enough, else rows. */
static void one_matmul(const mm_params *p, const float *a, const float *b, const float *res,
                       float *c, int nth)
{
    if (nth == 1) {
        block(p, a, b, res, c);
        return;
    }
    int split_n = p->N >= RT_SPLIT_N_MIN * nth;
    int64_t ext = split_n ? p->N : p->M;
    int64_t chunk = (ext + nth - 1) / nth;
    if (split_n) chunk = (chunk + 15) / 16 * 16; /* whole cache lines per thread */
    RT_FOR(1, t, nth, {
        int64_t lo = t * chunk, len = ext - lo < chunk ? ext - lo : chunk;
        mm_params q = *p;
        if (len > 0 && split_n) {
            q.N = len;
            q.col0 = p->col0 + lo;
            q.bias = p->bias ? p->bias + lo : NULL;
            block(&q, a, b + (p->tb ? lo * p->ldb : lo), res ? res + lo : NULL, c + lo);
        } else if (len > 0) {
            q.M = len;
            block(&q, a + (p->ta ? lo : lo * p->lda), b, res ? res + lo * p->ldc : NULL,
                  c + lo * p->ldc);
        }
    });
}

/* How a prepared MATMUL reads B: its b_mode, but a split weight the form could not hold (state
 * NULL after preparing) runs on BLAS. */
static int effective_b_mode(const rt_op *op)
{
    int mode = (int)op->ip.matmul.b_mode;
    return mode == RT_B_MODE_SPLIT && !op->state ? RT_B_MODE_BLAS : mode;
}

int rt_k_matmul(const rt_op *op, char *const *arg)
{
    const rt_matmul_ints *ip = &op->ip.matmul;
    int64_t nb = ip->b1 * ip->b2;
    const float *a = (const float *)arg[RT_MATMUL_A], *b = (const float *)arg[RT_MATMUL_B],
                *res = (const float *)arg[RT_MATMUL_RESIDUAL];
    float *c = (float *)arg[RT_MATMUL_OUT];
    int mode = effective_b_mode(op);
    mm_params p = {.M = ip->M, .N = ip->N, .K = ip->K, .ta = (int)ip->trans_a, .tb = (int)ip->trans_b,
                   .lda = ip->lda, .ldb = ip->ldb, .ldc = ip->ldc, .alpha = (float)op->fp.matmul.alpha,
                   .bias = (const float *)arg[RT_MATMUL_BIAS], .act = rt_matmul_acts[ip->act],
                   .split = mode == RT_B_MODE_SPLIT ? op->state : NULL,
                   .small = mode == RT_B_MODE_SMALL};
    if (p.M == 0 || p.N == 0 || nb == 0) return RT_OK;
#ifdef RT_HAVE_ONEDNN
    if (mode == RT_B_MODE_ONEDNN || mode == RT_B_MODE_PACKED) return rt_matmul_onednn(op, arg);
#endif
    /* A residual that is the output itself (same layout by the ABI) goes through beta. */
    p.beta = res == c ? 1.f : 0.f;
    if (res == c) res = NULL;
    double work = (double)p.M * (double)p.N * (double)(p.K > 0 ? p.K : 1);
    int big = work >= RT_SPLIT_MIN, nth = big ? rt_nthreads : 1;
    /* Big products: one after another, each split over threads. Small ones: whole
     * products spread over threads. */
    RT_FOR(!big && nb > 1, t, nb, {
        int64_t i1 = t / ip->b2, i2 = t % ip->b2, co = i1 * ip->sc1 + i2 * ip->sc2;
        one_matmul(&p, a + i1 * ip->sa1 + i2 * ip->sa2, b + i1 * ip->sb1 + i2 * ip->sb2,
                   res ? res + co : NULL, c + co, nth);
    });
    return RT_OK;
}

int rt_v_matmul(const rt_op *op) { return effective_b_mode(op); }

/* Elements one operand spans: batch dims plus a rows x cols matrix with leading dim ld. */
static int64_t mat_reach(int64_t b1, int64_t b2, int64_t s1, int64_t s2, int64_t rows,
                         int64_t cols, int64_t ld)
{
    int64_t shape[4] = {b1, b2, rows, cols}, stride[4] = {s1, s2, ld, 1};
    return rt_reach(4, shape, stride);
}

int rt_c_matmul(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_matmul_ints *ip = &op->ip.matmul;
    int64_t b1 = ip->b1, b2 = ip->b2, M = ip->M, N = ip->N, K = ip->K, lda = ip->lda,
            ldb = ip->ldb, ldc = ip->ldc, mode = ip->b_mode;
    int ta = (int)ip->trans_a, tb = (int)ip->trans_b;
    int onednn = mode == RT_B_MODE_ONEDNN || mode == RT_B_MODE_PACKED;
    int one_row = b1 == 1 && b2 == 1 && M == 1 && K > 0;
    RT_CHECK(!onednn || rt_have_onednn(), "b_mode %lld needs oneDNN; this build has none", (long long)mode);
    RT_CHECK(!onednn || (b1 == 1 && b2 == 1 && op->fp.matmul.alpha == 1.0 && K > 0),
             "oneDNN matmuls take one batch, alpha 1 and K > 0");
    RT_CHECK(mode != RT_B_MODE_SPLIT || (one_row && !ta),
             "split matmuls take one batch, one contiguous row (trans_a 0) and K > 0");
    RT_CHECK(mode != RT_B_MODE_SPLIT || rt_split_fast(),
             "split matmuls need AVX-512F and AVX2, which this CPU lacks");
    RT_CHECK(mode != RT_B_MODE_SMALL || (M == 1 && rt_mul(N, K) <= RT_MATVEC_SMALL_ELEMS),
             "small matmuls take one row and at most %d weights", RT_MATVEC_SMALL_ELEMS);
    RT_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && lda <= INT32_MAX &&
                 ldb <= INT32_MAX && ldc <= INT32_MAX,
             "a dim or leading dim exceeds the BLAS int range");
    int64_t arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    RT_CHECK(lda >= (acols > 1 ? acols : 1), "lda %lld < %lld", (long long)lda, (long long)acols);
    RT_CHECK(ldb >= (bcols > 1 ? bcols : 1), "ldb %lld < %lld", (long long)ldb, (long long)bcols);
    RT_CHECK(ldc >= (N > 1 ? N : 1), "ldc %lld < N = %lld", (long long)ldc, (long long)N);
    RT_CHECK(fabs(op->fp.matmul.alpha) <= FLT_MAX, "alpha %g is not a finite float", op->fp.matmul.alpha);
    /* Output batches are written in parallel, each once: they must not overlap (which also bounds the
     * work by out's bytes). */
    int64_t bext[2] = {b1, b2}, bst[2] = {ip->sc1, ip->sc2};
    RT_CHECK(M == 0 || N == 0 || rt_disjoint(2, bext, bst, rt_add(rt_mul(M - 1, ldc), N)),
             "output batches overlap (b1 %lld, b2 %lld at strides %lld, %lld; each %lld x %lld, ldc %lld)",
             (long long)b1, (long long)b2, (long long)ip->sc1, (long long)ip->sc2, (long long)M, (long long)N,
             (long long)ldc);
    int64_t creach = mat_reach(b1, b2, ip->sc1, ip->sc2, M, N, ldc);
    return rt_need(op, avail, RT_MATMUL_A, mat_reach(b1, b2, ip->sa1, ip->sa2, arows, acols, lda), 4,
                   "a", msg, msglen) ||
           rt_need(op, avail, RT_MATMUL_B, mat_reach(b1, b2, ip->sb1, ip->sb2, brows, bcols, ldb), 4,
                   "b", msg, msglen) ||
           rt_need_opt(op, avail, RT_MATMUL_BIAS, N, 4, "bias", msg, msglen) ||
           rt_need_opt(op, avail, RT_MATMUL_RESIDUAL, creach, 4, "residual", msg, msglen) ||
           rt_need(op, avail, RT_MATMUL_OUT, creach, 4, "out", msg, msglen);
}

/* What a MATMUL makes once from its constant B, by b_mode. A split weight the form cannot hold
 * leaves state NULL and runs on BLAS (effective_b_mode): the validated record is never changed. */
int rt_p_matmul(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    const rt_matmul_ints *ip = &op->ip.matmul;
    int mode = (int)ip->b_mode;
    if (mode == RT_B_MODE_SPLIT) {
        RT_CHECK(arg[RT_MATMUL_B], "split matmul: B must be a constant (bound when the program is built)");
        int unfit;
        op->state = rt_split_b_make((const float *)arg[RT_MATMUL_B], ip->ldb, (int)ip->trans_b, ip->N,
                                    ip->K, &unfit);
        RT_CHECK(op->state || unfit, "out of memory storing a %lldx%lld weight in the split form",
                 (long long)ip->K, (long long)ip->N);
        return 0;
    }
#ifdef RT_HAVE_ONEDNN
    if (mode == RT_B_MODE_ONEDNN || mode == RT_B_MODE_PACKED) return rt_p_matmul_onednn(op, arg, msg, msglen);
#endif
    return 0;
}

void rt_r_matmul(rt_op *op)
{
    int mode = (int)op->ip.matmul.b_mode;
    if (mode == RT_B_MODE_SPLIT)
        rt_split_b_free(op->state);
#ifdef RT_HAVE_ONEDNN
    else if (mode == RT_B_MODE_ONEDNN || mode == RT_B_MODE_PACKED)
        rt_r_matmul_onednn(op->state);
#endif
}
