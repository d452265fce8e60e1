/* Products with a constant weight packed in a smaller format: bf16, int8 and int4 groupwise.
 *
 * At one row (decoding) a product is bound by reading its weight: these formats read 2, ~1.06 and
 * ~0.56 bytes per weight instead of 4. Layout (rt/weight_formats.py writes it): the outputs in panels
 * of QPANEL (16: one float vector; the last panel padded with zero weights), each panel's bytes
 * contiguous, so a thread streams whole panels:
 * - bf16: per pair of inputs (k, k+1), 16 dwords: output j's weight for k in the low half, for k+1 in
 *   the high half (an odd K's last pair has a zero high half). Multiplied in fp32 with A as it is.
 * - int8 / int4: per group of `group` inputs, 16 fp16 scales d, with zero_point 16 fp16 offsets m, then
 *   unsigned values u (weight = d u - m; int8 stores w/d + 128, so m = 128 d; int4 without a zero point
 *   w/d + 8, m = 8 d): int8 per quad of inputs 16 x 4 bytes (output j's 4 inputs in dword j, VNNI's
 *   layout); int4 per octet of inputs 16 x 4 bytes, low nibbles inputs 0-3 and high nibbles 4-7.
 *   int4nl: int4's layout, u indexing RT_INT4NL_LEVELS (weight = d level; read as level + 128, m = 128 d).
 *   A is quantized per QBLOCK inputs of a row (scale s = max|x| / 127, as llama.cpp quantizes
 *   activations for q8_0) into scratch, and sum_k w x = sum over blocks of s (d sum u q - m sum q),
 *   the byte products summed by AVX-512 VNNI. With rotate, each block of A is turned by the
 *   orthonormal Hadamard transform first (the weight was packed turned alike: (W H)(H x) = W x),
 *   which spreads an outlying input over its block, so both roundings err less. Without VNNI a
 *   portable loop computes the same sums on the dequantized values. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "rt_kernel.h"

#define P RT_QPANEL
#define BLK RT_QBLOCK
/* Rows multiplied per pass over a panel: their accumulators stay in registers. */
#define TILE_ROWS 4
/* Below this M*N*K a product is not worth splitting over threads. */
#define QMM_SPLIT_MIN (64 * 64 * 32)
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4096
#endif

int64_t rt_qweight_bytes(int fmt, int64_t n, int64_t k, int64_t group, int zp)
{
    int64_t panels = (n + P - 1) / P;
    if (fmt == RT_WEIGHT_FORMAT_BF16) return rt_mul(panels, rt_mul(k + k % 2, P * 2));
    int64_t scales = P * 2 * (zp ? 2 : 1), values = fmt == RT_WEIGHT_FORMAT_INT8 ? P * group : P * group / 2;
    return group > 0 ? rt_mul(rt_mul(panels, k / group), scales + values) : RT_HUGE;
}

int64_t rt_qmatmul_scratch_bytes(int fmt, int64_t m, int64_t k)
{
    return fmt == RT_WEIGHT_FORMAT_BF16 ? 0 : rt_mul(m, k + k / BLK * 8);
}

typedef struct {
    int64_t M, N, K, lda, ldc, group, panel_bytes;
    int fmt, zp, rotate;
    float alpha;
    const float *a, *bias, *res;
    const uint8_t *w;
    const int8_t *q; /* int formats: A quantized, M rows of K */
    const float *sb; /* and per row, per block: the scale s, and s * the sum of the block's q */
    float *out;
    rt_row_fn act;
} qmm;

static inline float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023, u;
    if (exp == 31) u = sign | 0x7f800000u | man << 13;
    else if (exp) u = sign | (exp + 112) << 23 | man << 13;
    else { /* zero or subnormal */
        float f = (float)man * 0x1p-24f;
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t read_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static const int8_t int4nl_levels[16] = RT_INT4NL_LEVELS;

/* t = H x for one block, H the orthonormal BLK-point Hadamard matrix (Sylvester's order): butterflies. */
static void hadamard_block(const float *x, float *t)
{
    memcpy(t, x, BLK * sizeof *t);
    for (int h = 1; h < BLK; h *= 2)
        for (int i = 0; i < BLK; i += 2 * h)
            for (int j = i; j < i + h; j++) {
                float a = t[j], b = t[j + h];
                t[j] = a + b, t[j + h] = a - b;
            }
    const float norm = 0.17677669529663687f; /* 1 / sqrt(BLK) */
    for (int i = 0; i < BLK; i++) t[i] *= norm;
}

/* ---- portable: the same sums on dequantized values ---- */

static void quantize_row_c(const float *row, int64_t k, int rotate, int8_t *q, float *sb)
{
    float t[BLK];
    for (int64_t b = 0; b < k / BLK; b++, row += BLK, q += BLK, sb += 2) {
        const float *x = row;
        if (rotate) hadamard_block(row, t), x = t;
        float amax = 0.f;
        int nan = 0;
        for (int i = 0; i < BLK; i++) {
            nan |= isnan(x[i]);
            amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        }
        float inv = amax > 0.f ? 127.f / amax : 0.f;
        int32_t sum = 0;
        for (int i = 0; i < BLK; i++) {
            float v = nearbyintf(x[i] * inv);
            q[i] = (int8_t)(isnan(v) ? 0 : v);
            sum += q[i];
        }
        sb[0] = nan ? NAN : amax / 127.f;
        sb[1] = sb[0] * (float)sum;
    }
}

/* Output j's weight for input k in panel w (which starts at the panel's first byte). */
static float weight_at(const qmm *p, const uint8_t *w, int64_t k, int j)
{
    if (p->fmt == RT_WEIGHT_FORMAT_BF16) {
        uint32_t u = (uint32_t)read_u16(w + (k / 2) * 4 * P + 4 * j + 2 * (k % 2)) << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    int int8 = p->fmt == RT_WEIGHT_FORMAT_INT8, nl = p->fmt == RT_WEIGHT_FORMAT_INT4NL;
    int64_t g = k / p->group, i = k % p->group;
    int64_t group_bytes = 2 * P * (p->zp ? 2 : 1) + (int8 ? P * p->group : P * p->group / 2);
    w += g * group_bytes;
    float d = half_to_float(read_u16(w + 2 * j));
    float m = p->zp ? half_to_float(read_u16(w + 2 * P + 2 * j)) : d * (int8 ? 128.f : 8.f);
    w += 2 * P * (p->zp ? 2 : 1);
    int u = int8 ? w[(i / 4) * 4 * P + 4 * j + i % 4] : w[(i / 8) * 4 * P + 4 * j + i % 4] >> (i % 8 < 4 ? 0 : 4) & 15;
    return nl ? d * (float)int4nl_levels[u] : d * (float)u - m;
}

/* Row r's input k as the product reads it: A's float (bf16), or its quantized value times its scale. */
static float input_at(const qmm *p, int64_t r, int64_t k)
{
    if (p->fmt == RT_WEIGHT_FORMAT_BF16) return p->a[r * p->lda + k];
    return p->sb[(r * (p->K / BLK) + k / BLK) * 2] * (float)p->q[r * p->K + k];
}

/* Portable and slow (a value decoded per multiply): for CPUs without AVX-512 VNNI. */
static void panels_c(const qmm *p, int64_t p0, int64_t p1)
{
    for (int64_t pn = p0; pn < p1; pn++) {
        const uint8_t *w = p->w + pn * p->panel_bytes;
        int64_t c0 = pn * P, nc = p->N - c0 < P ? p->N - c0 : P;
        for (int64_t r = 0; r < p->M; r++)
            for (int j = 0; j < nc; j++) {
                float s = 0.f;
                for (int64_t k = 0; k < p->K; k++) s += weight_at(p, w, k, j) * input_at(p, r, k);
                float *o = p->out + r * p->ldc + c0 + j;
                *o = p->alpha * s + (p->bias ? p->bias[c0 + j] : 0.f) + (p->res ? p->res[r * p->ldc + c0 + j] : 0.f);
            }
    }
}

/* ---- AVX-512 (bf16) and AVX-512 VNNI (int formats) ---- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_QMM 1
#define QMM_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")))
#define INLINE static inline __attribute__((always_inline))

/* One butterfly stage at distance h inside each 16-lane vector: lane j gets v[j] + v[j ^ h] when bit h
 * of j is clear, v[j ^ h] - v[j] when set (s: v with lanes j and j ^ h swapped, lanes: bit h set). */
INLINE QMM_TARGET __m512 butterfly(__m512 v, __m512 s, __mmask16 lanes)
{
    return _mm512_mask_sub_ps(_mm512_add_ps(v, s), lanes, s, v);
}

/* hadamard_block on the block's two vectors, in registers (the stages commute: any order is H) */
INLINE QMM_TARGET void hadamard_vectors(__m512 *v0, __m512 *v1)
{
    __m512 a = *v0, b = *v1;
    a = butterfly(a, _mm512_permute_ps(a, 0xB1), 0xAAAA), b = butterfly(b, _mm512_permute_ps(b, 0xB1), 0xAAAA);
    a = butterfly(a, _mm512_permute_ps(a, 0x4E), 0xCCCC), b = butterfly(b, _mm512_permute_ps(b, 0x4E), 0xCCCC);
    a = butterfly(a, _mm512_shuffle_f32x4(a, a, 0xB1), 0xF0F0), b = butterfly(b, _mm512_shuffle_f32x4(b, b, 0xB1), 0xF0F0);
    a = butterfly(a, _mm512_shuffle_f32x4(a, a, 0x4E), 0xFF00), b = butterfly(b, _mm512_shuffle_f32x4(b, b, 0x4E), 0xFF00);
    const __m512 norm = _mm512_set1_ps(0.17677669529663687f); /* 1 / sqrt(BLK) */
    *v0 = _mm512_mul_ps(_mm512_add_ps(a, b), norm), *v1 = _mm512_mul_ps(_mm512_sub_ps(a, b), norm);
}

QMM_TARGET static void quantize_row_avx512(const float *row, int64_t k, int rotate, int8_t *q, float *sb)
{
    for (int64_t b = 0; b < k / BLK; b++, row += BLK, q += BLK, sb += 2) {
        __m512 v0 = _mm512_loadu_ps(row), v1 = _mm512_loadu_ps(row + 16);
        if (rotate) hadamard_vectors(&v0, &v1);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        int nan = _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
        __m512 inv = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
        __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv)), i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(i1));
        int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        sb[0] = nan ? NAN : amax / 127.f;
        sb[1] = sb[0] * (float)sum;
    }
}

INLINE QMM_TARGET __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* How int_rows reads a block's values: bytes; nibbles (the odd vectors unshifted: 16 x their values);
 * nibbles looked up in int4nl's levels (+ 128, as bytes). */
enum { BYTES, NIBBLES, LEVELS };

/* One block's integer products of one row with one panel's 32 x 16 values v (NIBBLES' odd vectors
 * hold 16 x their values): four short chains, as vpdpbusd's latency bounds a row. */
INLINE QMM_TARGET __m512i block_dot(const __m512i *v, const int8_t *xq, const int kind)
{
    const __m512i zero = _mm512_setzero_si512();
    __m512i a0 = _mm512_dpbusd_epi32(zero, v[0], bcast4(xq));
    __m512i a1 = _mm512_dpbusd_epi32(zero, v[1], bcast4(xq + 4));
    __m512i a2 = _mm512_dpbusd_epi32(zero, v[2], bcast4(xq + 8));
    __m512i a3 = _mm512_dpbusd_epi32(zero, v[3], bcast4(xq + 12));
    a0 = _mm512_dpbusd_epi32(a0, v[4], bcast4(xq + 16));
    a1 = _mm512_dpbusd_epi32(a1, v[5], bcast4(xq + 20));
    a2 = _mm512_dpbusd_epi32(a2, v[6], bcast4(xq + 24));
    a3 = _mm512_dpbusd_epi32(a3, v[7], bcast4(xq + 28));
    __m512i odd = _mm512_add_epi32(a1, a3);
    return _mm512_add_epi32(_mm512_add_epi32(a0, a2), kind == NIBBLES ? _mm512_srai_epi32(odd, 4) : odd);
}

/* y[j * TILE_ROWS + r] = rows r0 .. r0 + R of A times panel wp[j], j < NP (int formats), unscaled by
 * alpha. Two panels per pass give each row twice the independent work: one row alone is bound by
 * its chains' latency (M = 2 costs 1.2x M = 1), not by the multiplies. */
INLINE QMM_TARGET void int_rows(const qmm *p, const uint8_t *const *wp, int64_t r0, const int R, const int NP,
                                const int kind, __m512 *y)
{
    const int64_t nb = p->K / BLK, gb = p->group / BLK;
    const __m512i low = _mm512_set1_epi8(0x0f), high = _mm512_set1_epi8((char)0xf0);
    const __m512 zconst = _mm512_set1_ps(kind == NIBBLES ? 8.f : 128.f);
    /* int4nl's levels + 128 in every 128-bit lane (xor 0x80 adds 128 to a signed byte), for vpshufb */
    const __m512i lut = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)int4nl_levels)),
                                         _mm512_set1_epi8((char)0x80));
    const uint8_t *w[2] = {wp[0], wp[NP - 1]};
    for (int j = 0; j < NP; j++)
        for (int r = 0; r < R; r++) y[j * TILE_ROWS + r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < p->K / p->group; g++) {
        __m512 d[2], m[2], s1[2][TILE_ROWS];
        float s2[TILE_ROWS];
        for (int j = 0; j < NP; j++) {
            d[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[j]));
            w[j] += 2 * P;
            if (p->zp) {
                m[j] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w[j]));
                w[j] += 2 * P;
            } else
                m[j] = _mm512_mul_ps(d[j], zconst);
            for (int r = 0; r < R; r++) s1[j][r] = _mm512_setzero_ps();
        }
        for (int r = 0; r < R; r++) s2[r] = 0.f;
        for (int64_t bb = 0; bb < gb; bb++) {
            int64_t blk = g * gb + bb;
            __m512i v[2][8];
            for (int j = 0; j < NP; j++) {
                for (int i = 0; i < (kind == BYTES ? 8 : 4); i++)
                    _mm_prefetch((const char *)w[j] + PREFETCH_AHEAD + 64 * i, _MM_HINT_T0);
                if (kind == BYTES) {
                    for (int i = 0; i < 8; i++) v[j][i] = _mm512_loadu_si512(w[j] + 64 * i);
                    w[j] += 8 * 64;
                } else if (kind == NIBBLES) {
                    for (int i = 0; i < 4; i++) {
                        __m512i b = _mm512_loadu_si512(w[j] + 64 * i);
                        v[j][2 * i] = _mm512_and_si512(b, low);
                        v[j][2 * i + 1] = _mm512_and_si512(b, high); /* 16 x the high nibbles: unshifted */
                    }
                    w[j] += 4 * 64;
                } else {
                    for (int i = 0; i < 4; i++) {
                        __m512i b = _mm512_loadu_si512(w[j] + 64 * i);
                        v[j][2 * i] = _mm512_shuffle_epi8(lut, _mm512_and_si512(b, low));
                        v[j][2 * i + 1] = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(b, 4), low));
                    }
                    w[j] += 4 * 64;
                }
            }
            for (int r = 0; r < R; r++) {
                const int8_t *xq = p->q + (r0 + r) * p->K + blk * BLK;
                const float *sb = p->sb + ((r0 + r) * nb + blk) * 2;
                for (int j = 0; j < NP; j++)
                    s1[j][r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(block_dot(v[j], xq, kind)), _mm512_set1_ps(sb[0]), s1[j][r]);
                s2[r] += sb[1];
            }
        }
        for (int j = 0; j < NP; j++)
            for (int r = 0; r < R; r++)
                y[j * TILE_ROWS + r] = _mm512_fnmadd_ps(m[j], _mm512_set1_ps(s2[r]),
                                                        _mm512_fmadd_ps(d[j], s1[j][r], y[j * TILE_ROWS + r]));
    }
}

/* The same for bf16: A's floats times the widened weights, two pairs of inputs per step (four
 * chains per row: the FMA's latency would bound one). */
INLINE QMM_TARGET void bf16_rows(const qmm *p, const uint8_t *w, int64_t r0, const int R, __m512 *y)
{
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    __m512 acc[TILE_ROWS][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < 4; c++) acc[r][c] = _mm512_setzero_ps();
    int64_t pairs = p->K / 2, kk = 0;
    for (; kk + 2 <= pairs; kk += 2, w += 8 * P) {
        _mm_prefetch((const char *)w + PREFETCH_AHEAD, _MM_HINT_T0);
        _mm_prefetch((const char *)w + PREFETCH_AHEAD + 64, _MM_HINT_T0);
        __m512i v0 = _mm512_loadu_si512(w), v1 = _mm512_loadu_si512(w + 4 * P);
        __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), w1 = _mm512_castsi512_ps(_mm512_and_si512(v0, high));
        __m512 w2 = _mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)), w3 = _mm512_castsi512_ps(_mm512_and_si512(v1, high));
        for (int r = 0; r < R; r++) {
            const float *x = p->a + (r0 + r) * p->lda + 2 * kk;
            acc[r][0] = _mm512_fmadd_ps(w0, _mm512_set1_ps(x[0]), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(w1, _mm512_set1_ps(x[1]), acc[r][1]);
            acc[r][2] = _mm512_fmadd_ps(w2, _mm512_set1_ps(x[2]), acc[r][2]);
            acc[r][3] = _mm512_fmadd_ps(w3, _mm512_set1_ps(x[3]), acc[r][3]);
        }
    }
    if (kk < pairs) {
        __m512i v = _mm512_loadu_si512(w);
        __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), wo = _mm512_castsi512_ps(_mm512_and_si512(v, high));
        for (int r = 0; r < R; r++) {
            const float *x = p->a + (r0 + r) * p->lda + 2 * kk;
            acc[r][0] = _mm512_fmadd_ps(we, _mm512_set1_ps(x[0]), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(wo, _mm512_set1_ps(x[1]), acc[r][1]);
        }
        w += 4 * P;
    }
    if (p->K % 2) {
        __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(w), 16));
        for (int r = 0; r < R; r++)
            acc[r][0] = _mm512_fmadd_ps(we, _mm512_set1_ps(p->a[(r0 + r) * p->lda + p->K - 1]), acc[r][0]);
    }
    for (int r = 0; r < R; r++)
        y[r] = _mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), _mm512_add_ps(acc[r][2], acc[r][3]));
}

/* One function per (format, rows, panels) triple, so each loop is compiled for its constants. */
typedef void (*rows_fn)(const qmm *, const uint8_t *const *, int64_t, __m512 *);
#define ROWS_FNS(R)                                                                                      \
    QMM_TARGET static void int8_rows_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y)  \
    { int_rows(p, w, r0, R, 1, BYTES, y); }                                                              \
    QMM_TARGET static void int4_rows_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y)  \
    { int_rows(p, w, r0, R, 1, NIBBLES, y); }                                                            \
    QMM_TARGET static void int4nl_rows_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y) \
    { int_rows(p, w, r0, R, 1, LEVELS, y); }                                                             \
    QMM_TARGET static void bf16_rows_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y)  \
    { bf16_rows(p, w[0], r0, R, y); }
ROWS_FNS(1)
ROWS_FNS(2)
ROWS_FNS(3)
ROWS_FNS(4)
#define PAIR_FNS(R)                                                                                      \
    QMM_TARGET static void int8_pair_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y)  \
    { int_rows(p, w, r0, R, 2, BYTES, y); }                                                              \
    QMM_TARGET static void int4_pair_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y)  \
    { int_rows(p, w, r0, R, 2, NIBBLES, y); }                                                            \
    QMM_TARGET static void int4nl_pair_##R(const qmm *p, const uint8_t *const *w, int64_t r0, __m512 *y) \
    { int_rows(p, w, r0, R, 2, LEVELS, y); }
PAIR_FNS(1)
static const rows_fn rows_fns[RT_WEIGHT_FORMAT_COUNT][TILE_ROWS] = {
    [RT_WEIGHT_FORMAT_BF16] = {bf16_rows_1, bf16_rows_2, bf16_rows_3, bf16_rows_4},
    [RT_WEIGHT_FORMAT_INT8] = {int8_rows_1, int8_rows_2, int8_rows_3, int8_rows_4},
    [RT_WEIGHT_FORMAT_INT4] = {int4_rows_1, int4_rows_2, int4_rows_3, int4_rows_4},
    [RT_WEIGHT_FORMAT_INT4NL] = {int4nl_rows_1, int4nl_rows_2, int4nl_rows_3, int4nl_rows_4},
};
/* Two panels per pass for one row (decoding: 1.2-1.3x in cache); two rows already keep the units
 * busy (measured: no gain from pairs at M = 2). */
#define PAIR_ROWS 1
static const rows_fn pair_fns[RT_WEIGHT_FORMAT_COUNT][PAIR_ROWS] = {
    [RT_WEIGHT_FORMAT_INT8] = {int8_pair_1},
    [RT_WEIGHT_FORMAT_INT4] = {int4_pair_1},
    [RT_WEIGHT_FORMAT_INT4NL] = {int4nl_pair_1},
};

/* Output panels [p0, p1): every row, then alpha, bias and residual as each tile is stored. */
QMM_TARGET static void panels_avx512(const qmm *p, int64_t p0, int64_t p1)
{
    const __m512 alpha = _mm512_set1_ps(p->alpha);
    int pairs = p->M <= PAIR_ROWS && pair_fns[p->fmt][0];
    for (int64_t pn = p0; pn < p1;) {
        int np = pairs && pn + 1 < p1 ? 2 : 1;
        const uint8_t *w[2] = {p->w + pn * p->panel_bytes, p->w + (pn + np - 1) * p->panel_bytes};
        for (int64_t r0 = 0; r0 < p->M; r0 += TILE_ROWS) {
            int R = p->M - r0 < TILE_ROWS ? (int)(p->M - r0) : TILE_ROWS;
            __m512 y[2 * TILE_ROWS];
            (np == 2 ? pair_fns[p->fmt][R - 1] : rows_fns[p->fmt][R - 1])(p, w, r0, y);
            for (int j = 0; j < np; j++) {
                int64_t c0 = (pn + j) * P, nc = p->N - c0 < P ? p->N - c0 : P;
                __mmask16 mask = (__mmask16)(nc == P ? 0xffffu : (1u << nc) - 1);
                __m512 bias = p->bias ? _mm512_maskz_loadu_ps(mask, p->bias + c0) : _mm512_setzero_ps();
                for (int r = 0; r < R; r++) {
                    __m512 v = _mm512_fmadd_ps(alpha, y[j * TILE_ROWS + r], bias);
                    if (p->res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p->res + (r0 + r) * p->ldc + c0));
                    _mm512_mask_storeu_ps(p->out + (r0 + r) * p->ldc + c0, mask, v);
                }
            }
        }
        pn += np;
    }
}

static int have_avx512(int fmt)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") &&
           (fmt == RT_WEIGHT_FORMAT_BF16 || __builtin_cpu_supports("avx512vnni"));
}
#endif

int rt_k_qmatmul(const rt_op *op, char *const *arg)
{
    const rt_qmatmul_ints *ip = &op->ip.qmatmul;
    qmm p = {.M = ip->M, .N = ip->N, .K = ip->K, .lda = ip->lda, .ldc = ip->ldc, .group = ip->group,
             .fmt = (int)ip->format, .zp = (int)ip->zero_point, .rotate = (int)ip->rotate,
             .alpha = (float)op->fp.qmatmul.alpha,
             .a = (const float *)arg[RT_QMATMUL_A], .bias = (const float *)arg[RT_QMATMUL_BIAS],
             .res = (const float *)arg[RT_QMATMUL_RESIDUAL], .w = (const uint8_t *)arg[RT_QMATMUL_W],
             .out = (float *)arg[RT_QMATMUL_OUT], .act = rt_matmul_acts[ip->act]};
    if (p.M == 0 || p.N == 0) return RT_OK;
    int64_t panels = (p.N + P - 1) / P;
    p.panel_bytes = rt_qweight_bytes(p.fmt, P, p.K, p.group, p.zp);
    void (*run)(const qmm *, int64_t, int64_t) = panels_c;
    void (*quantize)(const float *, int64_t, int, int8_t *, float *) = quantize_row_c;
#ifdef HAVE_AVX512_QMM
    if (have_avx512(p.fmt)) run = panels_avx512, quantize = quantize_row_avx512;
#endif
    int nth = (double)p.M * (double)p.N * (double)p.K >= QMM_SPLIT_MIN ? rt_nthreads : 1;
    if (p.fmt != RT_WEIGHT_FORMAT_BF16) { /* the checker saw the scratch: M*K bytes, then the floats */
        int8_t *q = (int8_t *)arg[RT_QMATMUL_SCRATCH];
        float *sb = (float *)(arg[RT_QMATMUL_SCRATCH] + p.M * p.K);
        p.q = q, p.sb = sb;
        RT_FOR(nth > 1 && p.M >= 2 * nth, r, p.M,
               { quantize(p.a + r * p.lda, p.K, p.rotate, q + r * p.K, sb + r * (p.K / BLK) * 2); });
    }
    int64_t chunk = (panels + nth - 1) / nth;
    RT_FOR(nth > 1, t, nth, {
        int64_t lo = t * chunk, hi = lo + chunk < panels ? lo + chunk : panels;
        if (lo < hi) {
            run(&p, lo, hi);
            if (p.act)
                for (int64_t r = 0; r < p.M; r++) {
                    float *o = p.out + r * p.ldc + lo * P;
                    int64_t n = (hi * P < p.N ? hi * P : p.N) - lo * P;
                    p.act(o, o, n, 0.f, 0.f);
                }
        }
    });
    return RT_OK;
}

int rt_c_qmatmul(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_qmatmul_ints *ip = &op->ip.qmatmul;
    int64_t M = ip->M, N = ip->N, K = ip->K, group = ip->group;
    int fmt = (int)ip->format, zp = (int)ip->zero_point;
    RT_CHECK(K > 0, "K must be at least 1");
    RT_CHECK(fmt == RT_WEIGHT_FORMAT_BF16 || (group > 0 && group % BLK == 0 && K % group == 0),
             "an int format's group (%lld) must be a multiple of %d dividing K = %lld", (long long)group, BLK,
             (long long)K);
    RT_CHECK(!zp || fmt == RT_WEIGHT_FORMAT_INT4, "only int4 takes a zero point");
    RT_CHECK(!ip->rotate || fmt != RT_WEIGHT_FORMAT_BF16, "only int formats rotate their inputs");
    RT_CHECK(ip->lda >= K && ip->ldc >= N, "lda %lld < K %lld or ldc %lld < N %lld", (long long)ip->lda,
             (long long)K, (long long)ip->ldc, (long long)N);
    RT_CHECK(fabs(op->fp.qmatmul.alpha) <= FLT_MAX, "alpha %g is not a finite float", op->fp.qmatmul.alpha);
    int64_t arows = M ? rt_add(rt_mul(M - 1, ip->lda), K) : 0, crows = M ? rt_add(rt_mul(M - 1, ip->ldc), N) : 0;
    int64_t scratch = rt_qmatmul_scratch_bytes(fmt, M, K);
    RT_CHECK(scratch == 0 || avail[RT_QMATMUL_SCRATCH] >= 0, "an int format needs its scratch operand");
    return rt_need(op, avail, RT_QMATMUL_A, arows, 4, "a", msg, msglen) ||
           rt_need(op, avail, RT_QMATMUL_W, rt_qweight_bytes(fmt, N, K, group, zp), 1, "w", msg, msglen) ||
           rt_need_opt(op, avail, RT_QMATMUL_BIAS, N, 4, "bias", msg, msglen) ||
           rt_need_opt(op, avail, RT_QMATMUL_RESIDUAL, crows, 4, "residual", msg, msglen) ||
           (scratch && rt_need(op, avail, RT_QMATMUL_SCRATCH, scratch / 4, 4, "scratch", msg, msglen)) ||
           rt_need(op, avail, RT_QMATMUL_OUT, crows, 4, "out", msg, msglen);
}
