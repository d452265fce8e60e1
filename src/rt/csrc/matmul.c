/* Batched matmul on BLAS with a fused epilogue (bias, residual, activation).
 *
 * Threads: OpenBLAS is kept single-threaded and rt's OpenMP threads each multiply
 * their own block of the output, so one thread pool runs at a time (two pools spinning
 * against each other on few cores cost up to 10x) and each thread applies the epilogue
 * to the block it just produced. A BLAS call takes no epilogue, so a tall block is cut
 * into row panels, each finished while still in cache. */
#include <cblas.h>

#include "rt_kernel.h"

/* Rows per panel. Every panel re-packs B, which cost ~10% at 64 rows and ~2% at 256
 * (M=1024, N=2304, K=768, one thread). */
#define RT_PANEL_ROWS 256
/* Below this M*N*K a product is not worth splitting over threads. */
#define RT_SPLIT_MIN (64 * 64 * 32)
/* Split N (each thread packs only its columns of B) when every thread gets this many. */
#define RT_SPLIT_N_MIN 128

typedef void (*row_fn)(const float *x, float *y, int64_t n);
static const row_fn acts[RT_ACT_COUNT] = {[RT_ACT_NONE] = NULL, [RT_ACT_RELU] = rt_row_relu,
                                         [RT_ACT_GELU_TANH] = rt_row_gelu_tanh,
                                         [RT_ACT_GELU_ERF] = rt_row_gelu_erf};

typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    int ta, tb;
    float alpha, beta; /* beta = 1 when the residual is the output itself */
    const float *bias;
    row_fn act;
    const void *split; /* B in the split form (b_mode split; one row): read this, not b */
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
        if (p->act) p->act(cr, cr, n);
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
        if (rt_matvec_small(a, incx, b, p->ldb, p->tb, p->N, p->K, p->alpha, p->beta, c)) return;
        if (p->tb)
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

int rt_k_matmul(const rt_op *op, char *const *arg)
{
    const int64_t *ip = op->ip;
    int64_t b1 = ip[0], b2 = ip[1], nb = b1 * b2;
    const float *a = (const float *)arg[0], *b = (const float *)arg[1], *res = (const float *)arg[3];
    float *c = (float *)arg[4];
    mm_params p = {.M = ip[2], .N = ip[3], .K = ip[4], .ta = (int)ip[5], .tb = (int)ip[6],
                   .lda = ip[7], .ldb = ip[8], .ldc = ip[9], .alpha = (float)op->fp[0],
                   .bias = (const float *)arg[2], .act = acts[ip[16]]};
    if (p.M == 0 || p.N == 0 || nb == 0) return RT_OK;
    if (ip[19] == RT_MATMUL_B_SPLIT) p.split = op->state;
#ifdef RT_HAVE_ONEDNN
    else if (op->state)
        return rt_matmul_onednn(op, arg);
#endif
    /* A residual that is the output itself (same layout by the ABI) goes through beta. */
    p.beta = res == c ? 1.f : 0.f;
    if (res == c) res = NULL;
    double work = (double)p.M * (double)p.N * (double)(p.K > 0 ? p.K : 1);
    int big = work >= RT_SPLIT_MIN, nth = big ? rt_nthreads : 1;
    /* Big products: one after another, each split over threads. Small ones: whole
     * products spread over threads. */
    RT_FOR(!big && nb > 1, t, nb, {
        int64_t i1 = t / b2, i2 = t % b2, co = i1 * ip[14] + i2 * ip[15];
        one_matmul(&p, a + i1 * ip[10] + i2 * ip[11], b + i1 * ip[12] + i2 * ip[13],
                   res ? res + co : NULL, c + co, nth);
    });
    return RT_OK;
}

/* Elements one operand spans: batch dims plus a rows x cols matrix with leading dim ld. */
static int64_t mat_reach(int64_t b1, int64_t b2, int64_t s1, int64_t s2, int64_t rows,
                         int64_t cols, int64_t ld)
{
    int64_t shape[4] = {b1, b2, rows, cols}, stride[4] = {s1, s2, ld, 1};
    return rt_reach(4, shape, stride);
}

int rt_c_matmul(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const int64_t *ip = op->ip;
    if (rt_check_nargs(op, 5, msg, msglen) || rt_check_dims(op, 0, 20, msg, msglen)) return 1;
    int64_t b1 = ip[0], b2 = ip[1], M = ip[2], N = ip[3], K = ip[4], lda = ip[7], ldb = ip[8],
            ldc = ip[9];
    int ta = (int)ip[5], tb = (int)ip[6];
    RT_CHECK(ip[5] <= 1 && ip[6] <= 1, "trans_a/trans_b must be 0 or 1");
    RT_CHECK(ip[16] >= 0 && ip[16] < RT_ACT_COUNT, "unknown activation %lld", (long long)ip[16]);
    RT_CHECK(ip[19] >= RT_MATMUL_B_BLAS && ip[19] <= RT_MATMUL_B_SPLIT, "unknown b_mode %lld",
             (long long)ip[19]);
    int onednn = ip[19] == RT_MATMUL_B_ONEDNN || ip[19] == RT_MATMUL_B_PACKED;
    RT_CHECK(!onednn || rt_have_onednn(), "b_mode %lld needs oneDNN; this build has none",
             (long long)ip[19]);
    RT_CHECK(!onednn || (b1 == 1 && b2 == 1 && op->fp[0] == 1.0 && K > 0),
             "oneDNN matmuls take one batch, alpha 1 and K > 0");
    RT_CHECK(ip[19] != RT_MATMUL_B_SPLIT || (b1 == 1 && b2 == 1 && M == 1 && K > 0 && !ta),
             "split matmuls take one batch, one contiguous row (trans_a 0) and K > 0");
    RT_CHECK(ip[17] == (avail[2] >= 0), "has_bias=%lld but bias operand is %s", (long long)ip[17],
             avail[2] >= 0 ? "present" : "absent");
    RT_CHECK(ip[18] == (avail[3] >= 0), "has_res=%lld but residual operand is %s",
             (long long)ip[18], avail[3] >= 0 ? "present" : "absent");
    for (int i = 2; i <= 9; i++)
        RT_CHECK(ip[i] <= INT32_MAX, "ip[%d] = %lld exceeds the BLAS int range", i, (long long)ip[i]);
    int64_t arows = ta ? K : M, acols = ta ? M : K, brows = tb ? N : K, bcols = tb ? K : N;
    RT_CHECK(lda >= (acols > 1 ? acols : 1), "lda %lld < %lld", (long long)lda, (long long)acols);
    RT_CHECK(ldb >= (bcols > 1 ? bcols : 1), "ldb %lld < %lld", (long long)ldb, (long long)bcols);
    RT_CHECK(ldc >= (N > 1 ? N : 1), "ldc %lld < N = %lld", (long long)ldc, (long long)N);
    /* Output batches written in parallel must not coincide. */
    RT_CHECK((b1 <= 1 || ip[14] > 0) && (b2 <= 1 || ip[15] > 0),
             "output batch strides must be nonzero");
    int64_t creach = mat_reach(b1, b2, ip[14], ip[15], M, N, ldc);
    return rt_need(op, avail, 0, mat_reach(b1, b2, ip[10], ip[11], arows, acols, lda), 4, "a",
                   msg, msglen) ||
           rt_need(op, avail, 1, mat_reach(b1, b2, ip[12], ip[13], brows, bcols, ldb), 4, "b",
                   msg, msglen) ||
           rt_need_opt(op, avail, 2, N, 4, "bias", msg, msglen) ||
           rt_need_opt(op, avail, 3, creach, 4, "residual", msg, msglen) ||
           rt_need(op, avail, 4, creach, 4, "out", msg, msglen);
}

int rt_p_matmul(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    const int64_t *ip = op->ip;
    if (ip[19] == RT_MATMUL_B_SPLIT) {
        RT_CHECK(arg[1], "split matmul: B must be a constant (bound when the program is built)");
        int unfit;
        op->state = rt_split_b_make((const float *)arg[1], ip[8], (int)ip[6], ip[3], ip[4], &unfit);
        if (unfit) { /* weights too spread out for the form: read them through BLAS instead */
            op->ip[19] = RT_MATMUL_B_BLAS;
            return 0;
        }
        RT_CHECK(op->state, "out of memory storing a %lldx%lld weight in the split form",
                 (long long)ip[4], (long long)ip[3]);
        return 0;
    }
#ifdef RT_HAVE_ONEDNN
    if (ip[19] != RT_MATMUL_B_BLAS) return rt_p_matmul_onednn(op, arg, msg, msglen);
#endif
    return 0;
}

void rt_r_matmul(rt_op *op)
{
    if (op->ip[19] == RT_MATMUL_B_SPLIT)
        rt_split_b_free(op->state);
#ifdef RT_HAVE_ONEDNN
    else
        rt_r_matmul_onednn(op->state);
#endif
}
