/* Index and data movement: GATHER (torch.gather, index_select, index.Tensor, flip, roll), SCATTER
 * (scatter, scatter_add, scatter_reduce, index_put) and SORT (sort, topk). */
#include <stdlib.h>

#include "rt_kernel.h"


/* Offset (in items) of item r of a space of `nd` dims (`shape`, last fastest) under `stride`. */
static inline int64_t nd_offset(int nd, const int64_t *shape, const int64_t *stride, int64_t r)
{
    int64_t off = 0;
    for (int d = nd - 1; d >= 0; d--) {
        off += r % shape[d] * stride[d];
        r /= shape[d];
    }
    return off;
}

/* ---- GATHER ---- */

#define RT_GATHER_ITEMS(T)                                                                  \
    static int gather_##T(const rt_gather_ints *ip, const char *x8, const int64_t *idx, char *y8) \
    {                                                                                       \
        const T *x = (const T *)x8;                                                         \
        T *y = (T *)y8;                                                                     \
        int nd = (int)ip->ndim, dim = (int)ip->dim;                                         \
        int64_t n = 1, cols = ip->shape[nd - 1], size = ip->size, bad = 0, badv = 0;        \
        for (int d = 0; d < nd; d++) n *= ip->shape[d];                                     \
        int64_t rows = cols ? n / cols : 0;                                                 \
        int64_t xs = nd - 1 == dim ? 0 : ip->x_stride[nd - 1], is = ip->idx_stride[nd - 1]; \
        RT_FOR(n >= RT_PAR_MIN_ELEMS, r, rows, {                                            \
            int64_t xo = 0, io = 0, rem = r;                                                \
            for (int d = nd - 2; d >= 0; d--) {                                             \
                int64_t i = rem % ip->shape[d];                                             \
                rem /= ip->shape[d];                                                        \
                xo += d == dim ? 0 : i * ip->x_stride[d];                                   \
                io += i * ip->idx_stride[d];                                                \
            }                                                                               \
            for (int64_t j = 0; j < cols; j++) {                                            \
                int64_t k = idx[io + j * is];                                               \
                int64_t kk = k < 0 ? k + size : k;                                          \
                if (kk < 0 || kk >= size) {                                                 \
                    bad = 1, badv = k;                                                      \
                    kk = 0;                                                                 \
                }                                                                           \
                y[r * cols + j] = x[xo + j * xs + kk * ip->x_dim_stride];                  \
            }                                                                               \
        });                                                                                 \
        if (bad) {                                                                          \
            rt_set_error_detail(badv);                                                      \
            return RT_ERR_INDEX;                                                            \
        }                                                                                   \
        return RT_OK;                                                                       \
    }
RT_GATHER_ITEMS(uint8_t)
RT_GATHER_ITEMS(uint32_t)
RT_GATHER_ITEMS(uint64_t)

int rt_k_gather(const rt_op *op, char *const *arg)
{
    const rt_gather_ints *ip = &op->ip.gather;
    const char *x = arg[RT_GATHER_X];
    const int64_t *idx = (const int64_t *)arg[RT_GATHER_IDX];
    char *y = arg[RT_GATHER_OUT];
    switch (ip->itemsize) {
    case 1: return gather_uint8_t(ip, x, idx, y);
    case 4: return gather_uint32_t(ip, x, idx, y);
    default: return gather_uint64_t(ip, x, idx, y);
    }
}

int rt_c_gather(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_gather_ints *ip = &op->ip.gather;
    int nd = (int)ip->ndim, dim = (int)ip->dim;
    int64_t isz = ip->itemsize;
    RT_CHECK(nd >= 1 && nd <= RT_MAX_NDIM && dim < nd, "ndim %d / dim %d out of range", nd, dim);
    RT_CHECK(isz == 1 || isz == 4 || isz == 8, "itemsize %lld not 1, 4 or 8", (long long)isz);
    int64_t n = 1, xshape[RT_MAX_NDIM], xstride[RT_MAX_NDIM];
    for (int d = 0; d < nd; d++) {
        n = rt_mul(n, ip->shape[d]);
        xshape[d] = d == dim ? ip->size : ip->shape[d];
        xstride[d] = d == dim ? ip->x_dim_stride : ip->x_stride[d];
    }
    RT_CHECK(n == 0 || ip->size > 0, "gathering %lld items from an empty dim", (long long)n);
    return rt_need(op, avail, RT_GATHER_X, n ? rt_reach(nd, xshape, xstride) : 0, isz, "x", msg, msglen) ||
           rt_need(op, avail, RT_GATHER_IDX, rt_reach(nd, ip->shape, ip->idx_stride), 8, "idx", msg, msglen) ||
           rt_need(op, avail, RT_GATHER_OUT, n, isz, "out", msg, msglen);
}

/* ---- SCATTER ---- */

#define RT_SCATTER_ITEMS(T, NAME)                                                           \
    static int scatter_##NAME(const rt_scatter_ints *ip, const char *x8, const int64_t *idx,  \
                              const char *s8, char *y8)                                     \
    {                                                                                       \
        const T *src = (const T *)s8;                                                       \
        T *y = (T *)y8;                                                                     \
        int nd = (int)ip->ndim, dim = (int)ip->dim;                                         \
        int64_t n = 1, size = ip->size;                                                     \
        for (int d = 0; d < nd; d++) n *= ip->shape[d];                                     \
        if (x8 != y8) memcpy(y8, x8, (size_t)(ip->n * (int64_t)sizeof(T)));                 \
        for (int pass = ip->include_self || ip->reduce == RT_SCATTER_NONE; pass < 2; pass++) \
            for (int64_t r = 0; r < n; r++) {                                               \
                int64_t rem = r, io = 0, so = 0, yo = 0;                                    \
                for (int d = nd - 1; d >= 0; d--) {                                         \
                    int64_t i = rem % ip->shape[d];                                         \
                    rem /= ip->shape[d];                                                    \
                    io += i * ip->idx_stride[d];                                            \
                    so += i * ip->src_stride[d];                                            \
                    yo += d == dim ? 0 : i * ip->out_stride[d];                             \
                }                                                                           \
                int64_t k = idx[io], kk = k < 0 ? k + size : k;                             \
                if (kk < 0 || kk >= size) {                                                 \
                    rt_set_error_detail(k);                                                 \
                    return RT_ERR_INDEX;                                                    \
                }                                                                           \
                T *t = y + yo + kk * ip->out_dim_stride, v = src[so];                       \
                if (pass == 0) { /* include_self false: start from the identity */          \
                    *t = ip->reduce == RT_SCATTER_PROD ? (T)1                                \
                       : ip->reduce == RT_SCATTER_AMAX ? RT_LOWEST_##NAME                    \
                       : ip->reduce == RT_SCATTER_AMIN ? RT_HIGHEST_##NAME : (T)0;           \
                    continue;                                                               \
                }                                                                           \
                switch (ip->reduce) {                                                       \
                case RT_SCATTER_SUM: *t += v; break;                                        \
                case RT_SCATTER_PROD: *t *= v; break;                                       \
                case RT_SCATTER_AMAX: *t = (*t != *t || *t > v) ? *t : v; break;            \
                case RT_SCATTER_AMIN: *t = (*t != *t || *t < v) ? *t : v; break;            \
                default: *t = v;                                                            \
                }                                                                           \
            }                                                                               \
        return RT_OK;                                                                       \
    }
#define RT_LOWEST_f32 (-INFINITY)
#define RT_HIGHEST_f32 INFINITY
#define RT_LOWEST_i64 INT64_MIN
#define RT_HIGHEST_i64 INT64_MAX
#define RT_LOWEST_i32 INT32_MIN
#define RT_HIGHEST_i32 INT32_MAX
#define RT_LOWEST_b8 0
#define RT_HIGHEST_b8 1
RT_SCATTER_ITEMS(float, f32)
RT_SCATTER_ITEMS(int64_t, i64)
RT_SCATTER_ITEMS(uint8_t, b8)
RT_SCATTER_ITEMS(int32_t, i32)

typedef int (*scatter_fn)(const rt_scatter_ints *, const char *, const int64_t *, const char *, char *);
static const scatter_fn scatters[RT_DTYPE_COUNT] = {scatter_f32, scatter_i64, scatter_b8, scatter_i32};

int rt_k_scatter(const rt_op *op, char *const *arg)
{
    const rt_scatter_ints *ip = &op->ip.scatter;
    return scatters[ip->dtype](ip, arg[RT_SCATTER_X], (const int64_t *)arg[RT_SCATTER_IDX], arg[RT_SCATTER_SRC],
                               arg[RT_SCATTER_OUT]);
}

int rt_c_scatter(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_scatter_ints *ip = &op->ip.scatter;
    int nd = (int)ip->ndim, dim = (int)ip->dim;
    int64_t isz = rt_dtype_size[ip->dtype];
    RT_CHECK(nd >= 1 && nd <= RT_MAX_NDIM && dim < nd, "ndim %d / dim %d out of range", nd, dim);
    RT_CHECK(scatters[ip->dtype] != NULL, "no scatter kernel for dtype %d", (int)ip->dtype);
    RT_CHECK(ip->dtype != RT_DTYPE_BOOL || ip->reduce == RT_SCATTER_NONE, "a bool scatter cannot reduce");
    int64_t n = 1, oshape[RT_MAX_NDIM], ostride[RT_MAX_NDIM];
    for (int d = 0; d < nd; d++) {
        n = rt_mul(n, ip->shape[d]);
        oshape[d] = d == dim ? ip->size : ip->shape[d];
        ostride[d] = d == dim ? ip->out_dim_stride : ip->out_stride[d];
    }
    RT_CHECK(n == 0 || ip->size > 0, "scattering into an empty dim");
    RT_CHECK(n == 0 || rt_reach(nd, oshape, ostride) <= ip->n, "scatter targets reach past the %lld items of out",
             (long long)ip->n);
    return rt_need(op, avail, RT_SCATTER_X, ip->n, isz, "x", msg, msglen) ||
           rt_need(op, avail, RT_SCATTER_IDX, rt_reach(nd, ip->shape, ip->idx_stride), 8, "idx", msg, msglen) ||
           rt_need(op, avail, RT_SCATTER_SRC, rt_reach(nd, ip->shape, ip->src_stride), isz, "src", msg, msglen) ||
           rt_need(op, avail, RT_SCATTER_OUT, ip->n, isz, "out", msg, msglen);
}

/* ---- SORT: a stable merge sort of (value, position) pairs per row ---- */

typedef struct {
    float v;
    int64_t i;
} sort_item;

/* a goes before b (ties keep their order: the merge takes from the left run first) */
static inline int sort_before(const sort_item *a, const sort_item *b, int desc)
{
    int an = a->v != a->v, bn = b->v != b->v;
    if (an || bn) return desc ? an && !bn : !an && bn; /* NaN is the largest */
    return desc ? a->v > b->v : a->v < b->v;
}

static void merge_sort(sort_item *a, sort_item *tmp, int64_t n, int desc)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi) tmp[k++] = sort_before(&a[j], &a[i], desc) ? a[j++] : a[i++];
            while (i < mid) tmp[k++] = a[i++];
            while (j < hi) tmp[k++] = a[j++];
        }
        memcpy(a, tmp, (size_t)n * sizeof *a);
    }
}

int rt_k_sort(const rt_op *op, char *const *arg)
{
    const rt_sort_ints *ip = &op->ip.sort;
    const float *x = (const float *)arg[RT_SORT_X];
    char *y = arg[RT_SORT_OUT];
    int nd = (int)ip->ndim, last = nd - 1;
    int64_t n = ip->shape[last], xs = ip->stride[last], k = ip->k, rows = 1;
    for (int d = 0; d < last; d++) rows *= ip->shape[d];
    if (n == 0 || k == 0) return RT_OK;
    int nt = rows * n >= RT_PAR_MIN_ELEMS ? rt_nthreads : 1; /* a pair of row buffers per thread */
    sort_item *buf = malloc((size_t)(2 * n * nt) * sizeof *buf);
    if (!buf) return RT_ERR_NOMEM;
    RT_FOR(nt > 1, r, rows, {
        sort_item *a = buf + 2 * n * rt_thread_id();
        const float *xr = x + nd_offset(last, ip->shape, ip->stride, r);
        for (int64_t i = 0; i < n; i++) a[i] = (sort_item){xr[i * xs], i};
        merge_sort(a, a + n, n, (int)ip->descending);
        for (int64_t i = 0; i < k; i++) {
            if (ip->result)
                ((int64_t *)y)[r * k + i] = a[i].i;
            else
                ((float *)y)[r * k + i] = a[i].v;
        }
    });
    free(buf);
    return RT_OK;
}

int rt_c_sort(const rt_op *op, const int64_t *avail, char *msg, size_t msglen)
{
    const rt_sort_ints *ip = &op->ip.sort;
    int nd = (int)ip->ndim;
    RT_CHECK(nd >= 1 && nd <= RT_MAX_NDIM, "ndim %d out of [1, %d]", nd, RT_MAX_NDIM);
    RT_CHECK(ip->k <= ip->shape[nd - 1] && ip->result <= 1, "k %lld above the row's %lld items or result %lld",
             (long long)ip->k, (long long)ip->shape[nd - 1], (long long)ip->result);
    int64_t rows = 1;
    for (int d = 0; d < nd - 1; d++) rows = rt_mul(rows, ip->shape[d]);
    return rt_need(op, avail, RT_SORT_X, rt_reach(nd, ip->shape, ip->stride), 4, "x", msg, msglen) ||
           rt_need(op, avail, RT_SORT_OUT, rt_mul(rows, ip->k), ip->result ? 8 : 4, "out", msg, msglen);
}
