/* Shared by the kernel files: vectorisation targets, threading, checker helpers. */
#ifndef RT_KERNEL_H
#define RT_KERNEL_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rt_program.h"

#ifdef _OPENMP
#include <omp.h>
static inline int rt_thread_id(void) { return omp_get_thread_num(); }
#else
static inline int rt_thread_id(void) { return 0; }
#endif

/* Hot row loops are compiled for several ISAs and picked at load time (ifunc), so a
 * portable build still runs AVX2/AVX-512 code. The `native` build option already
 * targets the build machine and needs no clones. OpenMP outlines parallel bodies
 * before cloning, so parallel loops call RT_SIMD functions rather than being them. */
#if defined(RT_NATIVE) || !defined(__x86_64__) || !defined(__GNUC__)
#define RT_SIMD
#else
/* ISA levels, not CPU models: "arch=haswell" would dispatch on __builtin_cpu_is and
 * never match e.g. an AMD CPU; x86-64-v3 is AVX2+FMA, x86-64-v4 adds AVX-512. */
#define RT_SIMD __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#endif

/* Threads for rt's own OpenMP loops (OpenBLAS keeps its own count, set alongside). */
extern int rt_nthreads;
/* Below this many elements a parallel region costs more than it saves. */
#define RT_PAR_MIN_ELEMS 32768

/* for (int64_t i = 0; i < n; i++) { body }, on rt_nthreads threads when `par` holds.
 * A parallel region costs ~0.5 us even under if(0), so the serial case skips it. */
#define RT_FOR(par, i, n, ...)                                                          \
    do {                                                                                \
        int64_t rt_n_ = (n);                                                            \
        if ((par) && rt_nthreads > 1) {                                                 \
            _Pragma("omp parallel for num_threads(rt_nthreads) schedule(static)")     \
            for (int64_t i = 0; i < rt_n_; i++) { __VA_ARGS__ }                        \
        } else                                                                          \
            for (int64_t i = 0; i < rt_n_; i++) { __VA_ARGS__ }                        \
    } while (0)

/* matmul.c: what a MATMUL makes once from its constant B (op->state), by b_mode, and its release. */
int rt_p_matmul(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_r_matmul(rt_op *op);
/* matmul.c: the b_mode a prepared MATMUL runs (rt_op_variant). */
int rt_v_matmul(const rt_op *op);

/* matvec_split.c: a constant B ([N, K] when tb, else [K, N]) in the split form, or NULL when out
 * of memory or when B does not fit the form (*unfit: too many weights outside its exponent
 * range); y[0, n) = alpha * x B[:, col0 .. col0 + n) (+ y when beta = 1), x contiguous. */
void *rt_split_b_make(const float *b, int64_t ldb, int tb, int64_t n, int64_t k, int *unfit);
void rt_split_b_free(void *state);
void rt_split_matvec(const void *state, int64_t col0, int64_t n, const float *x, float alpha,
                     float beta, float *y);

#ifdef RT_HAVE_ONEDNN
/* matmul_onednn.c: MATMUL ops whose b_mode picks oneDNN. */
int rt_p_matmul_onednn(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_r_matmul_onednn(void *state);
int rt_matmul_onednn(const rt_op *op, char *const *arg);
void rt_onednn_trim(void);
#endif

/* matvec.c: y = alpha * x B (+ y when beta = 1) for one row x when B has at most
 * RT_MATVEC_SMALL_ELEMS elements (B read [N, K] when tb, else [K, N]). */
void rt_matvec_small(const float *x, int64_t incx, const float *b, int64_t ldb, int tb, int64_t n,
                    int64_t k, float alpha, float beta, float *y);

/* A kernel's error detail (e.g. the bad index), read by the run loop on failure. */
void rt_set_error_detail(int64_t detail);

/* Row kernels shared across files (elementwise.c); y may equal x; a, b: the op's parameters. */
typedef void (*rt_row_fn)(const float *x, float *y, int64_t n, float a, float b);
#define RT_UNARY_DECL(name, expr) void rt_row_##name(const float *x, float *y, int64_t n, float a, float b);
#include "rt_unary.h"
RT_UNARY_LIST(RT_UNARY_DECL)
#undef RT_UNARY_DECL

/* matmul.c: the epilogue activations by RT_ACT_* code (NULL for none), shared with matmul_packed.c. */
extern const rt_row_fn rt_matmul_acts[RT_ACT_COUNT];

/* Item sizes by RT_DTYPE_* code (f32, i64, bool, i32, f64). */
static const int64_t rt_dtype_size[RT_DTYPE_COUNT] = {4, 8, 1, 4, 8};

/* ---- strided iteration spaces (elementwise.c, copy.c) ---- */

#define RT_SPACE_MAX_OPS 3

/* Dims of a strided loop over up to RT_SPACE_MAX_OPS operands, with every dim that
 * continues its predecessor in all operands merged into it and size-1 dims dropped;
 * a scalar becomes one dim of size 1. The last dim is the inner (row) loop. */
typedef struct {
    int ndim, nops;
    int64_t shape[RT_MAX_NDIM], stride[RT_SPACE_MAX_OPS][RT_MAX_NDIM];
} rt_space;

static inline void rt_collapse(rt_space *s, int ndim, const int64_t *shape, int nops,
                               const int64_t *const *strides)
{
    s->ndim = 0;
    s->nops = nops;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int k = s->ndim - 1, merge = k >= 0;
        for (int o = 0; o < nops && merge; o++)
            merge = s->stride[o][k] == strides[o][d] * shape[d];
        if (!merge) k = s->ndim++;
        s->shape[k] = merge ? s->shape[k] * shape[d] : shape[d];
        for (int o = 0; o < nops; o++) s->stride[o][k] = strides[o][d];
    }
    if (s->ndim == 0) {
        s->ndim = 1;
        s->shape[0] = 1;
        for (int o = 0; o < nops; o++) s->stride[o][0] = 0;
    }
}

/* Each operand's offset (in items) to the start of row r, rows counted over all dims but
 * the last (and but `skip`, when in range). */
static inline void rt_row_offsets(const rt_space *s, int64_t r, int skip, int64_t *off)
{
    for (int o = 0; o < s->nops; o++) off[o] = 0;
    for (int d = s->ndim - 2; d >= 0; d--) {
        if (d == skip) continue;
        int64_t i = r % s->shape[d];
        r /= s->shape[d];
        for (int o = 0; o < s->nops; o++) off[o] += i * s->stride[o][d];
    }
}

/* ---- checker helpers: they write msg and return nonzero on failure ----
 * A family's checker runs after program.c's generic one, which has already checked the operand
 * count, slots and offsets, and every int field against its declared range (extents in
 * [0, RT_MAX_EXTENT], flags 0/1, enums in range: rt/abi.py). */

static inline int rt_fail(char *msg, size_t msglen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msglen, fmt, ap);
    va_end(ap);
    return 1;
}

/* Inside a checker (which has `msg` and `msglen`): fail with a message unless cond. */
#define RT_CHECK(cond, ...)                                   \
    do {                                                      \
        if (!(cond)) return rt_fail(msg, msglen, __VA_ARGS__); \
    } while (0)

/* Products and sums of checked extents saturate at RT_HUGE (fails any size check
 * without overflowing when later multiplied by an item size). */
#define RT_HUGE (INT64_MAX / 16)

static inline int64_t rt_mul(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) || r > RT_HUGE ? RT_HUGE : r;
}

static inline int64_t rt_add(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) || r > RT_HUGE ? RT_HUGE : r;
}

/* Elements spanned by a strided view: 1 + sum (shape-1)*stride, or 0 when empty. */
static inline int64_t rt_reach(int ndim, const int64_t *shape, const int64_t *stride)
{
    int64_t r = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) return 0;
        r = rt_add(r, rt_mul(shape[d] - 1, stride[d]));
    }
    return r;
}

/* Do n blocks of `inner` elements, laid out by nested extents and strides in any order, never
 * overlap? (Each is then written once, which also bounds their count by the bytes they cover.)
 * Sufficient test: taken from the smallest stride up, each stride clears everything inside it. */
static inline int rt_disjoint(int n, const int64_t *extent, const int64_t *stride, int64_t inner)
{
    int64_t e[8], s[8];
    int m = 0;
    for (int d = 0; d < n && m < 8; d++) {
        if (extent[d] == 0) return 1;
        if (extent[d] > 1) e[m] = extent[d], s[m++] = stride[d];
    }
    if (inner == 0) return m == 0;
    for (int i = 1; i < m; i++)          /* insertion sort by stride */
        for (int j = i; j > 0 && s[j] < s[j - 1]; j--) {
            int64_t t = s[j]; s[j] = s[j - 1]; s[j - 1] = t;
            t = e[j]; e[j] = e[j - 1]; e[j - 1] = t;
        }
    int64_t span = inner;
    for (int i = 0; i < m; i++) {
        if (s[i] < span) return 0;
        span = rt_add(rt_mul(e[i] - 1, s[i]), span);
    }
    return 1;
}

/* Required operand i must be present, aligned for its item size, and hold `nelem` items. */
static inline int rt_need(const rt_op *op, const int64_t *avail, int i, int64_t nelem,
                          int64_t itemsize, const char *what, char *msg, size_t msglen)
{
    RT_CHECK(avail[i] >= 0, "operand %d (%s) is required but absent", i, what);
    RT_CHECK(op->offset[i] % itemsize == 0, "operand %d (%s) offset %lld is not %lld-byte aligned",
             i, what, (long long)op->offset[i], (long long)itemsize);
    RT_CHECK(nelem >= 0 && nelem <= avail[i] / itemsize,
             "operand %d (%s) needs %lld bytes but its buffer has %lld from offset %lld", i, what,
             (long long)(nelem * itemsize), (long long)avail[i], (long long)op->offset[i]);
    return 0;
}

/* Optional operand: absent is fine, present is checked like a required one. */
static inline int rt_need_opt(const rt_op *op, const int64_t *avail, int i, int64_t nelem,
                              int64_t itemsize, const char *what, char *msg, size_t msglen)
{
    return avail[i] < 0 ? 0 : rt_need(op, avail, i, nelem, itemsize, what, msg, msglen);
}

/* conv.c: what a CONV makes once (a oneDNN primitive, a constant w reordered into its layout) and
 * its release; conv_onednn.c does the work when the build has oneDNN. */
int rt_p_conv(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_r_conv(rt_op *op);
#ifdef RT_HAVE_ONEDNN
int rt_p_conv_onednn(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_r_conv_onednn(void *state);
int rt_conv_onednn(const rt_op *op, char *const *arg);
/* conv_winograd.c: a CONV record with winograd set */
int rt_p_conv_winograd(rt_op *op, char *const *arg, char *msg, size_t msglen);
void rt_r_conv_winograd(void *state);
int rt_conv_winograd(const rt_op *op, char *const *arg);
#endif

#endif
