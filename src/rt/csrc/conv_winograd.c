/* CONV by Winograd's minimal filtering F(m x m, 3x3), m = 2 or 4 (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016): each m x m block of outputs ("tile") is A^T [(G g G^T) . (B^T d B)] A,
 * d the (m+2) x (m+2) input patch under it, g a 3x3 filter. Per channel pair that is (m+2)^2 products instead
 * of 9 m^2 (F(4x4): 36 for 144, F(2x2): 16 for 36), so a 3x3 convolution becomes three passes:
 *   input:   V[p][t][c] = (B^T d B)[p] for every tile t and channel c      (rt's threads, by tiles)
 *   product: M[p] = V[p] U[p], (m+2)^2 matrices [tiles, C] x [C, O]       (one batched oneDNN matmul)
 *   output:  out = act(A^T M A + bias + residual), cropped to OH x OW      (rt's threads, by tiles)
 * U = G g G^T is made once when the program is built (in double, then reordered into the matmul's
 * layout). V and M live in the op's planned scratch, one chunk of tiles at a time. Channels run 16 at a
 * time (one AVX-512 vector: the loops over LANES vectorise); x, out and the residual are read through
 * their strides. F(4x4) does fewer products but its U is 4x the plain weights (F(2x2): 1.8x): the planner
 * takes F(4x4) when there are tiles enough to amortise reading U, else F(2x2), else the direct kernel
 * (dialects/kernel_facts.py, winograd_tile). Relative error per layer ~1e-5 for F(4x4) (the transforms'
 * 4s, 5s and 8s grow rounding), less for F(2x2). */
#include <stdlib.h>

#include "onednn_common.h"

#define LANES 16
#define MAX_IN 6 /* the input tile's side, m + 2 */
#define MAX_P 36 /* its points */

typedef struct {
    rt_op op;
    int m, points;                      /* output tile side, points ((m + 2)^2) */
    int64_t TH, TW, T, chunk;           /* tiles down, across, in all (N TH TW), per chunk */
    dnnl_memory_desc_t v_md, u_md, m_md; /* u_md: the layout the packed U is in */
    void *u_packed;
    rt_dnnl_prims prims;
} winograd_conv;

/* The epilogue activations by RT_ELTWISE_* code (NULL for none); a, b: clamp's bounds. */
static const rt_row_fn acts[RT_ELTWISE_COUNT] = {
    [RT_ELTWISE_RELU] = rt_row_relu,         [RT_ELTWISE_GELU_TANH] = rt_row_gelu_tanh,
    [RT_ELTWISE_GELU_ERF] = rt_row_gelu_erf, [RT_ELTWISE_SILU] = rt_row_silu,
    [RT_ELTWISE_HARDSWISH] = rt_row_hardswish, [RT_ELTWISE_HARDSIGMOID] = rt_row_hardsigmoid,
    [RT_ELTWISE_CLAMP] = rt_row_clamp,       [RT_ELTWISE_SIGMOID] = rt_row_sigmoid,
    [RT_ELTWISE_TANH] = rt_row_tanh};

/* The 1-D transforms of a line of vectors: x[i * xs], y[i * ys] (floats) hold point i's LANES channels.
 * B^T (input), A^T (output) of F(4, 3) and F(2, 3). */
RT_INLINE void input_line(int m, const float *x, int xs, float *y, int ys)
{
    for (int l = 0; l < LANES; l++) {
        float x0 = x[l], x1 = x[xs + l], x2 = x[2 * xs + l], x3 = x[3 * xs + l];
        if (m == 4) {
            float x4 = x[4 * xs + l], x5 = x[5 * xs + l];
            y[l] = 4 * x0 - 5 * x2 + x4;
            y[ys + l] = -4 * x1 - 4 * x2 + x3 + x4;
            y[2 * ys + l] = 4 * x1 - 4 * x2 - x3 + x4;
            y[3 * ys + l] = -2 * x1 - x2 + 2 * x3 + x4;
            y[4 * ys + l] = 2 * x1 - x2 - 2 * x3 + x4;
            y[5 * ys + l] = 4 * x1 - 5 * x3 + x5;
        } else {
            y[l] = x0 - x2;
            y[ys + l] = x1 + x2;
            y[2 * ys + l] = x2 - x1;
            y[3 * ys + l] = x1 - x3;
        }
    }
}

RT_INLINE void output_line(int m, const float *x, int xs, float *y, int ys)
{
    for (int l = 0; l < LANES; l++) {
        float x0 = x[l], x1 = x[xs + l], x2 = x[2 * xs + l], x3 = x[3 * xs + l];
        if (m == 4) {
            float x4 = x[4 * xs + l], x5 = x[5 * xs + l];
            y[l] = x0 + x1 + x2 + x3 + x4;
            y[ys + l] = x1 - x2 + 2 * x3 - 2 * x4;
            y[2 * ys + l] = x1 + x2 + 4 * x3 + 4 * x4;
            y[3 * ys + l] = x1 - x2 + 8 * x3 - 8 * x4 + x5;
        } else {
            y[l] = x0 + x1 + x2;
            y[ys + l] = x1 - x2 - x3;
        }
    }
}

/* G g for one line of a filter (g0, g1, g2) into r[m + 2], in double: F(4)'s 1/6, 1/12, 1/24 */
static void filter_line(int m, double g0, double g1, double g2, double *r)
{
    if (m == 4) {
        double v[MAX_IN] = {g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, g0 / 24 + g1 / 12 + g2 / 6,
                            g0 / 24 - g1 / 12 + g2 / 6, g2};
        memcpy(r, v, sizeof v);
    } else {
        double v[4] = {g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2};
        memcpy(r, v, sizeof v);
    }
}

/* G g G^T for one 3x3 filter (row-major) into u[in * in] */
static void filter_tile(int m, const float *g, double *u)
{
    int in = m + 2;
    double t[MAX_IN][3], row[MAX_IN];
    for (int k = 0; k < 3; k++) { /* column k of g -> column k of G g */
        filter_line(m, g[k], g[3 + k], g[6 + k], row);
        for (int i = 0; i < in; i++) t[i][k] = row[i];
    }
    for (int i = 0; i < in; i++) /* row i of G g -> row i of (G g) G^T */
        filter_line(m, t[i][0], t[i][1], t[i][2], u + i * in);
}

/* n <= LANES floats; a whole vector as one fixed-size copy (a variable-size one is a libc call) */
RT_INLINE void copy_lanes(float *dst, const float *src, int n)
{
    if (n == LANES)
        memcpy(dst, src, LANES * sizeof(float));
    else
        memcpy(dst, src, n * sizeof(float));
}

/* The channel block [c0, c0 + n) of the input patch under tile (b, ty, tx), zero off the image. */
RT_INLINE void load_patch(const rt_conv_ints *ip, int m, const float *x, int64_t b, int64_t ty, int64_t tx,
                          int64_t c0, int n, float d[MAX_IN][MAX_IN][LANES])
{
    for (int i = 0; i < m + 2; i++)
        for (int j = 0; j < m + 2; j++) {
            int64_t h = ty * m - ip->pt + i, w = tx * m - ip->pl + j;
            float *dst = d[i][j];
            if (h < 0 || h >= ip->H || w < 0 || w >= ip->W) {
                memset(dst, 0, sizeof d[i][j]);
                continue;
            }
            const float *src = x + b * ip->x_sn + h * ip->x_sh + w * ip->x_sw + c0 * ip->x_sc;
            if (ip->x_sc == 1 && n == LANES)
                memcpy(dst, src, sizeof d[i][j]);
            else
                for (int l = 0; l < LANES; l++) dst[l] = l < n ? src[l * ip->x_sc] : 0.f;
        }
}

/* Tile t's row r of V (its chunk's), every channel; m a constant where it is inlined. */
RT_INLINE void input_of_tile(const winograd_conv *s, const int m, const float *x, float *V, int64_t t, int64_t r)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    const int in = m + 2;
    int64_t rows = s->chunk, C = ip->C, b = t / (s->TH * s->TW), ty = t / s->TW % s->TH, tx = t % s->TW;
    for (int64_t c0 = 0; c0 < C; c0 += LANES) {
        int n = C - c0 < LANES ? (int)(C - c0) : LANES;
        float d[MAX_IN][MAX_IN][LANES], cols[MAX_IN][MAX_IN][LANES], v[MAX_P][LANES];
        load_patch(ip, m, x, b, ty, tx, c0, n, d);
        for (int j = 0; j < in; j++) input_line(m, d[0][j], MAX_IN * LANES, cols[0][j], MAX_IN * LANES);
        for (int i = 0; i < in; i++) input_line(m, cols[i][0], LANES, v[i * in], LANES);
        for (int p = 0; p < in * in; p++) copy_lanes(V + (p * rows + r) * C + c0, v[p], n);
    }
}

/* Tile t's outputs, every channel, from row r of M (its chunk's). */
RT_INLINE void output_of_tile(const winograd_conv *s, const int m, const float *M, const float *bias,
                              const float *res, float *out, int64_t t, int64_t r)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    const int in = m + 2;
    int64_t rows = s->chunk, O = ip->O, b = t / (s->TH * s->TW), ty = t / s->TW % s->TH, tx = t % s->TW;
    rt_row_fn act = acts[ip->act];
    float a = (float)s->op.fp.conv.alpha, bt = (float)s->op.fp.conv.beta;
    int hi = ip->OH - ty * m < m ? (int)(ip->OH - ty * m) : m, wi = ip->OW - tx * m < m ? (int)(ip->OW - tx * m) : m;
    int64_t at0 = b * ip->o_sn + ty * m * ip->o_sh + tx * m * ip->o_sw;
    for (int64_t o0 = 0; o0 < O; o0 += LANES) {
        int n = O - o0 < LANES ? (int)(O - o0) : LANES;
        float mv[MAX_P][LANES], cols[MAX_IN][MAX_IN][LANES], y[MAX_IN][MAX_IN][LANES], bv[LANES] = {0};
        if (bias) copy_lanes(bv, bias + o0, n);
        for (int p = 0; p < in * in; p++) {
            copy_lanes(mv[p], M + (p * rows + r) * O + o0, n);
            for (int l = n; l < LANES; l++) mv[p][l] = 0.f;
        }
        for (int j = 0; j < in; j++) output_line(m, mv[j], in * LANES, cols[0][j], MAX_IN * LANES);
        for (int i = 0; i < m; i++) output_line(m, cols[i][0], LANES, y[i][0], LANES);
        for (int i = 0; i < hi; i++) {
            for (int j = 0; j < wi; j++) {
                float *v = y[i][j];
                const float *rr = res ? res + at0 + i * ip->o_sh + j * ip->o_sw + o0 * ip->o_sc : NULL;
                for (int l = 0; l < LANES; l++) v[l] += bv[l];
                if (rr)
                    for (int l = 0; l < n; l++) v[l] += rr[l * ip->o_sc];
            }
            if (act) act(y[i][0], y[i][0], wi * LANES, a, bt); /* a row of the tile per call */
            for (int j = 0; j < wi; j++) {
                float *o = out + at0 + i * ip->o_sh + j * ip->o_sw + o0 * ip->o_sc;
                if (ip->o_sc == 1 && n == LANES)
                    memcpy(o, y[i][j], sizeof y[i][j]);
                else
                    for (int l = 0; l < n; l++) o[l * ip->o_sc] = y[i][j][l];
            }
        }
    }
}

/* Each tile size's own copies, with m a constant for the compiler */
RT_SIMD static void input_of_tile4(const winograd_conv *s, const float *x, float *V, int64_t t, int64_t r)
{
    input_of_tile(s, 4, x, V, t, r);
}
RT_SIMD static void input_of_tile2(const winograd_conv *s, const float *x, float *V, int64_t t, int64_t r)
{
    input_of_tile(s, 2, x, V, t, r);
}
RT_SIMD static void output_of_tile4(const winograd_conv *s, const float *M, const float *bias, const float *res,
                                    float *out, int64_t t, int64_t r)
{
    output_of_tile(s, 4, M, bias, res, out, t, r);
}
RT_SIMD static void output_of_tile2(const winograd_conv *s, const float *M, const float *bias, const float *res,
                                    float *out, int64_t t, int64_t r)
{
    output_of_tile(s, 2, M, bias, res, out, t, r);
}

static dnnl_status_t make_pd_with(const winograd_conv *s, const_dnnl_memory_desc_t u_md, dnnl_primitive_desc_t *pd)
{
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t st = rt_dnnl_attr(&attr, NULL);
    if (st == dnnl_success) st = dnnl_matmul_primitive_desc_create(pd, rt_dnnl_engine(NULL), s->v_md, u_md, NULL, s->m_md, attr);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return st;
}

static dnnl_status_t make_pd(const void *ctx, dnnl_primitive_desc_t *pd)
{
    const winograd_conv *s = ctx;
    return make_pd_with(s, s->u_md, pd);
}

static void destroy(winograd_conv *s)
{
    rt_dnnl_prims_free(&s->prims);
    dnnl_memory_desc_t mds[3] = {s->v_md, s->u_md, s->m_md};
    for (int i = 0; i < 3; i++)
        if (mds[i]) dnnl_memory_desc_destroy(mds[i]);
    free(s->u_packed);
    free(s);
}

void rt_r_conv_winograd(void *state) { destroy((winograd_conv *)state); }

/* U[p][c][o] = (G w[o, c] G^T)[p], then packed into the layout the matmul asked for. */
static dnnl_status_t pack_filters(winograd_conv *s, const float *w)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    int64_t C = ip->C, O = ip->O, P = s->points;
    dnnl_dims_t dims = {P, C, O};
    dnnl_memory_desc_t plain = NULL, any = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float *u = malloc(sizeof(float) * P * C * O);
    dnnl_status_t st = u ? dnnl_memory_desc_create_with_tag(&plain, 3, dims, dnnl_f32, dnnl_abc) : dnnl_out_of_memory;
    if (st == dnnl_success) {
        for (int64_t o = 0; o < O; o++)
            for (int64_t c = 0; c < C; c++) {
                double g[MAX_P];
                filter_tile(s->m, w + (o * C + c) * 9, g);
                for (int p = 0; p < P; p++) u[(p * C + c) * O + o] = (float)g[p];
            }
        st = dnnl_memory_desc_create_with_tag(&any, 3, dims, dnnl_f32, dnnl_format_tag_any);
    }
    if (st == dnnl_success) st = make_pd_with(s, any, &pd);
    if (st == dnnl_success) st = rt_dnnl_pack_weights(pd, plain, u, &s->u_md, &s->u_packed);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (any) dnnl_memory_desc_destroy(any);
    if (plain) dnnl_memory_desc_destroy(plain);
    free(u);
    return st;
}

int rt_p_conv_winograd(rt_op *op, char *const *arg, char *msg, size_t msglen)
{
    dnnl_status_t st;
    RT_CHECK(rt_dnnl_engine(&st), "oneDNN: cannot create a CPU engine: %s", dnnl_status2str(st));
    RT_CHECK(arg[RT_CONV_W], "a Winograd convolution needs constant weights (they are transformed once)");
    winograd_conv *s = calloc(1, sizeof *s);
    RT_CHECK(s, "out of memory");
    s->op = *op;
    rt_dnnl_prims_init(&s->prims);
    const rt_conv_ints *ip = &op->ip.conv;
    s->m = (int)ip->wino_tile, s->points = (s->m + 2) * (s->m + 2);
    s->TH = (ip->OH + s->m - 1) / s->m, s->TW = (ip->OW + s->m - 1) / s->m, s->T = ip->N * s->TH * s->TW;
    s->chunk = rt_conv_winograd_chunk(s->T, ip->C, ip->O, s->m);
    dnnl_dims_t vd = {s->points, s->chunk, ip->C}, md = {s->points, s->chunk, ip->O};
    int caller_threads = rt_dnnl_use_threads();
    st = dnnl_memory_desc_create_with_tag(&s->v_md, 3, vd, dnnl_f32, dnnl_abc);
    if (st == dnnl_success) st = dnnl_memory_desc_create_with_tag(&s->m_md, 3, md, dnnl_f32, dnnl_abc);
    if (st == dnnl_success) st = pack_filters(s, (const float *)arg[RT_CONV_W]);
    size_t scratch;
    if (st == dnnl_success && !rt_dnnl_primitive(&s->prims, make_pd, s, &scratch)) st = dnnl_runtime_error;
    rt_dnnl_restore_threads(caller_threads);
    if (st != dnnl_success) {
        long long tiles = (long long)s->T;
        destroy(s);
        return rt_fail(msg, msglen, "oneDNN cannot build the products of this Winograd convolution (%lld tiles, "
                       "%lld -> %lld channels): %s", tiles, (long long)ip->C, (long long)ip->O, dnnl_status2str(st));
    }
    op->state = s;
    return 0;
}

/* Chunk by chunk: transform its tiles, multiply, transform back. A last, shorter chunk multiplies
 * the whole chunk's rows too (the rows past its tiles hold the previous chunk's; their products go
 * unread): one primitive serves every chunk. */
int rt_conv_winograd(const rt_op *op, char *const *arg)
{
    winograd_conv *s = op->state;
    const float *x = (const float *)arg[RT_CONV_X], *bias = (const float *)arg[RT_CONV_BIAS];
    const float *res = (const float *)arg[RT_CONV_RESIDUAL];
    float *out = (float *)arg[RT_CONV_OUT], *V = (float *)arg[RT_CONV_SCRATCH], *M = V + s->points * s->chunk * op->ip.conv.C;
    int rc = RT_OK;
    for (int64_t t0 = 0; t0 < s->T && rc == RT_OK; t0 += s->chunk) {
        int64_t n = s->T - t0 < s->chunk ? s->T - t0 : s->chunk;
        if (s->m == 4)
            RT_FOR(1, r, n, { input_of_tile4(s, x, V, t0 + r, r); });
        else
            RT_FOR(1, r, n, { input_of_tile2(s, x, V, t0 + r, r); });
        int caller_threads = rt_dnnl_use_threads();
        size_t scratch;
        dnnl_primitive_t p = rt_dnnl_primitive(&s->prims, make_pd, s, &scratch);
        rt_dnnl_arg args[3] = {
            {DNNL_ARG_SRC, s->v_md, V}, {DNNL_ARG_WEIGHTS, s->u_md, s->u_packed}, {DNNL_ARG_DST, s->m_md, M}};
        rc = rt_dnnl_execute(p, scratch, args, 3);
        rt_dnnl_restore_threads(caller_threads);
        if (rc != RT_OK) break;
        if (s->m == 4)
            RT_FOR(1, r, n, { output_of_tile4(s, M, bias, res, out, t0 + r, r); });
        else
            RT_FOR(1, r, n, { output_of_tile2(s, M, bias, res, out, t0 + r, r); });
    }
    return rc;
}
