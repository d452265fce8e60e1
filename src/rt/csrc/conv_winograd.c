/* CONV by Winograd's minimal filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016): each 4x4 block of outputs ("tile") is A^T [(G g G^T) . (B^T d B)] A, d the
 * 6x6 input patch under it, g a 3x3 filter. Per channel pair that is 36 products instead of 144, so a
 * 3x3 convolution becomes three passes:
 *   input:   V[p][t][c] = (B^T d B)[p] for every tile t and channel c      (rt's threads, by tiles)
 *   product: M[p] = V[p] U[p], 36 matrices [tiles, C] x [C, O]            (one batched oneDNN matmul)
 *   output:  out = act(A^T M A + bias + residual), cropped to OH x OW      (rt's threads, by tiles)
 * U = G g G^T is made once when the program is built (in double, then reordered into the matmul's
 * layout). V and M live in the op's planned scratch. Channels run 16 at a time (one AVX-512 vector:
 * the loops over LANES vectorise); x, out and the residual are read through their strides.
 * Measured here against oneDNN's direct convolution (NHWC, 2 threads, Zen 5): 1.5-2.7x at
 * 14x14-56x56 with 64-512 channels; slower below WINO_MIN_CHANNELS channels or WINO_MIN_TILES tiles,
 * where the planner keeps the direct one (dialects/kernel_facts.py). Relative error per layer
 * ~1e-5 (the transforms' constants 4, 5, 8 grow rounding). */
#include <stdlib.h>

#include "onednn_common.h"

#define LANES 16
#define P RT_WINO_POINTS /* 36 */
#define TILE RT_WINO_TILE /* 4 */
#define IN 6             /* input tile side: TILE + 3 - 1 */

typedef struct {
    rt_op op;
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

/* B^T d B: d and v are [6][6] of LANES channels */
RT_INLINE void input_tile(float d[IN][IN][LANES], float v[P][LANES])
{
    float t[IN][IN][LANES];
    for (int j = 0; j < IN; j++)
        for (int l = 0; l < LANES; l++) {
            float d0 = d[0][j][l], d1 = d[1][j][l], d2 = d[2][j][l], d3 = d[3][j][l], d4 = d[4][j][l],
                  d5 = d[5][j][l];
            t[0][j][l] = 4 * d0 - 5 * d2 + d4;
            t[1][j][l] = -4 * d1 - 4 * d2 + d3 + d4;
            t[2][j][l] = 4 * d1 - 4 * d2 - d3 + d4;
            t[3][j][l] = -2 * d1 - d2 + 2 * d3 + d4;
            t[4][j][l] = 2 * d1 - d2 - 2 * d3 + d4;
            t[5][j][l] = 4 * d1 - 5 * d3 + d5;
        }
    for (int i = 0; i < IN; i++)
        for (int l = 0; l < LANES; l++) {
            float d0 = t[i][0][l], d1 = t[i][1][l], d2 = t[i][2][l], d3 = t[i][3][l], d4 = t[i][4][l],
                  d5 = t[i][5][l];
            float *r = v[i * IN];
            r[0 * LANES + l] = 4 * d0 - 5 * d2 + d4;
            r[1 * LANES + l] = -4 * d1 - 4 * d2 + d3 + d4;
            r[2 * LANES + l] = 4 * d1 - 4 * d2 - d3 + d4;
            r[3 * LANES + l] = -2 * d1 - d2 + 2 * d3 + d4;
            r[4 * LANES + l] = 2 * d1 - d2 - 2 * d3 + d4;
            r[5 * LANES + l] = 4 * d1 - 5 * d3 + d5;
        }
}

/* A^T m A: m is [6][6], y [4][4] of LANES channels */
RT_INLINE void output_tile(float m[P][LANES], float y[TILE][TILE][LANES])
{
    float t[TILE][IN][LANES];
    for (int j = 0; j < IN; j++)
        for (int l = 0; l < LANES; l++) {
            float m0 = m[0 * IN + j][l], m1 = m[1 * IN + j][l], m2 = m[2 * IN + j][l], m3 = m[3 * IN + j][l],
                  m4 = m[4 * IN + j][l], m5 = m[5 * IN + j][l];
            t[0][j][l] = m0 + m1 + m2 + m3 + m4;
            t[1][j][l] = m1 - m2 + 2 * m3 - 2 * m4;
            t[2][j][l] = m1 + m2 + 4 * m3 + 4 * m4;
            t[3][j][l] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
        }
    for (int i = 0; i < TILE; i++)
        for (int l = 0; l < LANES; l++) {
            float m0 = t[i][0][l], m1 = t[i][1][l], m2 = t[i][2][l], m3 = t[i][3][l], m4 = t[i][4][l],
                  m5 = t[i][5][l];
            y[i][0][l] = m0 + m1 + m2 + m3 + m4;
            y[i][1][l] = m1 - m2 + 2 * m3 - 2 * m4;
            y[i][2][l] = m1 + m2 + 4 * m3 + 4 * m4;
            y[i][3][l] = m1 - m2 + 8 * m3 - 8 * m4 + m5;
        }
}

/* G g G^T for one 3x3 filter (row-major) into u[36], in double: the constants 1/6, 1/12, 1/24 */
static void filter_tile(const float *g, double u[P])
{
    double t[IN][3];
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < (pass ? IN : 3); k++) {
            /* pass 0: column k of g -> column k of t (G g); pass 1: row k of t -> row k of u ((G g) G^T) */
            double g0 = pass ? t[k][0] : g[0 * 3 + k], g1 = pass ? t[k][1] : g[1 * 3 + k],
                   g2 = pass ? t[k][2] : g[2 * 3 + k];
            double r[IN] = {g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, g0 / 24 + g1 / 12 + g2 / 6,
                            g0 / 24 - g1 / 12 + g2 / 6, g2};
            for (int i = 0; i < IN; i++)
                if (pass)
                    u[k * IN + i] = r[i];
                else
                    t[i][k] = r[i];
        }
}

/* n <= LANES floats; a whole vector as one fixed-size copy (a variable-size one is a libc call) */
RT_INLINE void copy_lanes(float *dst, const float *src, int n)
{
    if (n == LANES)
        memcpy(dst, src, LANES * sizeof(float));
    else
        memcpy(dst, src, n * sizeof(float));
}

/* The tiles' channel block [c0, c0 + n) of the input patch under tile (b, ty, tx), zero off the image. */
RT_INLINE void load_patch(const rt_conv_ints *ip, const float *x, int64_t b, int64_t ty, int64_t tx, int64_t c0,
                              int n, float d[IN][IN][LANES])
{
    for (int i = 0; i < IN; i++)
        for (int j = 0; j < IN; j++) {
            int64_t h = ty * TILE - ip->pt + i, w = tx * TILE - ip->pl + j;
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

/* Tile t's row r of V (its chunk's), every channel. */
RT_SIMD static void input_of_tile(const winograd_conv *s, const float *x, float *V, int64_t t, int64_t r)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    int64_t rows = s->chunk, C = ip->C, b = t / (s->TH * s->TW), ty = t / s->TW % s->TH, tx = t % s->TW;
    for (int64_t c0 = 0; c0 < C; c0 += LANES) {
        int n = C - c0 < LANES ? (int)(C - c0) : LANES;
        float d[IN][IN][LANES], v[P][LANES];
        load_patch(ip, x, b, ty, tx, c0, n, d);
        input_tile(d, v);
        for (int p = 0; p < P; p++) copy_lanes(V + (p * rows + r) * C + c0, v[p], n);
    }
}

/* Tile t's outputs, every channel, from row r of M (its chunk's). */
RT_SIMD static void output_of_tile(const winograd_conv *s, const float *M, const float *bias, const float *res,
                                   float *out, int64_t t, int64_t r)
{
    const rt_conv_ints *ip = &s->op.ip.conv;
    int64_t rows = s->chunk, O = ip->O, b = t / (s->TH * s->TW), ty = t / s->TW % s->TH, tx = t % s->TW;
    rt_row_fn act = acts[ip->act];
    float a = (float)s->op.fp.conv.alpha, bt = (float)s->op.fp.conv.beta;
    for (int64_t o0 = 0; o0 < O; o0 += LANES) {
        int n = O - o0 < LANES ? (int)(O - o0) : LANES;
        float m[P][LANES], y[TILE][TILE][LANES], bv[LANES] = {0};
        if (bias) copy_lanes(bv, bias + o0, n);
        for (int p = 0; p < P; p++) {
            copy_lanes(m[p], M + (p * rows + r) * O + o0, n);
            for (int l = n; l < LANES; l++) m[p][l] = 0.f;
        }
        output_tile(m, y);
        int rows = ip->OH - ty * TILE < TILE ? (int)(ip->OH - ty * TILE) : TILE;
        int cols = ip->OW - tx * TILE < TILE ? (int)(ip->OW - tx * TILE) : TILE;
        int64_t at0 = b * ip->o_sn + ty * TILE * ip->o_sh + tx * TILE * ip->o_sw + o0 * ip->o_sc;
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                float *r = y[i][j];
                const float *rr = res ? res + at0 + i * ip->o_sh + j * ip->o_sw : NULL;
                for (int l = 0; l < LANES; l++) r[l] += bv[l];
                if (rr)
                    for (int l = 0; l < n; l++) r[l] += rr[l * ip->o_sc];
            }
        if (act) act(&y[0][0][0], &y[0][0][0], TILE * TILE * LANES, a, bt); /* once per tile: cells past the edge too */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < cols; j++) {
                float *o = out + at0 + i * ip->o_sh + j * ip->o_sw;
                if (ip->o_sc == 1 && n == LANES)
                    memcpy(o, y[i][j], sizeof y[i][j]);
                else
                    for (int l = 0; l < n; l++) o[l * ip->o_sc] = y[i][j][l];
            }
    }
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
    int64_t C = ip->C, O = ip->O;
    dnnl_dims_t dims = {P, C, O};
    dnnl_memory_desc_t plain = NULL, any = NULL;
    dnnl_primitive_desc_t pd = NULL;
    float *u = malloc(sizeof(float) * P * C * O);
    dnnl_status_t st = u ? dnnl_memory_desc_create_with_tag(&plain, 3, dims, dnnl_f32, dnnl_abc) : dnnl_out_of_memory;
    if (st == dnnl_success) {
        for (int64_t o = 0; o < O; o++)
            for (int64_t c = 0; c < C; c++) {
                double g[P];
                filter_tile(w + (o * C + c) * 9, g);
                for (int p = 0; p < P; p++) u[(p * C + c) * O + o] = (float)g[p];
            }
        st = dnnl_memory_desc_create_with_tag(&any, 3, dims, dnnl_f32, dnnl_format_tag_any);
    }
    if (st == dnnl_success) st = make_pd_with(s, any, &pd);
    if (st == dnnl_success) st = dnnl_memory_desc_clone(&s->u_md, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
    if (st == dnnl_success) st = (s->u_packed = rt_dnnl_alloc(s->u_md)) ? dnnl_success : dnnl_out_of_memory;
    if (st == dnnl_success) st = rt_dnnl_reorder(plain, u, s->u_md, s->u_packed);
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
    s->TH = (ip->OH + TILE - 1) / TILE, s->TW = (ip->OW + TILE - 1) / TILE, s->T = ip->N * s->TH * s->TW;
    s->chunk = rt_conv_winograd_chunk(s->T, ip->C, ip->O);
    dnnl_dims_t vd = {P, s->chunk, ip->C}, md = {P, s->chunk, ip->O};
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
    float *out = (float *)arg[RT_CONV_OUT], *V = (float *)arg[RT_CONV_SCRATCH], *M = V + P * s->chunk * op->ip.conv.C;
    int rc = RT_OK;
    for (int64_t t0 = 0; t0 < s->T && rc == RT_OK; t0 += s->chunk) {
        int64_t n = s->T - t0 < s->chunk ? s->T - t0 : s->chunk;
        RT_FOR(1, r, n, { input_of_tile(s, x, V, t0 + r, r); });
        int caller_threads = rt_dnnl_use_threads();
        size_t scratch;
        dnnl_primitive_t p = rt_dnnl_primitive(&s->prims, make_pd, s, &scratch);
        rt_dnnl_arg args[3] = {
            {DNNL_ARG_SRC, s->v_md, V}, {DNNL_ARG_WEIGHTS, s->u_md, s->u_packed}, {DNNL_ARG_DST, s->m_md, M}};
        rc = rt_dnnl_execute(p, scratch, args, 3);
        rt_dnnl_restore_threads(caller_threads);
        if (rc == RT_OK) RT_FOR(1, r, n, { output_of_tile(s, M, bias, res, out, t0 + r, r); });
    }
    return rc;
}
