/* CONV: 2-D convolution. oneDNN runs it (conv_onednn.c); this file is what every build has: the
 * checker and the entry points (a build without oneDNN refuses CONV records when the program is built). */
#include "rt_kernel.h"

int rt_k_conv(const rt_op *op, char *const *arg)
{
#ifdef RT_HAVE_ONEDNN
    return op->ip.conv.wino_tile ? rt_conv_winograd(op, arg) : rt_conv_onednn(op, arg);
#else
    (void)op, (void)arg;
    return RT_ERR_BACKEND;
#endif
}

int rt_p_conv(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
#ifdef RT_HAVE_ONEDNN
    return op->ip.conv.wino_tile ? rt_p_conv_winograd(op, arg, msg, msglen) : rt_p_conv_onednn(op, arg, msg, msglen);
#else
    (void)op, (void)arg;
    return rt_fail(msg, msglen, "CONV needs oneDNN; this build has none");
#endif
}

void rt_r_conv(rt_op *op)
{
#ifdef RT_HAVE_ONEDNN
    if (op->ip.conv.wino_tile)
        rt_r_conv_winograd(op->state);
    else
        rt_r_conv_onednn(op->state);
#else
    (void)op;
#endif
}

int64_t rt_conv_winograd_chunk(int64_t tiles, int64_t c, int64_t o, int64_t m)
{
    int64_t per_tile = rt_mul((m + 2) * (m + 2) * 4, rt_add(c, o)), most = RT_WINO_CHUNK_BYTES / per_tile;
    if (most < RT_WINO_MIN_CHUNK) most = RT_WINO_MIN_CHUNK;
    int64_t chunks = (tiles + most - 1) / most;
    return chunks ? (tiles + chunks - 1) / chunks : 0;
}

int64_t rt_conv_winograd_scratch_bytes(int64_t n, int64_t oh, int64_t ow, int64_t c, int64_t o, int64_t m)
{
    int64_t tiles = rt_mul(rt_mul(n, (oh + m - 1) / m), (ow + m - 1) / m);
    return rt_mul(rt_mul((m + 2) * (m + 2), rt_conv_winograd_chunk(tiles, c, o, m)), rt_mul(rt_add(c, o), 4));
}

/* Output extent of one spatial dim (transposed: of the transposed convolution, with output padding
 * extra), or -1 when it would be empty. */
static int64_t out_extent(const rt_conv_ints *ip, int64_t in, int64_t lo, int64_t hi, int64_t k, int64_t stride,
                          int64_t dil, int64_t extra)
{
    int64_t span = rt_add(rt_mul(dil, k - 1), 1);
    if (ip->transposed) {
        int64_t full = rt_add(rt_add(rt_mul(in - 1, stride), span), extra), crop = rt_add(lo, hi);
        return in < 1 || full <= crop ? -1 : full - crop;
    }
    int64_t padded = rt_add(rt_add(in, lo), hi);
    return padded < span ? -1 : (padded - span) / stride + 1;
}

int rt_c_conv(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_conv_ints *ip = &op->ip.conv;
    RT_CHECK(rt_have_onednn(), "CONV needs oneDNN; this build has none");
    RT_CHECK(ip->G >= 1 && ip->C % ip->G == 0 && ip->O % ip->G == 0, "groups %lld must divide C = %lld and O = %lld",
             (long long)ip->G, (long long)ip->C, (long long)ip->O);
    RT_CHECK(ip->KH >= 1 && ip->KW >= 1 && ip->sh >= 1 && ip->sw >= 1 && ip->dh >= 1 && ip->dw >= 1,
             "kernel, strides and dilations must be at least 1");
    RT_CHECK(ip->transposed || (ip->oph == 0 && ip->opw == 0), "output padding is for transposed convolutions");
    RT_CHECK(ip->OH == out_extent(ip, ip->H, ip->pt, ip->pb, ip->KH, ip->sh, ip->dh, ip->oph) &&
                 ip->OW == out_extent(ip, ip->W, ip->pl, ip->pr, ip->KW, ip->sw, ip->dw, ip->opw),
             "output %lldx%lld does not follow from the input, kernel, padding, stride and dilation",
             (long long)ip->OH, (long long)ip->OW);
    int64_t xs[4] = {ip->N, ip->C, ip->H, ip->W}, os[4] = {ip->N, ip->O, ip->OH, ip->OW};
    int64_t xst[4] = {ip->x_sn, ip->x_sc, ip->x_sh, ip->x_sw}, ost[4] = {ip->o_sn, ip->o_sc, ip->o_sh, ip->o_sw};
    /* written once each: outputs that do not overlap (which bounds the work by their bytes) */
    RT_CHECK(rt_disjoint(4, os, ost, 1), "output elements overlap");
    int64_t wn = rt_mul(rt_mul(ip->O, ip->C / ip->G), rt_mul(ip->KH, ip->KW));
    int64_t m = ip->wino_tile;
    RT_CHECK(m == 0 || m == 2 || m == 4, "wino_tile %lld is none of 0 (direct), 2 and 4", (long long)m);
    RT_CHECK(!m || (!ip->transposed && ip->KH == 3 && ip->KW == 3 && ip->sh == 1 && ip->sw == 1 && ip->dh == 1 &&
                    ip->dw == 1 && ip->G == 1),
             "Winograd's F(m x m, 3x3) is for 3x3, stride-1, undilated, ungrouped convolutions");
    RT_CHECK(m || avail[RT_CONV_SCRATCH] < 0, "only a Winograd convolution takes scratch");
    RT_CHECK(!m || avail[RT_CONV_SCRATCH] >= 0, "a Winograd convolution needs its scratch operand");
    return rt_need(op, avail, RT_CONV_X, rt_reach(4, xs, xst), 4, "x", msg, msglen) ||
           (m && rt_need(op, avail, RT_CONV_SCRATCH,
                         rt_conv_winograd_scratch_bytes(ip->N, ip->OH, ip->OW, ip->C, ip->O, m) / 4, 4, "scratch",
                         msg, msglen)) ||
           rt_need(op, avail, RT_CONV_W, wn, 4, "w", msg, msglen) ||
           rt_need_opt(op, avail, RT_CONV_BIAS, ip->O, 4, "bias", msg, msglen) ||
           rt_need_opt(op, avail, RT_CONV_RESIDUAL, rt_reach(4, os, ost), 4, "residual", msg, msglen) ||
           rt_need(op, avail, RT_CONV_OUT, rt_reach(4, os, ost), 4, "out", msg, msglen);
}
