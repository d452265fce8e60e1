/* PAD: constant, reflection and replication padding of x (read through its strides) into a contiguous
 * out, one output row (all dims but the last) at a time: the row's source row is found once, then its
 * middle is copied and its two ends filled. */
#include "rt_kernel.h"

/* Source index of output index i (already shifted by lo) in a dim of n items, or -1 when it lies in
 * constant padding. Reflection pads are shorter than the dim (torch's rule), so one mirror suffices. */
static inline int64_t source(int64_t i, int64_t n, int64_t mode)
{
    if (i >= 0 && i < n) return i;
    if (mode == RT_PAD_REFLECT) return i < 0 ? -i : 2 * (n - 1) - i;
    if (mode == RT_PAD_REPLICATE) return i < 0 ? 0 : n - 1;
    return -1;
}

int rt_k_pad(const rt_op *op, char *const *arg)
{
    const rt_pad_ints *ip = &op->ip.pad;
    const float *x = (const float *)arg[RT_PAD_X];
    float *y = (float *)arg[RT_PAD_OUT];
    int nd = (int)ip->ndim;
    float value = (float)op->fp.pad.value;
    int64_t cols = nd ? ip->shape[nd - 1] : 1, rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= ip->shape[d];
    int64_t in_cols = nd ? ip->in_shape[nd - 1] : 1, lo = nd ? ip->lo[nd - 1] : 0, cs = nd ? ip->stride[nd - 1] : 1;
    RT_FOR(rows * cols >= RT_PAR_MIN_ELEMS, r, rows, {
        float *yr = y + r * cols;
        int64_t off = 0, rest = r, inside = 1;
        for (int d = nd - 2; d >= 0 && inside; d--) {
            int64_t s = source(rest % ip->shape[d] - ip->lo[d], ip->in_shape[d], ip->mode);
            rest /= ip->shape[d];
            inside = s >= 0;
            off += s * ip->stride[d];
        }
        if (!inside) {
            for (int64_t j = 0; j < cols; j++) yr[j] = value;
        } else {
            const float *xr = x + off;
            int64_t a = lo, b = lo + in_cols < cols ? lo + in_cols : cols; /* the middle */
            for (int64_t j = 0; j < a; j++) {
                int64_t s = source(j - lo, in_cols, ip->mode);
                yr[j] = s < 0 ? value : xr[s * cs];
            }
            if (cs == 1)
                memcpy(yr + a, xr + (a - lo), sizeof(float) * (size_t)(b > a ? b - a : 0));
            else
                for (int64_t j = a; j < b; j++) yr[j] = xr[(j - lo) * cs];
            for (int64_t j = b > a ? b : a; j < cols; j++) {
                int64_t s = source(j - lo, in_cols, ip->mode);
                yr[j] = s < 0 ? value : xr[s * cs];
            }
        }
    });
    return RT_OK;
}

int rt_c_pad(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_pad_ints *ip = &op->ip.pad;
    int nd = (int)ip->ndim;
    RT_CHECK(nd >= 1 && nd <= RT_MAX_NDIM, "ndim %d out of range", nd);
    int64_t n = 1;
    for (int d = 0; d < nd; d++) {
        int64_t in = ip->in_shape[d], lo = ip->lo[d], out = ip->shape[d];
        RT_CHECK(rt_add(in, lo) <= out, "dim %d: %lld items after %lld of padding exceed the output's %lld", d,
                 (long long)in, (long long)lo, (long long)out);
        int64_t hi = out - in - lo;
        RT_CHECK(ip->mode == RT_PAD_CONSTANT || in > 0 || out == 0, "dim %d: cannot %s an empty dim", d,
                 ip->mode == RT_PAD_REFLECT ? "reflect" : "replicate");
        RT_CHECK(ip->mode != RT_PAD_REFLECT || (lo < in && hi < in), "dim %d: reflection pads (%lld, %lld) must be "
                 "shorter than the dim (%lld)", d, (long long)lo, (long long)hi, (long long)in);
        n = rt_mul(n, out);
    }
    return rt_need(op, avail, RT_PAD_X, rt_reach(nd, ip->in_shape, ip->stride), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_PAD_OUT, n, 4, "out", msg, msglen);
}
