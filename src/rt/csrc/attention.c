/* Scaled dot-product attention in one pass over keys (online softmax), reading
 * q/k/v/mask/out through strides so head splitting needs no copies. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "rt_kernel.h"

/* Tiles (rt/abi.py, which sizes the scratch from them): query rows per block (the online-softmax
 * state kept in cache), keys per block, register tile width (one AVX-512 register, two AVX2 ones). */
#define BQ RT_ATTENTION_BQ
#define BK RT_ATTENTION_BK
#define RT_LANES RT_ATTENTION_LANES
#define RT_DIRECT_ROWS 8 /* tasks with fewer query rows skip packing (attn_direct) */

/* The query heads sharing one K/V head (grouped-query attention: kv_group of them, 1 for plain
 * multi-head) run in one task, so K and V are packed once for the group. */
typedef struct {
    const float *q, *k, *v, *mask; /* q, mask and o: the group's first query head */
    float *o;
    int64_t Sq, Sk, D, Dv, q_ss, k_ss, v_ss, o_ss, m_sq, m_sk;
    int64_t heads, q_sh, o_sh, m_sh; /* query heads in the group, and their strides */
    int causal;
    float scale;
} attn_head;

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* Per-thread scratch floats: packed K^T and V for all keys, plus one query block. */
int64_t rt_attention_scratch_floats(int64_t Sk, int64_t D, int64_t Dv)
{
    int64_t Skp = round_up(Sk, BK), Dvp = round_up(Dv, RT_LANES);
    return round_up(D * Skp + Skp * Dvp + BQ * D + BQ * BK + BQ * Dvp, 16);
}

/* A register of RT_LANES floats through GCC vector extensions: the loop vectoriser
 * does not reliably turn small 2-D tiles into registers, this does, for every ISA clone
 * (one zmm, two ymm or four xmm). aligned(4) allows unaligned loads and stores. */
typedef float vlane __attribute__((vector_size(RT_LANES * sizeof(float)), aligned(4), may_alias));
#define RT_TILE static inline __attribute__((always_inline))

/* Register tiles of ROWS query rows x NV vlanes (keys, or value columns), constants where inlined.
 * An FMA's latency times two FMA ports wants >= 8 independent sums in flight: AVX-512's 32 registers
 * hold an 8 x 2 tile (16 sums); AVX2 holds a vlane in two of its 16, so it keeps 4 x 1 (8 sums). */
#define MAX_ROWS 8
#define MAX_NV 2

/* s[nqp][BK] (first nkp columns, a multiple of NV vlanes) = q[nqp][D] @ kt[D][.] (row stride ldk). */
RT_TILE void scores_tile(const float *q, const float *kt, int64_t ldk, float *s, int64_t D, int64_t nqp,
                         int64_t nkp, const int ROWS, const int NV)
{
    for (int64_t i0 = 0; i0 < nqp; i0 += ROWS)
        for (int64_t j0 = 0; j0 < nkp; j0 += NV * RT_LANES) {
            vlane c[MAX_ROWS][MAX_NV] = {{{0}}};
            for (int64_t d = 0; d < D; d++) {
                const float *krow = kt + d * ldk + j0;
                for (int u = 0; u < NV; u++) {
                    vlane b = *(const vlane *)(krow + u * RT_LANES);
                    for (int r = 0; r < ROWS; r++) c[r][u] += q[(i0 + r) * D + d] * b;
                }
            }
            for (int r = 0; r < ROWS; r++)
                for (int u = 0; u < NV; u++) *(vlane *)(s + (i0 + r) * BK + j0 + u * RT_LANES) = c[r][u];
        }
}

/* acc[nqp][Dvp] (columns e0 .. e0 + NV vlanes) += p[nqp][BK] (first nk columns) @ v[nk][.] (row stride ldv). */
RT_TILE void pv_cols(const float *p, const float *v, int64_t ldv, float *acc, int64_t Dvp, int64_t nqp,
                     int64_t nk, int64_t e0, const int ROWS, const int NV)
{
    for (int64_t i0 = 0; i0 < nqp; i0 += ROWS) {
        vlane c[MAX_ROWS][MAX_NV];
        for (int r = 0; r < ROWS; r++)
            for (int u = 0; u < NV; u++) c[r][u] = *(const vlane *)(acc + (i0 + r) * Dvp + e0 + u * RT_LANES);
        for (int64_t j = 0; j < nk; j++)
            for (int u = 0; u < NV; u++) {
                vlane b = *(const vlane *)(v + j * ldv + e0 + u * RT_LANES);
                for (int r = 0; r < ROWS; r++) c[r][u] += p[(i0 + r) * BK + j] * b;
            }
        for (int r = 0; r < ROWS; r++)
            for (int u = 0; u < NV; u++) *(vlane *)(acc + (i0 + r) * Dvp + e0 + u * RT_LANES) = c[r][u];
    }
}

RT_TILE void pv_tile(const float *p, const float *v, int64_t ldv, float *acc, int64_t nqp, int64_t nk,
                     int64_t Dvp, const int ROWS, const int NV)
{
    int64_t e0 = 0;
    for (; e0 + NV * RT_LANES <= Dvp; e0 += NV * RT_LANES) pv_cols(p, v, ldv, acc, Dvp, nqp, nk, e0, ROWS, NV);
    for (; e0 < Dvp; e0 += RT_LANES) pv_cols(p, v, ldv, acc, Dvp, nqp, nk, e0, ROWS, 1);
}

/* Few query rows (decoding): packing K and V would cost more than it saves, so each
 * row reads them in place: dot products, a plain softmax over the row, then p @ V.
 * s holds Sk scores followed by Dv accumulators. */
RT_SIMD static void attn_direct(const attn_head *p, int64_t qa, int64_t qb, float *s)
{
    int64_t D = p->D, Dv = p->Dv;
    float *acc = s + round_up(p->Sk, 16);
    for (int64_t g = 0; g < p->heads; g++)
        for (int64_t qi = qa; qi < qb; qi++) {
            int64_t kend = p->causal && qi + 1 < p->Sk ? qi + 1 : p->Sk;
            const float *q = p->q + g * p->q_sh + qi * p->q_ss;
            const float *mrow = p->mask ? p->mask + g * p->m_sh + qi * p->m_sq : NULL;
            float *orow = p->o + g * p->o_sh + qi * p->o_ss, m = -INFINITY;
            for (int64_t j = 0; j < kend; j++) {
                const float *kr = p->k + j * p->k_ss;
                float dot = 0.f;
#pragma omp simd reduction(+ : dot)
                for (int64_t d = 0; d < D; d++) dot += q[d] * kr[d];
                s[j] = dot * p->scale + (mrow ? mrow[j * p->m_sk] : 0.f);
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t e = 0; e < Dv; e++) acc[e] = 0.f;
            float sum = 0.f;
            if (m != -INFINITY) { /* else no visible key: zeros, as torch SDPA gives */
#pragma omp simd reduction(+ : sum)
                for (int64_t j = 0; j < kend; j++) {
                    s[j] = rt_expf(s[j] - m);
                    sum += s[j];
                }
                for (int64_t j = 0; j < kend; j++) {
                    const float *vr = p->v + j * p->v_ss;
                    for (int64_t e = 0; e < Dv; e++) acc[e] += s[j] * vr[e];
                }
            }
            float inv = sum > 0.f ? 1.f / sum : 0.f;
            for (int64_t e = 0; e < Dv; e++) orow[e] = acc[e] * inv;
        }
}

/* One block of nq (<= BQ) query rows from q0 of one head: an online softmax over key blocks,
 * skipping blocks a causal mask hides entirely. kt: K^T [D][Skp]; v: V rows (stride ldv, Dvp
 * columns readable); q, mask, o: this head's. */
RT_TILE void attn_block(const attn_head *p, const float *q, const float *mask, float *o, const float *kt,
                        int64_t Skp, const float *v, int64_t ldv, int64_t kend, int64_t q0, int64_t nq,
                        float *qt, float *s, float *acc, const int ROWS, const int NV)
{
    int64_t D = p->D, Dv = p->Dv, Dvp = round_up(Dv, RT_LANES), nqp = round_up(nq, ROWS);
    float mx[BQ], l[BQ];
    for (int64_t i = 0; i < nqp; i++) {
        mx[i] = -INFINITY;
        l[i] = 0.f;
        for (int64_t d = 0; d < D; d++) qt[i * D + d] = i < nq ? q[(q0 + i) * p->q_ss + d] * p->scale : 0.f;
    }
    memset(acc, 0, (size_t)(nqp * Dvp) * sizeof(float));
    int64_t kstop = p->causal && q0 + nq < kend ? q0 + nq : kend;
    for (int64_t k0 = 0; k0 < kstop; k0 += BK) {
        int64_t nk = kstop - k0 < BK ? kstop - k0 : BK, nkp = round_up(nk, NV * RT_LANES);
        scores_tile(qt, kt + k0, Skp, s, D, nqp, nkp, ROWS, NV);
        for (int64_t i = 0; i < nqp; i++) {
            float *si = s + i * BK;
            int64_t qi = q0 + i, lim = i < nq ? nk : 0;
            if (p->causal && qi - k0 + 1 < lim) lim = qi - k0 + 1;
            if (mask && lim > 0) {
                const float *mr = mask + qi * p->m_sq + k0 * p->m_sk;
                for (int64_t j = 0; j < lim; j++) si[j] += mr[j * p->m_sk];
            }
            float bmax = -INFINITY;
#pragma omp simd reduction(max : bmax)
            for (int64_t j = 0; j < lim; j++) bmax = si[j] > bmax ? si[j] : bmax;
            float mnew = bmax > mx[i] ? bmax : mx[i];
            if (mnew == -INFINITY) { /* nothing visible yet: this block adds nothing */
                for (int64_t j = 0; j < nk; j++) si[j] = 0.f;
                continue;
            }
            float corr = rt_expf(mx[i] - mnew), psum = 0.f;
#pragma omp simd reduction(+ : psum)
            for (int64_t j = 0; j < nk; j++) {
                float e = j < lim ? rt_expf(si[j] - mnew) : 0.f;
                si[j] = e;
                psum += e;
            }
            l[i] = l[i] * corr + psum;
            mx[i] = mnew;
            if (corr != 1.f)
                for (int64_t e = 0; e < Dvp; e++) acc[i * Dvp + e] *= corr;
        }
        pv_tile(s, v + k0 * ldv, ldv, acc, nqp, nk, Dvp, ROWS, NV);
    }
    for (int64_t i = 0; i < nq; i++) {
        /* A row that saw no key has l == 0: it gets zeros, as torch SDPA gives. */
        float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        float *orow = o + (q0 + i) * p->o_ss;
        for (int64_t e = 0; e < Dv; e++) orow[e] = acc[i * Dvp + e] * inv;
    }
}

/* Query rows [qa, qb) of every head of one group. K (transposed) is packed once per task into
 * zero-padded tiles; V too unless its rows can be read in place (whole vlanes of columns). */
RT_TILE void attn_task(const attn_head *p, int64_t qa, int64_t qb, float *scratch, const int ROWS, const int NV)
{
    int64_t D = p->D, Dv = p->Dv, Dvp = round_up(Dv, RT_LANES);
    /* Causal (top-left): row i sees keys j <= i. */
    int64_t kend = p->causal && qb < p->Sk ? qb : p->Sk, Skp = round_up(kend, BK);
    float *kt = scratch, *vb = kt + D * Skp, *qt = vb + Skp * Dvp, *s = qt + BQ * D, *acc = s + BQ * BK;
    /* K^T in 16-key strips: each store run fills one cache line of kt instead of
     * striding a whole column (which thrashes the cache at power-of-two Skp). */
    for (int64_t j0 = 0; j0 < Skp; j0 += 16)
        for (int64_t d = 0; d < D; d++)
            for (int64_t j = j0; j < j0 + 16; j++) kt[d * Skp + j] = j < kend ? p->k[j * p->k_ss + d] : 0.f;
    const float *v = p->v;
    int64_t ldv = p->v_ss;
    if (Dv != Dvp) {
        for (int64_t j = 0; j < kend; j++) {
            const float *vr = p->v + j * p->v_ss;
            for (int64_t e = 0; e < Dvp; e++) vb[j * Dvp + e] = e < Dv ? vr[e] : 0.f;
        }
        v = vb, ldv = Dvp;
    }
    for (int64_t g = 0; g < p->heads; g++)
        for (int64_t q0 = qa; q0 < qb; q0 += BQ)
            attn_block(p, p->q + g * p->q_sh, p->mask ? p->mask + g * p->m_sh : NULL, p->o + g * p->o_sh, kt, Skp,
                       v, ldv, kend, q0, qb - q0 < BQ ? qb - q0 : BQ, qt, s, acc, ROWS, NV);
}

/* The tile shapes' own copies, ROWS and NV constants for the compiler */
RT_SIMD static void attn_task_8x2(const attn_head *p, int64_t qa, int64_t qb, float *scratch)
{
    attn_task(p, qa, qb, scratch, 8, 2);
}
RT_SIMD static void attn_task_4x1(const attn_head *p, int64_t qa, int64_t qb, float *scratch)
{
    attn_task(p, qa, qb, scratch, 4, 1);
}

/* 8 x 2 where AVX-512 runs (32 vector registers), else 4 x 1 (see MAX_ROWS). */
static int wide_tiles(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

/* Decoding (one query row per head): a task is one K/V head of one batch item and a chunk of its
 * keys, for every query head of its group, so each K and V row is read once per group while the
 * chunks keep both cores busy however few heads there are (flash-decoding). Each task leaves, per
 * query head, its chunk's (max, sum of exp, exp-weighted V) in `part`; the heads' chunks are then
 * combined. `tmp` holds one thread's scores. Returns 0 when the scratch cannot hold this layout
 * (the caller then runs the general path). */
#define DECODE_MIN_KEYS 64 /* keys per chunk at least: fewer and combining costs more than it splits */
RT_SIMD static int attn_decode(const rt_op *op, char *const *arg, int64_t scratch_floats)
{
    const rt_attention_ints *ip = &op->ip.attention;
    int64_t B = ip->B, H = ip->H, Sk = ip->Sk, D = ip->D, Dv = ip->Dv, G = ip->kv_group;
    int64_t Hkv = (H + G - 1) / G, kend = ip->causal && Sk > 1 ? 1 : Sk; /* top-left: row 0 sees key 0 */
    int64_t groups = B * Hkv, nth_max = ip->threads < rt_nthreads ? ip->threads : rt_nthreads;
    int64_t nchunks = groups >= 2 * nth_max ? 1 : (2 * nth_max + groups - 1) / groups;
    int64_t most = (kend + DECODE_MIN_KEYS - 1) / DECODE_MIN_KEYS;
    nchunks = nchunks < most ? nchunks : most > 0 ? most : 1;
    int64_t chunk = (kend + nchunks - 1) / nchunks, ntasks = groups * nchunks, stride = Dv + 2;
    int64_t part_floats = ntasks * G * stride, tmp_floats = round_up(chunk * G, 16);
    int nth = (int)(nth_max < ntasks ? nth_max : ntasks);
    if (part_floats + nth * tmp_floats > scratch_floats) return 0;
    float *part = (float *)arg[RT_ATTENTION_SCRATCH], *tmp0 = part + part_floats;
    const float *Q = (const float *)arg[RT_ATTENTION_Q], *K = (const float *)arg[RT_ATTENTION_K],
                *V = (const float *)arg[RT_ATTENTION_V], *M = (const float *)arg[RT_ATTENTION_MASK];
    float *O = (float *)arg[RT_ATTENTION_OUT], scale = (float)op->fp.attention.scale;
#pragma omp parallel for num_threads(nth) schedule(static) if (nth > 1)
    for (int64_t t = 0; t < ntasks; t++) {
        int64_t b = t / (Hkv * nchunks), c = t / nchunks % Hkv, j0 = t % nchunks * chunk;
        int64_t j1 = j0 + chunk < kend ? j0 + chunk : kend, h0 = c * G, nh = H - h0 < G ? H - h0 : G;
        const float *kb = K + b * ip->k_sb + c * ip->k_sh, *vb = V + b * ip->v_sb + c * ip->v_sh;
        float *s = tmp0 + rt_thread_id() * tmp_floats, *mine = part + t * G * stride;
        for (int64_t g = 0; g < nh; g++) {
            const float *q = Q + b * ip->q_sb + (h0 + g) * ip->q_sh;
            const float *mk = M ? M + b * ip->m_sb + (h0 + g) * ip->m_sh : NULL;
            float *sg = s + g * chunk, m = -INFINITY;
            int64_t j = j0;
            for (; j + 4 <= j1; j += 4) { /* four keys at once: q loaded once, four independent sums */
                const float *k0 = kb + j * ip->k_ss, *k1 = k0 + ip->k_ss, *k2 = k1 + ip->k_ss, *k3 = k2 + ip->k_ss;
                float d0 = 0.f, d1 = 0.f, d2 = 0.f, d3 = 0.f;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
                for (int64_t d = 0; d < D; d++) {
                    d0 += q[d] * k0[d];
                    d1 += q[d] * k1[d];
                    d2 += q[d] * k2[d];
                    d3 += q[d] * k3[d];
                }
                sg[j - j0] = d0 * scale;
                sg[j - j0 + 1] = d1 * scale;
                sg[j - j0 + 2] = d2 * scale;
                sg[j - j0 + 3] = d3 * scale;
            }
            for (; j < j1; j++) {
                const float *kr = kb + j * ip->k_ss;
                float dot = 0.f;
#pragma omp simd reduction(+ : dot)
                for (int64_t d = 0; d < D; d++) dot += q[d] * kr[d];
                sg[j - j0] = dot * scale;
            }
            for (j = j0; j < j1; j++) {
                float x = sg[j - j0] + (mk ? mk[j * ip->m_sk] : 0.f);
                sg[j - j0] = x;
                m = x > m ? x : m;
            }
            float l = 0.f;
            if (m != -INFINITY) {
#pragma omp simd reduction(+ : l)
                for (int64_t j = 0; j < j1 - j0; j++) {
                    sg[j] = rt_expf(sg[j] - m);
                    l += sg[j];
                }
            }
            mine[g * stride] = m;
            mine[g * stride + 1] = l;
            for (int64_t e = 0; e < Dv; e++) mine[g * stride + 2 + e] = 0.f;
        }
        for (int64_t j = j0; j < j1; j++) { /* each V row once, for the whole group */
            const float *vr = vb + j * ip->v_ss;
            for (int64_t g = 0; g < nh; g++) {
                float p = mine[g * stride] == -INFINITY ? 0.f : s[g * chunk + j - j0], *acc = mine + g * stride + 2;
#pragma omp simd
                for (int64_t e = 0; e < Dv; e++) acc[e] += p * vr[e];
            }
        }
    }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *first = part + ((b * Hkv + h / G) * nchunks * G + h % G) * stride;
            float m = -INFINITY, l = 0.f, *o = O + b * ip->o_sb + h * ip->o_sh;
            for (int64_t ch = 0; ch < nchunks; ch++) m = first[ch * G * stride] > m ? first[ch * G * stride] : m;
            for (int64_t e = 0; e < Dv; e++) o[e] = 0.f;
            if (m == -INFINITY) continue; /* no visible key: zeros, as torch SDPA gives */
            for (int64_t ch = 0; ch < nchunks; ch++) {
                const float *pc = first + ch * G * stride;
                if (pc[0] == -INFINITY) continue;
                float w = rt_expf(pc[0] - m);
                l += w * pc[1];
                for (int64_t e = 0; e < Dv; e++) o[e] += w * pc[2 + e];
            }
            float inv = l > 0.f ? 1.f / l : 0.f;
            for (int64_t e = 0; e < Dv; e++) o[e] *= inv;
        }
    return 1;
}

int rt_k_attention(const rt_op *op, char *const *arg)
{
    const rt_attention_ints *ip = &op->ip.attention;
    int64_t B = ip->B, H = ip->H, Sq = ip->Sq, Sk = ip->Sk, D = ip->D, Dv = ip->Dv;
    if (B * H * Sq == 0 || Dv == 0) return RT_OK;
    if (Sq == 1 && attn_decode(op, arg, rt_attention_scratch_floats(Sk, D, Dv) * ip->threads)) return RT_OK;
    /* One task per group of query heads sharing a K/V head when there are enough groups (K/V packed
     * once per group); otherwise groups are split into query chunks so every thread has work. */
    int64_t G = ip->kv_group, Hkv = (H + G - 1) / G, nqb = (Sq + BQ - 1) / BQ, groups = B * Hkv;
    int64_t chunks = groups >= 2 * rt_nthreads ? 1 : (2 * rt_nthreads + groups - 1) / groups;
    int64_t blocks_per_chunk = (nqb + chunks - 1) / chunks;
    chunks = (nqb + blocks_per_chunk - 1) / blocks_per_chunk; /* none left empty */
    int64_t rows_per_chunk = blocks_per_chunk * BQ, ntasks = groups * chunks;
    int64_t per_thread = rt_attention_scratch_floats(Sk, D, Dv);
    /* The plan provides scratch for ip->threads threads; never run more than that. */
    int64_t slots = ip->threads < ntasks ? ip->threads : ntasks;
    int nth = rt_nthreads < slots ? rt_nthreads : (int)slots;
    float *scratch = (float *)arg[RT_ATTENTION_SCRATCH];
    void (*task)(const attn_head *, int64_t, int64_t, float *) = wide_tiles() ? attn_task_8x2 : attn_task_4x1;
#pragma omp parallel for num_threads(nth) schedule(dynamic, 1) if (nth > 1)
    for (int64_t t = 0; t < ntasks; t++) {
        int64_t b = t / (Hkv * chunks), c = t / chunks % Hkv, qa = t % chunks * rows_per_chunk;
        int64_t qb = qa + rows_per_chunk < Sq ? qa + rows_per_chunk : Sq, h0 = c * G;
        attn_head p = {
            .q = (const float *)arg[RT_ATTENTION_Q] + b * ip->q_sb + h0 * ip->q_sh,
            .k = (const float *)arg[RT_ATTENTION_K] + b * ip->k_sb + c * ip->k_sh,
            .v = (const float *)arg[RT_ATTENTION_V] + b * ip->v_sb + c * ip->v_sh,
            .mask = arg[RT_ATTENTION_MASK] ? (const float *)arg[RT_ATTENTION_MASK] + b * ip->m_sb + h0 * ip->m_sh
                                           : NULL,
            .o = (float *)arg[RT_ATTENTION_OUT] + b * ip->o_sb + h0 * ip->o_sh,
            .Sq = Sq, .Sk = Sk, .D = D, .Dv = Dv,
            .q_ss = ip->q_ss, .k_ss = ip->k_ss, .v_ss = ip->v_ss, .o_ss = ip->o_ss,
            .m_sq = ip->m_sq, .m_sk = ip->m_sk,
            .heads = H - h0 < G ? H - h0 : G, .q_sh = ip->q_sh, .o_sh = ip->o_sh, .m_sh = ip->m_sh,
            .causal = (int)ip->causal, .scale = (float)op->fp.attention.scale};
        float *mine = scratch + rt_thread_id() * per_thread;
        if (qb - qa < RT_DIRECT_ROWS)
            attn_direct(&p, qa, qb, mine);
        else
            task(&p, qa, qb, mine);
    }
    return RT_OK;
}

int rt_c_attention(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_attention_ints *ip = &op->ip.attention;
    int64_t B = ip->B, H = ip->H, Sq = ip->Sq, Sk = ip->Sk, D = ip->D, Dv = ip->Dv;
    RT_CHECK(D <= 4096 && Dv <= 4096, "head dims above 4096 are not supported");
    RT_CHECK(ip->threads >= 1, "scratch must hold at least one thread's share");
    RT_CHECK(ip->kv_group >= 1, "kv_group must be at least 1");
    RT_CHECK(fabs(op->fp.attention.scale) <= FLT_MAX, "scale %g is not a finite float", op->fp.attention.scale);
    /* Output rows are written by different tasks, each once: they must not overlap (which also bounds
     * the work by out's bytes). */
    int64_t rows[3] = {B, H, Sq}, rst[3] = {ip->o_sb, ip->o_sh, ip->o_ss};
    RT_CHECK(rt_disjoint(3, rows, rst, Dv), "output rows overlap (or Dv is 0)");
    int64_t Hkv = (H + ip->kv_group - 1) / ip->kv_group; /* k/v heads read */
    int64_t qs[4] = {B, H, Sq, D}, ks[4] = {B, Hkv, Sk, D}, vs[4] = {B, Hkv, Sk, Dv},
            os[4] = {B, H, Sq, Dv}, ms[4] = {B, H, Sq, Sk};
    int64_t qst[4] = {ip->q_sb, ip->q_sh, ip->q_ss, 1}, kst[4] = {ip->k_sb, ip->k_sh, ip->k_ss, 1},
            vst[4] = {ip->v_sb, ip->v_sh, ip->v_ss, 1}, ost[4] = {ip->o_sb, ip->o_sh, ip->o_ss, 1},
            mst[4] = {ip->m_sb, ip->m_sh, ip->m_sq, ip->m_sk};
    return rt_need(op, avail, RT_ATTENTION_Q, rt_reach(4, qs, qst), 4, "q", msg, msglen) ||
           rt_need(op, avail, RT_ATTENTION_K, rt_reach(4, ks, kst), 4, "k", msg, msglen) ||
           rt_need(op, avail, RT_ATTENTION_V, rt_reach(4, vs, vst), 4, "v", msg, msglen) ||
           rt_need_opt(op, avail, RT_ATTENTION_MASK, rt_reach(4, ms, mst), 4, "mask", msg, msglen) ||
           rt_need(op, avail, RT_ATTENTION_SCRATCH, rt_mul(rt_attention_scratch_floats(Sk, D, Dv), ip->threads),
                   4, "scratch", msg, msglen) ||
           rt_need(op, avail, RT_ATTENTION_OUT, rt_reach(4, os, ost), 4, "out", msg, msglen);
}
