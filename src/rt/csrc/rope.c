/* Rotary position embedding applied to q or k in one pass, read and written through strides (so
 * the head split needs no copy), with the cos/sin tables folded to constants at compile time. */
#include "rt_kernel.h"

/* One row of D: rotate the first rot dims in halves or interleaved pairs, copy the rest. x may be y:
 * each pair is read before it is written. */
RT_SIMD static void rope_row(const float *x, const float *c, const float *s, float *y, int64_t d,
                             int64_t rot, int interleaved)
{
    int64_t h = rot / 2;
    if (interleaved)
        for (int64_t j = 0; j < h; j++) {
            float a = x[2 * j], b = x[2 * j + 1];
            y[2 * j] = a * c[2 * j] - b * s[2 * j];
            y[2 * j + 1] = b * c[2 * j + 1] + a * s[2 * j + 1];
        }
    else
        for (int64_t i = 0; i < h; i++) {
            float a = x[i], b = x[i + h];
            y[i] = a * c[i] - b * s[i];
            y[i + h] = b * c[i + h] + a * s[i + h];
        }
    if (y != x)
        for (int64_t i = rot; i < d; i++) y[i] = x[i];
}

int rt_k_rope(const rt_op *op, char *const *arg)
{
    const rt_rope_ints *ip = &op->ip.rope;
    const float *x = (const float *)arg[RT_ROPE_X], *c = (const float *)arg[RT_ROPE_COS],
                *s = (const float *)arg[RT_ROPE_SIN];
    float *y = (float *)arg[RT_ROPE_OUT];
    int64_t rows = ip->B * ip->H * ip->S;
    RT_FOR(rows * ip->D >= RT_PAR_MIN_ELEMS, r, rows, {
        int64_t b = r / (ip->H * ip->S), hh = r / ip->S % ip->H, q = r % ip->S;
        int64_t co = b * ip->c_sb + q * ip->c_ss;
        rope_row(x + b * ip->x_sb + hh * ip->x_sh + q * ip->x_ss, c + co, s + co,
                 y + b * ip->o_sb + hh * ip->o_sh + q * ip->o_ss, ip->D, ip->rot, (int)ip->interleaved);
    });
    return RT_OK;
}

int rt_c_rope(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_rope_ints *ip = &op->ip.rope;
    RT_CHECK(ip->rot <= ip->D && ip->rot % 2 == 0, "rot %lld must be even and at most D = %lld",
             (long long)ip->rot, (long long)ip->D);
    /* Rows are written by different threads, each once: they must not overlap (which also bounds the
     * work by out's bytes). */
    int64_t rows[3] = {ip->B, ip->H, ip->S}, rst[3] = {ip->o_sb, ip->o_sh, ip->o_ss};
    RT_CHECK(rt_disjoint(3, rows, rst, ip->D), "output rows overlap (or D is 0)");
    int64_t xs[4] = {ip->B, ip->H, ip->S, ip->D}, cs[3] = {ip->B, ip->S, ip->D};
    int64_t xst[4] = {ip->x_sb, ip->x_sh, ip->x_ss, 1}, ost[4] = {ip->o_sb, ip->o_sh, ip->o_ss, 1},
            cst[3] = {ip->c_sb, ip->c_ss, 1};
    return rt_need(op, avail, RT_ROPE_X, rt_reach(4, xs, xst), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_ROPE_COS, rt_reach(3, cs, cst), 4, "cos", msg, msglen) ||
           rt_need(op, avail, RT_ROPE_SIN, rt_reach(3, cs, cst), 4, "sin", msg, msglen) ||
           rt_need(op, avail, RT_ROPE_OUT, rt_reach(4, xs, ost), 4, "out", msg, msglen);
}
