/* One-row products on constant weights stored losslessly in 3.5 bytes per float ("split").
 *
 * At one row a matmul reads its whole weight matrix once per call and is bound by that
 * stream: GPT-2 small at one token reads 472 MiB at the ~28 GB/s this machine gives every
 * engine. Weights use few distinct top bytes (sign and high exponent bits), so each float
 * is kept as its low 16 bits, its next 8 bits, and a 4-bit code for its top byte: a sign
 * bit and an offset 0-6 from the matrix's most common run of seven exponent prefixes
 * (offset 7: "escaped", decoded as 0.0f). Escaped weights are added back from a per-row list
 * (GPT-2 at init: ~1 in 13,000). Decoding gives back the very same floats, so a product
 * differs from BLAS's only in summation order.
 *
 * Layout, per output row: the first k - k % CHUNK inputs in CHUNK-wide chunks (lo: 2 bytes,
 * mid: 1 byte, codes: half a byte each; byte b of a chunk's codes holds input b in its low
 * nibble and input b + CHUNK/2 in its high one), the last k % CHUNK as plain floats. */
#include <stdint.h>
#include <stdlib.h>

#include "rt_kernel.h"

#define CHUNK RT_SPLIT_CHUNK
#define ESCAPE 7

/* sum_i x[i] * w[i] over a row's kc encoded weights: (lo, mid, codes, kc, top table, x). */
typedef float (*row_dot_fn)(const uint16_t *, const uint8_t *, const uint8_t *, int64_t,
                            const uint32_t *, const float *);
static row_dot_fn row_dot(void);

typedef struct {
    int64_t n, k, kc;      /* outputs, inputs, inputs in whole chunks */
    row_dot_fn dot;        /* the fastest decoder this CPU runs */
    uint32_t base;         /* exponent prefix of offset 0 */
    uint32_t top[16];      /* code -> the float's top byte, in place (bits 24-31); 0 for escapes */
    uint16_t *lo;          /* [n][kc] */
    uint8_t *mid;          /* [n][kc] */
    uint8_t *codes;        /* [n][kc / 2] */
    float *tail;           /* [n][k - kc] */
    int64_t *esc_start;    /* [n + 1]: row j's escapes are esc_at/esc_w[esc_start[j], esc_start[j+1]) */
    int32_t *esc_at;
    float *esc_w;
} split_b;

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* The code of a float's top byte, or ESCAPE. */
static uint32_t code_of(uint32_t u, uint32_t base)
{
    uint32_t prefix = (u >> 24) & 0x7f, off = prefix - base; /* wraps when prefix < base */
    return off < ESCAPE ? ((u >> 31) << 3) | off : ESCAPE;
}

/* The run of seven exponent prefixes that covers the most of the weights in whole chunks (the
 * first kc inputs of each row); *escapes = the others there. */
static uint32_t pick_base(const float *b, int64_t ldb, int tb, int64_t n, int64_t kc, int64_t *escapes)
{
    int64_t count[128] = {0}, rows = tb ? n : kc, cols = tb ? kc : n;
    for (int64_t r = 0; r < rows; r++) /* in memory order */
        for (int64_t c = 0; c < cols; c++) count[(bits(b[r * ldb + c]) >> 24) & 0x7f]++;
    uint32_t best = 0;
    int64_t best_n = -1;
    for (uint32_t s = 0; s + ESCAPE <= 128; s++) {
        int64_t c = 0;
        for (uint32_t o = 0; o < ESCAPE; o++) c += count[s + o];
        if (c > best_n) best = s, best_n = c;
    }
    *escapes = n * kc - best_n;
    return best;
}

static void split_free(split_b *s)
{
    if (!s) return;
    free(s->lo);
    free(s->mid);
    free(s->codes);
    free(s->tail);
    free(s->esc_start);
    free(s->esc_at);
    free(s->esc_w);
    free(s);
}

/* Encode output row j (its k weights in w) into s; its escapes go to esc_at/esc_w from *nesc. */
static void encode_row(split_b *s, int64_t j, const float *w, int64_t *nesc)
{
    uint16_t *lo = s->lo + j * s->kc;
    uint8_t *mid = s->mid + j * s->kc, *codes = s->codes + j * (s->kc / 2);
    for (int64_t i = 0; i < s->kc; i++) {
        uint32_t u = bits(w[i]), c = code_of(u, s->base);
        if (c == ESCAPE) {
            s->esc_at[*nesc] = (int32_t)i;
            s->esc_w[(*nesc)++] = w[i];
            u = 0;
        }
        lo[i] = (uint16_t)u;
        mid[i] = (uint8_t)(u >> 16);
        int64_t c0 = i / CHUNK * CHUNK, b = i - c0;
        uint8_t *cb = codes + c0 / 2 + b % (CHUNK / 2);
        *cb = (uint8_t)(b < CHUNK / 2 ? (*cb & 0xf0) | c : (*cb & 0x0f) | (c << 4));
    }
    memcpy(s->tail + j * (s->k - s->kc), w + s->kc, (size_t)(s->k - s->kc) * sizeof(float));
}

/* Output rows at a time when B arrives [K, N]: their weights are gathered once per input row. */
#define GATHER_ROWS 16

/* Escapes cost 8 bytes each: beyond one weight in this many the form stops paying. */
#define MAX_ESCAPE_SHARE 64

void *rt_split_b_make(const float *b, int64_t ldb, int tb, int64_t n, int64_t k, int *unfit)
{
    int64_t escapes, kc = k / CHUNK * CHUNK;
    uint32_t base = pick_base(b, ldb, tb, n, kc, &escapes);
    *unfit = escapes > n * kc / MAX_ESCAPE_SHARE;
    if (*unfit) return NULL;
    split_b *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->n = n;
    s->k = k;
    s->kc = kc;
    s->base = base;
    s->dot = row_dot();
    for (uint32_t c = 0; c < 16; c++)
        s->top[c] = (c & 7) == ESCAPE ? 0 : ((c >> 3) << 31) | (s->base + (c & 7)) << 24;
    s->lo = malloc((size_t)(n * s->kc) * sizeof *s->lo + 1);
    s->mid = malloc((size_t)(n * s->kc) + 1);
    s->codes = calloc((size_t)(n * s->kc / 2) + 1, 1);
    s->tail = malloc((size_t)(n * (k - s->kc)) * sizeof(float) + 1);
    s->esc_start = malloc((size_t)(n + 1) * sizeof *s->esc_start);
    s->esc_at = malloc((size_t)escapes * sizeof *s->esc_at + 1); /* pick_base counted them */
    s->esc_w = malloc((size_t)escapes * sizeof *s->esc_w + 1);
    float *rows = tb ? NULL : malloc((size_t)(GATHER_ROWS * k) * sizeof(float));
    if (!(s->lo && s->mid && s->codes && s->tail && s->esc_start && s->esc_at && s->esc_w && (tb || rows))) {
        free(rows);
        split_free(s);
        return NULL;
    }
    int64_t nesc = 0;
    for (int64_t j0 = 0; j0 < n; j0 += GATHER_ROWS) {
        int64_t nr = n - j0 < GATHER_ROWS ? n - j0 : GATHER_ROWS;
        if (!tb) /* [K, N]: gather these outputs' columns, one contiguous run per input row */
            for (int64_t i = 0; i < k; i++)
                for (int64_t r = 0; r < nr; r++) rows[r * k + i] = b[i * ldb + j0 + r];
        for (int64_t r = 0; r < nr; r++) {
            s->esc_start[j0 + r] = nesc;
            encode_row(s, j0 + r, tb ? b + (j0 + r) * ldb : rows + r * k, &nesc);
        }
    }
    free(rows);
    s->esc_start[n] = nesc;
    return s;
}

void rt_split_b_free(void *s) { split_free((split_b *)s); }

static inline float decode(const uint32_t *top, uint32_t code, uint8_t mid, uint16_t lo)
{
    uint32_t u = top[code] | (uint32_t)mid << 16 | lo; /* escapes: all three parts 0 */
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* sum_i x[i] * w[i] over one row's whole chunks: portable code (compilers vectorise the
 * decoding poorly, slower than BLAS on the plain floats; used only where AVX-512 is missing). */
static float row_dot_c(const uint16_t *lo, const uint8_t *mid, const uint8_t *codes, int64_t kc,
                       const uint32_t *top, const float *x)
{
    float s = 0.f;
    for (int64_t c = 0; c < kc; c += CHUNK, lo += CHUNK, mid += CHUNK, codes += CHUNK / 2, x += CHUNK)
        for (int i = 0; i < CHUNK / 2; i++)
            s += decode(top, codes[i] & 15u, mid[i], lo[i]) * x[i] +
                 decode(top, codes[i] >> 4, mid[i + CHUNK / 2], lo[i + CHUNK / 2]) * x[i + CHUNK / 2];
    return s;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX512_KERNEL 1

/* The same with AVX-512F (and AVX2): the top bytes come from one 16-entry permute, ~0.6 instructions
 * per weight, so the memory stream sets the pace. */
__attribute__((target("avx512f,avx2"))) static float
row_dot_avx512(const uint16_t *lo, const uint8_t *mid, const uint8_t *codes, int64_t kc,
               const uint32_t *top, const float *x)
{
    const __m512i table = _mm512_loadu_si512(top);
    const __m256i nib = _mm256_set1_epi8(15);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t c = 0; c < kc; c += CHUNK, lo += CHUNK, mid += CHUNK, codes += CHUNK / 2, x += CHUNK) {
        __m256i cb = _mm256_loadu_si256((const __m256i *)codes);
        __m256i lo4 = _mm256_and_si256(cb, nib), hi4 = _mm256_and_si256(_mm256_srli_epi16(cb, 4), nib);
        __m128i quarter[4] = {_mm256_castsi256_si128(lo4), _mm256_extracti128_si256(lo4, 1),
                              _mm256_castsi256_si128(hi4), _mm256_extracti128_si256(hi4, 1)};
        for (int g = 0; g < 4; g++) { /* inputs 16g .. 16g + 15 of the chunk */
            __m512i t = _mm512_permutexvar_epi32(_mm512_cvtepu8_epi32(quarter[g]), table);
            __m512i m = _mm512_slli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(mid + 16 * g))), 16);
            __m512i l = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(lo + 16 * g)));
            __m512 w = _mm512_castsi512_ps(_mm512_or_si512(t, _mm512_or_si512(m, l)));
            __m512 xv = _mm512_loadu_ps(x + 16 * g);
            if (g & 1)
                acc1 = _mm512_fmadd_ps(w, xv, acc1);
            else
                acc0 = _mm512_fmadd_ps(w, xv, acc0);
        }
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}
#endif

static row_dot_fn row_dot(void)
{
#ifdef HAVE_AVX512_KERNEL
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2")) return row_dot_avx512;
#endif
    return row_dot_c;
}

int rt_split_fast(void) { return row_dot() != row_dot_c; }

void rt_split_matvec(const void *state, int64_t col0, int64_t n, const float *x, float alpha,
                     float beta, float *y)
{
    const split_b *s = (const split_b *)state;
    int64_t k = s->k, kc = s->kc, nt = k - kc;
    for (int64_t j = col0; j < col0 + n; j++) {
        float acc = s->dot(s->lo + j * kc, s->mid + j * kc, s->codes + j * (kc / 2), kc, s->top, x);
        for (int64_t t = 0; t < nt; t++) acc += s->tail[j * nt + t] * x[kc + t];
        for (int64_t e = s->esc_start[j]; e < s->esc_start[j + 1]; e++) acc += s->esc_w[e] * x[s->esc_at[e]];
        float *yj = y + (j - col0);
        *yj = alpha * acc + (beta != 0.f ? *yj : 0.f);
    }
}
