/* One-row products on weights small enough to stay in cache: y = alpha * x B (+ y).
 *
 * OpenBLAS's sgemv spends ~0.2 us per call before it multiplies (argument checks,
 * thread and buffer set-up, its kernel dispatch): on a 64x64 weight that is several
 * times the product itself. These loops have no set-up; large weights stay on BLAS,
 * where the call cost vanishes beside streaming the matrix from memory. */
#include "rt_kernel.h"

/* Output columns accumulated in registers at once: four 16-float vectors. */
#define COLS 64
typedef float vec16 __attribute__((vector_size(64)));

static inline vec16 load16(const float *p)
{
    vec16 v;
    memcpy(&v, p, sizeof v); /* an unaligned vector load */
    return v;
}

static inline void store(float *y, const float *acc, int64_t n, float alpha, float beta)
{
    if (beta != 0.f)
        for (int64_t j = 0; j < n; j++) y[j] = alpha * acc[j] + y[j];
    else
        for (int64_t j = 0; j < n; j++) y[j] = alpha * acc[j];
}

/* B read [K, N] (row i holds the weights from input i): COLS outputs at a time. */
RT_SIMD static void matvec_kn(const float *x, int64_t incx, const float *b, int64_t ldb,
                              int64_t n, int64_t k, float alpha, float beta, float *y)
{
    int64_t j0 = 0;
    for (; j0 + COLS <= n; j0 += COLS) {
        vec16 acc[4] = {{0}};
        for (int64_t i = 0; i < k; i++) {
            const float *r = b + i * ldb + j0;
            float xi = x[i * incx];
            acc[0] += xi * load16(r);
            acc[1] += xi * load16(r + 16);
            acc[2] += xi * load16(r + 32);
            acc[3] += xi * load16(r + 48);
        }
        store(y + j0, (const float *)acc, COLS, alpha, beta);
    }
    if (j0 == n) return;
    float acc[COLS] = {0};
    for (int64_t i = 0; i < k; i++) {
        const float *r = b + i * ldb;
        float xi = x[i * incx];
        for (int64_t j = j0; j < n; j++) acc[j - j0] += xi * r[j];
    }
    store(y + j0, acc, n - j0, alpha, beta);
}

/* B read [N, K] (row j holds output j's weights): one dot product per output. */
RT_SIMD static void matvec_nk(const float *x, int64_t incx, const float *b, int64_t ldb,
                              int64_t n, int64_t k, float alpha, float beta, float *y)
{
    for (int64_t j = 0; j < n; j++) {
        const float *bj = b + j * ldb;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < k; i++) s += bj[i] * x[i * incx];
        y[j] = alpha * s + (beta != 0.f ? y[j] : 0.f);
    }
}

void rt_matvec_small(const float *x, int64_t incx, const float *b, int64_t ldb, int tb, int64_t n,
                     int64_t k, float alpha, float beta, float *y)
{
    if (tb)
        matvec_nk(x, incx, b, ldb, n, k, alpha, beta, y);
    else
        matvec_kn(x, incx, b, ldb, n, k, alpha, beta, y);
}
