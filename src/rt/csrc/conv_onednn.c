/* CONV through oneDNN's convolution primitive.
 *
 * x, out and the residual are described to oneDNN by the record's strides, so the planner's layout
 * (NCHW, or NHWC through a permute view) is what oneDNN reads and writes; it picks its kernel for that
 * layout. The weights are the primitive's to choose: a constant w is reordered once, when the program
 * is built, into the layout the primitive asked for (format "any"); a w computed at run time is read
 * as it is ([O, C/G, KH, KW]). Bias, the residual (a sum when it is the output itself, else a binary
 * add) and the activation are post-ops, in that order. A transposed convolution is oneDNN's deconvolution,
 * its weights torch's [C, O/G, KH, KW] read as oneDNN's "iohw"; torch's output padding is a smaller
 * (possibly negative) right padding. Primitives per thread count and the per-thread scratchpad:
 * onednn_common.c. */
#include <float.h>
#include <stdlib.h>

#include "onednn_common.h"

typedef struct {
    rt_op op; /* a copy of the record it was made for */
    dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md; /* wei_md: the layout w is read in */
    void *packed;                                       /* owned reordered copy of a constant w, or NULL */
    int res_is_out;
    rt_dnnl_prims prims;
} onednn_conv;

static const dnnl_alg_kind_t act_alg[RT_ELTWISE_COUNT] = {
    [RT_ELTWISE_NONE] = dnnl_alg_kind_undef,       [RT_ELTWISE_RELU] = dnnl_eltwise_relu,
    [RT_ELTWISE_GELU_TANH] = dnnl_eltwise_gelu_tanh, [RT_ELTWISE_GELU_ERF] = dnnl_eltwise_gelu_erf,
    [RT_ELTWISE_SILU] = dnnl_eltwise_swish,         [RT_ELTWISE_HARDSWISH] = dnnl_eltwise_hardswish,
    [RT_ELTWISE_HARDSIGMOID] = dnnl_eltwise_hardsigmoid, [RT_ELTWISE_CLAMP] = dnnl_eltwise_clip,
    [RT_ELTWISE_SIGMOID] = dnnl_eltwise_logistic,   [RT_ELTWISE_TANH] = dnnl_eltwise_tanh};

/* The eltwise post-op's parameters: swish's slope 1, hardswish/hardsigmoid as torch's
 * (relu6(x + 3) / 6 = clip(x / 6 + 1/2, 0, 1)), clamp's bounds (finite: oneDNN's clip wants them). */
static void act_params(const rt_op *op, float *alpha, float *beta)
{
    *alpha = *beta = 0.f;
    switch (op->ip.conv.act) {
    case RT_ELTWISE_SILU: *alpha = 1.f; break;
    case RT_ELTWISE_HARDSWISH:
    case RT_ELTWISE_HARDSIGMOID: *alpha = 1.f / 6.f, *beta = 0.5f; break;
    case RT_ELTWISE_CLAMP:
        *alpha = (float)(op->fp.conv.alpha < -FLT_MAX ? -FLT_MAX : op->fp.conv.alpha);
        *beta = (float)(op->fp.conv.beta > FLT_MAX ? FLT_MAX : op->fp.conv.beta);
        break;
    default: break;
    }
}

static dnnl_status_t make_pd_with(const onednn_conv *s, const_dnnl_memory_desc_t wei_md, dnnl_primitive_desc_t *pd)
{
    const rt_op *op = &s->op;
    const rt_conv_ints *ip = &op->ip.conv;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st = dnnl_post_ops_create(&po);
    if (st == dnnl_success && op->slot[RT_CONV_RESIDUAL] >= 0)
        st = s->res_is_out ? dnnl_post_ops_append_sum(po, 1.f, 0, dnnl_data_type_undef)
                           : dnnl_post_ops_append_binary(po, dnnl_binary_add, s->dst_md);
    if (st == dnnl_success && ip->act != RT_ELTWISE_NONE) {
        float alpha, beta;
        act_params(op, &alpha, &beta);
        st = dnnl_post_ops_append_eltwise(po, act_alg[ip->act], alpha, beta);
    }
    if (st == dnnl_success) st = rt_dnnl_attr(&attr, po);
    dnnl_dims_t strides = {ip->sh, ip->sw}, dilates = {ip->dh - 1, ip->dw - 1};
    dnnl_dims_t pad_l = {ip->pt, ip->pl}, pad_r = {ip->pb - ip->oph, ip->pr - ip->opw};
    const_dnnl_memory_desc_t bias = op->slot[RT_CONV_BIAS] >= 0 ? s->bias_md : NULL;
    if (st == dnnl_success && ip->transposed)
        st = dnnl_deconvolution_forward_primitive_desc_create(
            pd, rt_dnnl_engine(NULL), dnnl_forward_inference, dnnl_deconvolution_direct, s->src_md, wei_md, bias,
            s->dst_md, strides, dilates, pad_l, pad_r, attr);
    else if (st == dnnl_success)
        st = dnnl_convolution_forward_primitive_desc_create(
            pd, rt_dnnl_engine(NULL), dnnl_forward_inference, dnnl_convolution_direct, s->src_md, wei_md, bias,
            s->dst_md, strides, dilates, pad_l, pad_r, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (po) dnnl_post_ops_destroy(po);
    return st;
}

static dnnl_status_t make_pd(const void *ctx, dnnl_primitive_desc_t *pd)
{
    const onednn_conv *s = ctx;
    return make_pd_with(s, s->wei_md, pd);
}

static void destroy(onednn_conv *s)
{
    rt_dnnl_prims_free(&s->prims);
    dnnl_memory_desc_t mds[4] = {s->src_md, s->wei_md, s->bias_md, s->dst_md};
    for (int i = 0; i < 4; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
    free(s->packed);
    free(s);
}

void rt_r_conv_onednn(void *state) { destroy((onednn_conv *)state); }

static dnnl_status_t nchw_md(dnnl_memory_desc_t *md, int64_t n, int64_t c, int64_t h, int64_t w, const int64_t *st)
{
    dnnl_dims_t dims = {n, c, h, w}, strides = {st[0], st[1], st[2], st[3]};
    return dnnl_memory_desc_create_with_strides(md, 4, dims, dnnl_f32, strides);
}

/* w as torch stores it ([O, C/G, KH, KW]; transposed: [C, O/G, KH, KW]), or, when `any`, in the layout
 * the primitive will pick; oneDNN's dims are [G?, O/G, C/G, KH, KW] either way. */
static dnnl_status_t weights_md(dnnl_memory_desc_t *md, const rt_conv_ints *ip, int any)
{
    int grouped = ip->G > 1;
    dnnl_dims_t dims = {ip->G, ip->O / ip->G, ip->C / ip->G, ip->KH, ip->KW};
    dnnl_format_tag_t tag = any ? dnnl_format_tag_any
                            : ip->transposed ? (grouped ? dnnl_giohw : dnnl_iohw) : (grouped ? dnnl_goihw : dnnl_oihw);
    return dnnl_memory_desc_create_with_tag(md, grouped ? 5 : 4, grouped ? dims : dims + 1, dnnl_f32, tag);
}

static dnnl_status_t setup(onednn_conv *s, const float *w)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    int64_t xs[4] = {ip->x_sn, ip->x_sc, ip->x_sh, ip->x_sw}, os[4] = {ip->o_sn, ip->o_sc, ip->o_sh, ip->o_sw};
    dnnl_dims_t bias_dims = {ip->O};
    dnnl_memory_desc_t plain_w = NULL;
    dnnl_status_t st = nchw_md(&s->src_md, ip->N, ip->C, ip->H, ip->W, xs);
    if (st == dnnl_success) st = nchw_md(&s->dst_md, ip->N, ip->O, ip->OH, ip->OW, os);
    if (st == dnnl_success) st = dnnl_memory_desc_create_with_tag(&s->bias_md, 1, bias_dims, dnnl_f32, dnnl_a);
    if (st == dnnl_success) st = weights_md(&plain_w, ip, 0);
    if (st != dnnl_success) goto out;
    if (w) { /* a constant: let the primitive pick w's layout, then reorder w into it once */
        dnnl_memory_desc_t any = NULL;
        dnnl_primitive_desc_t pd = NULL;
        st = weights_md(&any, ip, 1);
        if (st == dnnl_success) st = make_pd_with(s, any, &pd);
        if (st == dnnl_success) st = rt_dnnl_pack_weights(pd, plain_w, w, &s->wei_md, &s->packed);
        if (pd) dnnl_primitive_desc_destroy(pd);
        if (any) dnnl_memory_desc_destroy(any);
    } else {
        st = dnnl_memory_desc_clone(&s->wei_md, plain_w);
    }
out:
    if (plain_w) dnnl_memory_desc_destroy(plain_w);
    return st;
}

int rt_p_conv_onednn(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    dnnl_status_t st;
    RT_CHECK(rt_dnnl_engine(&st), "oneDNN: cannot create a CPU engine: %s", dnnl_status2str(st));
    onednn_conv *s = calloc(1, sizeof *s);
    RT_CHECK(s, "out of memory");
    s->op = *op;
    rt_dnnl_prims_init(&s->prims);
    s->res_is_out = op->slot[RT_CONV_RESIDUAL] >= 0 && op->slot[RT_CONV_RESIDUAL] == op->slot[RT_CONV_OUT] &&
                    op->offset[RT_CONV_RESIDUAL] == op->offset[RT_CONV_OUT];
    int caller_threads = rt_dnnl_use_threads();
    st = setup(s, (const float *)arg[RT_CONV_W]);
    size_t scratch;
    if (st == dnnl_success && !rt_dnnl_primitive(&s->prims, make_pd, s, &scratch)) st = dnnl_runtime_error;
    rt_dnnl_restore_threads(caller_threads);
    if (st != dnnl_success) {
        destroy(s);
        const rt_conv_ints *ip = &op->ip.conv;
        return rt_fail(msg, msglen, "oneDNN cannot build this convolution (%lldx%lldx%lldx%lld -> %lld channels, "
                       "kernel %lldx%lld, groups %lld): %s", (long long)ip->N, (long long)ip->C, (long long)ip->H,
                       (long long)ip->W, (long long)ip->O, (long long)ip->KH, (long long)ip->KW, (long long)ip->G,
                       dnnl_status2str(st));
    }
    op->state = s;
    return 0;
}

int rt_conv_onednn(const rt_op *op, char *const *arg)
{
    int caller_threads = rt_dnnl_use_threads();
    onednn_conv *s = op->state;
    size_t scratch;
    dnnl_primitive_t p = rt_dnnl_primitive(&s->prims, make_pd, s, &scratch);
    rt_dnnl_arg args[5] = {
        {DNNL_ARG_SRC, s->src_md, arg[RT_CONV_X]},
        {DNNL_ARG_WEIGHTS, s->wei_md, s->packed ? s->packed : arg[RT_CONV_W]},
        {DNNL_ARG_DST, s->dst_md, arg[RT_CONV_OUT]},
        {DNNL_ARG_BIAS, s->bias_md, arg[RT_CONV_BIAS]},
        {DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, s->dst_md, s->res_is_out ? NULL : arg[RT_CONV_RESIDUAL]},
    };
    int rc = rt_dnnl_execute(p, scratch, args, 5);
    rt_dnnl_restore_threads(caller_threads);
    return rc;
}
