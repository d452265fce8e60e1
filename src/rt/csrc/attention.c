/* Scaled dot-product attention in one pass over keys (online softmax), reading
 * q/k/v/mask/out through strides so head splitting needs no copies. */
#include <stdlib.h>

#include "rt_kernel.h"

#define BQ 32 /* query rows per task: they share each transposed key block */
#define BK 64 /* keys per block */

typedef struct {
    const float *q, *k, *v, *mask;
    float *o;
    int64_t Sq, Sk, D, Dv, q_ss, k_ss, v_ss, o_ss, m_sq, m_sk;
    int causal;
    float scale;
} attn_head;

/* Query rows [q0, q0+BQ) of one (batch, head). scratch holds D*BK + BQ*BK + BQ*Dv floats. */
RT_SIMD static void attn_task(const attn_head *p, int64_t q0, float *scratch)
{
    int64_t D = p->D, Dv = p->Dv, nq = p->Sq - q0 < BQ ? p->Sq - q0 : BQ;
    float *kt = scratch, *s = kt + D * BK, *acc = s + BQ * BK;
    float mx[BQ], l[BQ];
    for (int64_t i = 0; i < nq; i++) {
        mx[i] = -INFINITY;
        l[i] = 0.f;
    }
    memset(acc, 0, (size_t)(nq * Dv) * sizeof(float));
    /* Causal (top-left): row i sees keys j <= i, so later key blocks are skipped. */
    int64_t kend = p->causal && q0 + nq < p->Sk ? q0 + nq : p->Sk;
    for (int64_t k0 = 0; k0 < kend; k0 += BK) {
        int64_t nk = kend - k0 < BK ? kend - k0 : BK;
        for (int64_t j = 0; j < nk; j++) { /* kt[d][j] = K[k0+j][d]: scores vectorise over j */
            const float *kr = p->k + (k0 + j) * p->k_ss;
            for (int64_t d = 0; d < D; d++) kt[d * BK + j] = kr[d];
        }
        for (int64_t i = 0; i < nq; i++) {
            int64_t qi = q0 + i, lim = nk;
            if (p->causal) lim = qi - k0 + 1 < nk ? qi - k0 + 1 : nk;
            if (lim <= 0) continue;
            const float *qr = p->q + qi * p->q_ss;
            float *si = s + i * BK, *ai = acc + i * Dv;
            for (int64_t j = 0; j < lim; j++) si[j] = 0.f;
            for (int64_t d = 0; d < D; d++) {
                float qd = qr[d];
                const float *kd = kt + d * BK;
                for (int64_t j = 0; j < lim; j++) si[j] += qd * kd[j];
            }
            float bmax = -INFINITY;
            if (p->mask) {
                const float *mr = p->mask + qi * p->m_sq + k0 * p->m_sk;
                for (int64_t j = 0; j < lim; j++) si[j] = si[j] * p->scale + mr[j * p->m_sk];
            } else
                for (int64_t j = 0; j < lim; j++) si[j] *= p->scale;
            for (int64_t j = 0; j < lim; j++) bmax = si[j] > bmax ? si[j] : bmax;
            float mnew = bmax > mx[i] ? bmax : mx[i];
            if (mnew == -INFINITY) continue; /* every key so far is masked out */
            float corr = rt_expf(mx[i] - mnew), psum = 0.f;
            for (int64_t j = 0; j < lim; j++) {
                si[j] = rt_expf(si[j] - mnew);
                psum += si[j];
            }
            l[i] = l[i] * corr + psum;
            mx[i] = mnew;
            if (corr != 1.f)
                for (int64_t e = 0; e < Dv; e++) ai[e] *= corr;
            for (int64_t j = 0; j < lim; j++) {
                const float *vr = p->v + (k0 + j) * p->v_ss;
                float pj = si[j];
                for (int64_t e = 0; e < Dv; e++) ai[e] += pj * vr[e];
            }
        }
    }
    for (int64_t i = 0; i < nq; i++) {
        /* A row that saw no key has l == 0: it gets zeros, as torch SDPA gives. */
        float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
        float *orow = p->o + (q0 + i) * p->o_ss;
        for (int64_t e = 0; e < Dv; e++) orow[e] = acc[i * Dv + e] * inv;
    }
}

int rt_k_attention(const rt_op *op, char *const *arg)
{
    const int64_t *ip = op->ip;
    int64_t B = ip[0], H = ip[1], Sq = ip[2], D = ip[4], Dv = ip[5];
    int64_t nqb = (Sq + BQ - 1) / BQ, ntasks = B * H * nqb;
    if (ntasks == 0 || Dv == 0) return RT_OK;
    int64_t per_thread = D * BK + BQ * BK + BQ * Dv;
    int nth = rt_nthreads < ntasks ? rt_nthreads : (int)ntasks;
    size_t bytes = ((size_t)(per_thread * nth) * sizeof(float) + 63) & ~(size_t)63;
    float *scratch = aligned_alloc(64, bytes);
    if (!scratch) return RT_ERR_NOMEM;
#pragma omp parallel for num_threads(nth) schedule(static, 1)
    for (int64_t t = 0; t < ntasks; t++) {
        int64_t b = t / (H * nqb), h = t / nqb % H, q0 = t % nqb * BQ;
        attn_head p = {
            .q = (const float *)arg[0] + b * ip[6] + h * ip[7],
            .k = (const float *)arg[1] + b * ip[9] + h * ip[10],
            .v = (const float *)arg[2] + b * ip[12] + h * ip[13],
            .mask = arg[3] ? (const float *)arg[3] + b * ip[19] + h * ip[20] : NULL,
            .o = (float *)arg[4] + b * ip[15] + h * ip[16],
            .Sq = Sq, .Sk = ip[3], .D = D, .Dv = Dv,
            .q_ss = ip[8], .k_ss = ip[11], .v_ss = ip[14], .o_ss = ip[17],
            .m_sq = ip[21], .m_sk = ip[22], .causal = (int)ip[18], .scale = (float)op->fp[0]};
        attn_task(&p, q0, scratch + rt_thread_id() * per_thread);
    }
    free(scratch);
    return RT_OK;
}

int rt_c_attention(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const int64_t *ip = op->ip;
    if (rt_check_nargs(op, 5, msg, msglen) || rt_check_dims(op, 0, 23, msg, msglen)) return 1;
    int64_t B = ip[0], H = ip[1], Sq = ip[2], Sk = ip[3], D = ip[4], Dv = ip[5];
    RT_CHECK(ip[18] <= 1, "causal must be 0 or 1");
    RT_CHECK(D <= 4096 && Dv <= 4096, "head dims above 4096 are not supported");
    /* Output rows are written by different tasks, so they must not coincide. */
    RT_CHECK((B <= 1 || ip[15] > 0) && (H <= 1 || ip[16] > 0) && (Sq <= 1 || ip[17] > 0),
             "output strides must be nonzero");
    int64_t qs[4] = {B, H, Sq, D}, ks[4] = {B, H, Sk, D}, vs[4] = {B, H, Sk, Dv},
            os[4] = {B, H, Sq, Dv}, ms[4] = {B, H, Sq, Sk};
    int64_t qst[4] = {ip[6], ip[7], ip[8], 1}, kst[4] = {ip[9], ip[10], ip[11], 1},
            vst[4] = {ip[12], ip[13], ip[14], 1}, ost[4] = {ip[15], ip[16], ip[17], 1},
            mst[4] = {ip[19], ip[20], ip[21], ip[22]};
    return rt_need(op, avail, 0, rt_reach(4, qs, qst), 4, "q", msg, msglen) ||
           rt_need(op, avail, 1, rt_reach(4, ks, kst), 4, "k", msg, msglen) ||
           rt_need(op, avail, 2, rt_reach(4, vs, vst), 4, "v", msg, msglen) ||
           rt_need_opt(op, avail, 3, rt_reach(4, ms, mst), 4, "mask", msg, msglen) ||
           rt_need(op, avail, 4, rt_reach(4, os, ost), 4, "out", msg, msglen);
}
